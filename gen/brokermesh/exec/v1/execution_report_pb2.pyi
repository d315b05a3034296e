import datetime

from brokermesh.type.v1 import decimal_pb2 as _decimal_pb2
from brokermesh.type.v1 import trading_pb2 as _trading_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXEC_TYPE_UNSPECIFIED: _ClassVar[ExecType]
    EXEC_TYPE_NEW: _ClassVar[ExecType]
    EXEC_TYPE_TRADE: _ClassVar[ExecType]
    EXEC_TYPE_CANCELED: _ClassVar[ExecType]
    EXEC_TYPE_REPLACED: _ClassVar[ExecType]
    EXEC_TYPE_PENDING_CANCEL: _ClassVar[ExecType]
    EXEC_TYPE_PENDING_REPLACE: _ClassVar[ExecType]
    EXEC_TYPE_REJECTED: _ClassVar[ExecType]
    EXEC_TYPE_EXPIRED: _ClassVar[ExecType]
    EXEC_TYPE_ORDER_STATUS: _ClassVar[ExecType]
    EXEC_TYPE_CANCEL_REJECTED: _ClassVar[ExecType]
    EXEC_TYPE_TRIGGERED: _ClassVar[ExecType]
    EXEC_TYPE_NEEDS_ATTENTION: _ClassVar[ExecType]

class OrdStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORD_STATUS_UNSPECIFIED: _ClassVar[OrdStatus]
    ORD_STATUS_NEW: _ClassVar[OrdStatus]
    ORD_STATUS_PARTIALLY_FILLED: _ClassVar[OrdStatus]
    ORD_STATUS_FILLED: _ClassVar[OrdStatus]
    ORD_STATUS_CANCELED: _ClassVar[OrdStatus]
    ORD_STATUS_PENDING_CANCEL: _ClassVar[OrdStatus]
    ORD_STATUS_REJECTED: _ClassVar[OrdStatus]
    ORD_STATUS_EXPIRED: _ClassVar[OrdStatus]
    ORD_STATUS_PENDING_REPLACE: _ClassVar[OrdStatus]
    ORD_STATUS_PENDING_NEW: _ClassVar[OrdStatus]
EXEC_TYPE_UNSPECIFIED: ExecType
EXEC_TYPE_NEW: ExecType
EXEC_TYPE_TRADE: ExecType
EXEC_TYPE_CANCELED: ExecType
EXEC_TYPE_REPLACED: ExecType
EXEC_TYPE_PENDING_CANCEL: ExecType
EXEC_TYPE_PENDING_REPLACE: ExecType
EXEC_TYPE_REJECTED: ExecType
EXEC_TYPE_EXPIRED: ExecType
EXEC_TYPE_ORDER_STATUS: ExecType
EXEC_TYPE_CANCEL_REJECTED: ExecType
EXEC_TYPE_TRIGGERED: ExecType
EXEC_TYPE_NEEDS_ATTENTION: ExecType
ORD_STATUS_UNSPECIFIED: OrdStatus
ORD_STATUS_NEW: OrdStatus
ORD_STATUS_PARTIALLY_FILLED: OrdStatus
ORD_STATUS_FILLED: OrdStatus
ORD_STATUS_CANCELED: OrdStatus
ORD_STATUS_PENDING_CANCEL: OrdStatus
ORD_STATUS_REJECTED: OrdStatus
ORD_STATUS_EXPIRED: OrdStatus
ORD_STATUS_PENDING_REPLACE: OrdStatus
ORD_STATUS_PENDING_NEW: OrdStatus

class ExecutionReport(_message.Message):
    __slots__ = ("exec_id", "order_id", "user_id", "cl_ord_id", "orig_cl_ord_id", "exchange_order_id", "exec_type", "ord_status", "symbol", "side", "order_quantity", "last_quantity", "last_price", "cumulative_quantity", "leaves_quantity", "average_price", "limit_price", "text", "transact_time", "possible_duplicate", "receive_time", "request_id")
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CL_ORD_ID_FIELD_NUMBER: _ClassVar[int]
    ORIG_CL_ORD_ID_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    EXEC_TYPE_FIELD_NUMBER: _ClassVar[int]
    ORD_STATUS_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    ORDER_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LAST_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LEAVES_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TRANSACT_TIME_FIELD_NUMBER: _ClassVar[int]
    POSSIBLE_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    order_id: str
    user_id: str
    cl_ord_id: str
    orig_cl_ord_id: str
    exchange_order_id: str
    exec_type: ExecType
    ord_status: OrdStatus
    symbol: str
    side: _trading_pb2.Side
    order_quantity: int
    last_quantity: int
    last_price: _decimal_pb2.Decimal
    cumulative_quantity: int
    leaves_quantity: int
    average_price: _decimal_pb2.Decimal
    limit_price: _decimal_pb2.Decimal
    text: str
    transact_time: _timestamp_pb2.Timestamp
    possible_duplicate: bool
    receive_time: _timestamp_pb2.Timestamp
    request_id: str
    def __init__(self, exec_id: _Optional[str] = ..., order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., cl_ord_id: _Optional[str] = ..., orig_cl_ord_id: _Optional[str] = ..., exchange_order_id: _Optional[str] = ..., exec_type: _Optional[_Union[ExecType, str]] = ..., ord_status: _Optional[_Union[OrdStatus, str]] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ..., order_quantity: _Optional[int] = ..., last_quantity: _Optional[int] = ..., last_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., cumulative_quantity: _Optional[int] = ..., leaves_quantity: _Optional[int] = ..., average_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., limit_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., text: _Optional[str] = ..., transact_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., possible_duplicate: _Optional[bool] = ..., receive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...
