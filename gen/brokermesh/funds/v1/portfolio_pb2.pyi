from brokermesh.type.v1 import decimal_pb2 as _decimal_pb2
from brokermesh.type.v1 import trading_pb2 as _trading_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Holding(_message.Message):
    __slots__ = ("symbol", "quantity", "blocked_quantity", "average_buy_price", "invested_value", "last_price", "current_value", "unrealized_pnl", "realized_pnl", "t1_quantity")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_BUY_PRICE_FIELD_NUMBER: _ClassVar[int]
    INVESTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VALUE_FIELD_NUMBER: _ClassVar[int]
    UNREALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    REALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    T1_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    quantity: int
    blocked_quantity: int
    average_buy_price: _decimal_pb2.Decimal
    invested_value: _decimal_pb2.Decimal
    last_price: _decimal_pb2.Decimal
    current_value: _decimal_pb2.Decimal
    unrealized_pnl: _decimal_pb2.Decimal
    realized_pnl: _decimal_pb2.Decimal
    t1_quantity: int
    def __init__(self, symbol: _Optional[str] = ..., quantity: _Optional[int] = ..., blocked_quantity: _Optional[int] = ..., average_buy_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., invested_value: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., last_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., current_value: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., unrealized_pnl: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., realized_pnl: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., t1_quantity: _Optional[int] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("symbol", "product", "net_quantity", "average_price", "buy_quantity", "sell_quantity", "buy_value", "sell_value", "last_price", "realized_pnl", "unrealized_pnl", "trading_day", "charges", "pnl_after_charges", "settlement_date")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    NET_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    BUY_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    SELL_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    BUY_VALUE_FIELD_NUMBER: _ClassVar[int]
    SELL_VALUE_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    REALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    UNREALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    TRADING_DAY_FIELD_NUMBER: _ClassVar[int]
    CHARGES_FIELD_NUMBER: _ClassVar[int]
    PNL_AFTER_CHARGES_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_DATE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    product: _trading_pb2.Product
    net_quantity: int
    average_price: _decimal_pb2.Decimal
    buy_quantity: int
    sell_quantity: int
    buy_value: _decimal_pb2.Decimal
    sell_value: _decimal_pb2.Decimal
    last_price: _decimal_pb2.Decimal
    realized_pnl: _decimal_pb2.Decimal
    unrealized_pnl: _decimal_pb2.Decimal
    trading_day: str
    charges: _decimal_pb2.Decimal
    pnl_after_charges: _decimal_pb2.Decimal
    settlement_date: str
    def __init__(self, symbol: _Optional[str] = ..., product: _Optional[_Union[_trading_pb2.Product, str]] = ..., net_quantity: _Optional[int] = ..., average_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., buy_quantity: _Optional[int] = ..., sell_quantity: _Optional[int] = ..., buy_value: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., sell_value: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., last_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., realized_pnl: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., unrealized_pnl: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., trading_day: _Optional[str] = ..., charges: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., pnl_after_charges: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., settlement_date: _Optional[str] = ...) -> None: ...

class DailyRealizedPnl(_message.Message):
    __slots__ = ("trading_day", "realized_pnl")
    TRADING_DAY_FIELD_NUMBER: _ClassVar[int]
    REALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    trading_day: str
    realized_pnl: _decimal_pb2.Decimal
    def __init__(self, trading_day: _Optional[str] = ..., realized_pnl: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ...) -> None: ...

class Portfolio(_message.Message):
    __slots__ = ("name", "holdings", "positions", "pnl_basis", "daily_realized_pnl", "pnl_includes_charges")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOLDINGS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    PNL_BASIS_FIELD_NUMBER: _ClassVar[int]
    DAILY_REALIZED_PNL_FIELD_NUMBER: _ClassVar[int]
    PNL_INCLUDES_CHARGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    holdings: _containers.RepeatedCompositeFieldContainer[Holding]
    positions: _containers.RepeatedCompositeFieldContainer[Position]
    pnl_basis: str
    daily_realized_pnl: _containers.RepeatedCompositeFieldContainer[DailyRealizedPnl]
    pnl_includes_charges: bool
    def __init__(self, name: _Optional[str] = ..., holdings: _Optional[_Iterable[_Union[Holding, _Mapping]]] = ..., positions: _Optional[_Iterable[_Union[Position, _Mapping]]] = ..., pnl_basis: _Optional[str] = ..., daily_realized_pnl: _Optional[_Iterable[_Union[DailyRealizedPnl, _Mapping]]] = ..., pnl_includes_charges: _Optional[bool] = ...) -> None: ...

class GetPortfolioRequest(_message.Message):
    __slots__ = ("name", "tag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    tag: str
    def __init__(self, name: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class RunEndOfDayRequest(_message.Message):
    __slots__ = ("trading_day",)
    TRADING_DAY_FIELD_NUMBER: _ClassVar[int]
    trading_day: str
    def __init__(self, trading_day: _Optional[str] = ...) -> None: ...

class RunEndOfDayResponse(_message.Message):
    __slots__ = ("trading_day", "positions_settled", "already_closed")
    TRADING_DAY_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_SETTLED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_CLOSED_FIELD_NUMBER: _ClassVar[int]
    trading_day: str
    positions_settled: int
    already_closed: bool
    def __init__(self, trading_day: _Optional[str] = ..., positions_settled: _Optional[int] = ..., already_closed: _Optional[bool] = ...) -> None: ...

class DepositSharesRequest(_message.Message):
    __slots__ = ("parent", "symbol", "quantity", "average_price", "request_id", "reference")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    symbol: str
    quantity: int
    average_price: _decimal_pb2.Decimal
    request_id: str
    reference: str
    def __init__(self, parent: _Optional[str] = ..., symbol: _Optional[str] = ..., quantity: _Optional[int] = ..., average_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., request_id: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...
