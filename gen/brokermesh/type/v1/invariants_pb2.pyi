from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class InvariantViolation(_message.Message):
    __slots__ = ("invariant", "user_id", "detail")
    INVARIANT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    invariant: str
    user_id: str
    detail: str
    def __init__(self, invariant: _Optional[str] = ..., user_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...
