import datetime

from brokermesh.exec.v1 import execution_report_pb2 as _execution_report_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EndOrderRequest(_message.Message):
    __slots__ = ("order_id", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetSessionStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionStatus(_message.Message):
    __slots__ = ("session_id", "logged_on", "next_sender_seq_num", "next_target_seq_num", "last_receive_time", "commands_sent", "reports_published", "active", "reports_pending", "safe_next_target_seq_num", "last_send_time", "venue_incidents")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LOGGED_ON_FIELD_NUMBER: _ClassVar[int]
    NEXT_SENDER_SEQ_NUM_FIELD_NUMBER: _ClassVar[int]
    NEXT_TARGET_SEQ_NUM_FIELD_NUMBER: _ClassVar[int]
    LAST_RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_SENT_FIELD_NUMBER: _ClassVar[int]
    REPORTS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    REPORTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    SAFE_NEXT_TARGET_SEQ_NUM_FIELD_NUMBER: _ClassVar[int]
    LAST_SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    VENUE_INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    logged_on: bool
    next_sender_seq_num: int
    next_target_seq_num: int
    last_receive_time: _timestamp_pb2.Timestamp
    commands_sent: int
    reports_published: int
    active: bool
    reports_pending: int
    safe_next_target_seq_num: int
    last_send_time: _timestamp_pb2.Timestamp
    venue_incidents: int
    def __init__(self, session_id: _Optional[str] = ..., logged_on: _Optional[bool] = ..., next_sender_seq_num: _Optional[int] = ..., next_target_seq_num: _Optional[int] = ..., last_receive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., commands_sent: _Optional[int] = ..., reports_published: _Optional[int] = ..., active: _Optional[bool] = ..., reports_pending: _Optional[int] = ..., safe_next_target_seq_num: _Optional[int] = ..., last_send_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., venue_incidents: _Optional[int] = ...) -> None: ...

class GetExchangeOrderStatusRequest(_message.Message):
    __slots__ = ("order_id", "timeout_ms")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    timeout_ms: int
    def __init__(self, order_id: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ReconcileOrdersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReconcileOrdersResponse(_message.Message):
    __slots__ = ("orders_reported", "reports_published")
    ORDERS_REPORTED_FIELD_NUMBER: _ClassVar[int]
    REPORTS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    orders_reported: int
    reports_published: int
    def __init__(self, orders_reported: _Optional[int] = ..., reports_published: _Optional[int] = ...) -> None: ...

class ListVenueIncidentsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListVenueIncidentsResponse(_message.Message):
    __slots__ = ("incidents", "total")
    INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    incidents: _containers.RepeatedCompositeFieldContainer[VenueIncident]
    total: int
    def __init__(self, incidents: _Optional[_Iterable[_Union[VenueIncident, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class VenueIncident(_message.Message):
    __slots__ = ("id", "venue", "kind", "reason", "text", "raw", "order_id", "record_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    venue: str
    kind: str
    reason: str
    text: str
    raw: str
    order_id: str
    record_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., venue: _Optional[str] = ..., kind: _Optional[str] = ..., reason: _Optional[str] = ..., text: _Optional[str] = ..., raw: _Optional[str] = ..., order_id: _Optional[str] = ..., record_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
