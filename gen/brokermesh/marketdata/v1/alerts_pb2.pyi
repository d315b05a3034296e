import datetime

from brokermesh.type.v1 import decimal_pb2 as _decimal_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlertCondition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_CONDITION_UNSPECIFIED: _ClassVar[AlertCondition]
    ALERT_CONDITION_PRICE_ABOVE: _ClassVar[AlertCondition]
    ALERT_CONDITION_PRICE_BELOW: _ClassVar[AlertCondition]
    ALERT_CONDITION_CHANGE_PERCENT_ABOVE: _ClassVar[AlertCondition]
    ALERT_CONDITION_CHANGE_PERCENT_BELOW: _ClassVar[AlertCondition]

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATE_UNSPECIFIED: _ClassVar[AlertState]
    ALERT_STATE_ACTIVE: _ClassVar[AlertState]
    ALERT_STATE_FIRED: _ClassVar[AlertState]
ALERT_CONDITION_UNSPECIFIED: AlertCondition
ALERT_CONDITION_PRICE_ABOVE: AlertCondition
ALERT_CONDITION_PRICE_BELOW: AlertCondition
ALERT_CONDITION_CHANGE_PERCENT_ABOVE: AlertCondition
ALERT_CONDITION_CHANGE_PERCENT_BELOW: AlertCondition
ALERT_STATE_UNSPECIFIED: AlertState
ALERT_STATE_ACTIVE: AlertState
ALERT_STATE_FIRED: AlertState

class Alert(_message.Message):
    __slots__ = ("name", "alert_id", "symbol", "condition", "threshold", "state", "create_time", "fire_time", "fired_price", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    FIRED_PRICE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    alert_id: str
    symbol: str
    condition: AlertCondition
    threshold: _decimal_pb2.Decimal
    state: AlertState
    create_time: _timestamp_pb2.Timestamp
    fire_time: _timestamp_pb2.Timestamp
    fired_price: _decimal_pb2.Decimal
    note: str
    def __init__(self, name: _Optional[str] = ..., alert_id: _Optional[str] = ..., symbol: _Optional[str] = ..., condition: _Optional[_Union[AlertCondition, str]] = ..., threshold: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., state: _Optional[_Union[AlertState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fired_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class AlertEvent(_message.Message):
    __slots__ = ("event_id", "alert")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    alert: Alert
    def __init__(self, event_id: _Optional[str] = ..., alert: _Optional[_Union[Alert, _Mapping]] = ...) -> None: ...

class CreateAlertRequest(_message.Message):
    __slots__ = ("parent", "alert", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    alert: Alert
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., alert: _Optional[_Union[Alert, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("parent",)
    PARENT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    def __init__(self, parent: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

class DeleteAlertRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteAlertResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamAlertEventsRequest(_message.Message):
    __slots__ = ("parent", "after_event_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    after_event_id: str
    def __init__(self, parent: _Optional[str] = ..., after_event_id: _Optional[str] = ...) -> None: ...
