import datetime

from brokermesh.type.v1 import decimal_pb2 as _decimal_pb2
from brokermesh.type.v1 import trading_pb2 as _trading_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderCommand(_message.Message):
    __slots__ = ("command_id", "order_id", "user_id", "order_version", "issue_time", "request_id", "new_order", "cancel_order", "replace_order", "order_status")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_ORDER_FIELD_NUMBER: _ClassVar[int]
    CANCEL_ORDER_FIELD_NUMBER: _ClassVar[int]
    REPLACE_ORDER_FIELD_NUMBER: _ClassVar[int]
    ORDER_STATUS_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    order_id: str
    user_id: str
    order_version: int
    issue_time: _timestamp_pb2.Timestamp
    request_id: str
    new_order: NewOrderCommand
    cancel_order: CancelOrderCommand
    replace_order: ReplaceOrderCommand
    order_status: OrderStatusCommand
    def __init__(self, command_id: _Optional[str] = ..., order_id: _Optional[str] = ..., user_id: _Optional[str] = ..., order_version: _Optional[int] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., new_order: _Optional[_Union[NewOrderCommand, _Mapping]] = ..., cancel_order: _Optional[_Union[CancelOrderCommand, _Mapping]] = ..., replace_order: _Optional[_Union[ReplaceOrderCommand, _Mapping]] = ..., order_status: _Optional[_Union[OrderStatusCommand, _Mapping]] = ...) -> None: ...

class NewOrderCommand(_message.Message):
    __slots__ = ("symbol", "side", "type", "time_in_force", "product", "quantity", "limit_price", "stop_price", "expire_date", "display_quantity")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIME_IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    STOP_PRICE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_DATE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    side: _trading_pb2.Side
    type: _trading_pb2.OrderType
    time_in_force: _trading_pb2.TimeInForce
    product: _trading_pb2.Product
    quantity: int
    limit_price: _decimal_pb2.Decimal
    stop_price: _decimal_pb2.Decimal
    expire_date: str
    display_quantity: int
    def __init__(self, symbol: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ..., type: _Optional[_Union[_trading_pb2.OrderType, str]] = ..., time_in_force: _Optional[_Union[_trading_pb2.TimeInForce, str]] = ..., product: _Optional[_Union[_trading_pb2.Product, str]] = ..., quantity: _Optional[int] = ..., limit_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., stop_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., expire_date: _Optional[str] = ..., display_quantity: _Optional[int] = ...) -> None: ...

class CancelOrderCommand(_message.Message):
    __slots__ = ("symbol", "side", "quantity")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    side: _trading_pb2.Side
    quantity: int
    def __init__(self, symbol: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ..., quantity: _Optional[int] = ...) -> None: ...

class ReplaceOrderCommand(_message.Message):
    __slots__ = ("symbol", "side", "type", "quantity", "limit_price", "stop_price", "time_in_force", "display_quantity")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    STOP_PRICE_FIELD_NUMBER: _ClassVar[int]
    TIME_IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    side: _trading_pb2.Side
    type: _trading_pb2.OrderType
    quantity: int
    limit_price: _decimal_pb2.Decimal
    stop_price: _decimal_pb2.Decimal
    time_in_force: _trading_pb2.TimeInForce
    display_quantity: int
    def __init__(self, symbol: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ..., type: _Optional[_Union[_trading_pb2.OrderType, str]] = ..., quantity: _Optional[int] = ..., limit_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., stop_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., time_in_force: _Optional[_Union[_trading_pb2.TimeInForce, str]] = ..., display_quantity: _Optional[int] = ...) -> None: ...

class OrderStatusCommand(_message.Message):
    __slots__ = ("symbol", "side")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    side: _trading_pb2.Side
    def __init__(self, symbol: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ...) -> None: ...
