from brokermesh.marketdata.v1 import marketdata_pb2 as _marketdata_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TickBatch(_message.Message):
    __slots__ = ("quotes", "feed_status")
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    FEED_STATUS_FIELD_NUMBER: _ClassVar[int]
    quotes: _containers.RepeatedCompositeFieldContainer[_marketdata_pb2.Quote]
    feed_status: _marketdata_pb2.FeedStatus
    def __init__(self, quotes: _Optional[_Iterable[_Union[_marketdata_pb2.Quote, _Mapping]]] = ..., feed_status: _Optional[_Union[_marketdata_pb2.FeedStatus, _Mapping]] = ...) -> None: ...
