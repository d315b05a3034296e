import datetime

from brokermesh.type.v1 import decimal_pb2 as _decimal_pb2
from brokermesh.type.v1 import trading_pb2 as _trading_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MarketPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MARKET_PHASE_UNSPECIFIED: _ClassVar[MarketPhase]
    MARKET_PHASE_PRE_OPEN: _ClassVar[MarketPhase]
    MARKET_PHASE_OPEN: _ClassVar[MarketPhase]
    MARKET_PHASE_CLOSED: _ClassVar[MarketPhase]
MARKET_PHASE_UNSPECIFIED: MarketPhase
MARKET_PHASE_PRE_OPEN: MarketPhase
MARKET_PHASE_OPEN: MarketPhase
MARKET_PHASE_CLOSED: MarketPhase

class ExchangeOrder(_message.Message):
    __slots__ = ("exchange_order_id", "cl_ord_id", "symbol", "side", "quantity", "filled_quantity", "leaves_quantity", "ord_status", "average_price", "sender_comp_id", "order_type", "price", "time_in_force", "account", "text", "stop_price")
    EXCHANGE_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CL_ORD_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    FILLED_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    LEAVES_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ORD_STATUS_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    SENDER_COMP_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    TIME_IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STOP_PRICE_FIELD_NUMBER: _ClassVar[int]
    exchange_order_id: str
    cl_ord_id: str
    symbol: str
    side: _trading_pb2.Side
    quantity: int
    filled_quantity: int
    leaves_quantity: int
    ord_status: str
    average_price: _decimal_pb2.Decimal
    sender_comp_id: str
    order_type: _trading_pb2.OrderType
    price: _decimal_pb2.Decimal
    time_in_force: _trading_pb2.TimeInForce
    account: str
    text: str
    stop_price: _decimal_pb2.Decimal
    def __init__(self, exchange_order_id: _Optional[str] = ..., cl_ord_id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ..., quantity: _Optional[int] = ..., filled_quantity: _Optional[int] = ..., leaves_quantity: _Optional[int] = ..., ord_status: _Optional[str] = ..., average_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., sender_comp_id: _Optional[str] = ..., order_type: _Optional[_Union[_trading_pb2.OrderType, str]] = ..., price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., time_in_force: _Optional[_Union[_trading_pb2.TimeInForce, str]] = ..., account: _Optional[str] = ..., text: _Optional[str] = ..., stop_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ...) -> None: ...

class ListExchangeOrdersRequest(_message.Message):
    __slots__ = ("sender_comp_id",)
    SENDER_COMP_ID_FIELD_NUMBER: _ClassVar[int]
    sender_comp_id: str
    def __init__(self, sender_comp_id: _Optional[str] = ...) -> None: ...

class ListExchangeOrdersResponse(_message.Message):
    __slots__ = ("orders", "answers_since")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_SINCE_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[ExchangeOrder]
    answers_since: _timestamp_pb2.Timestamp
    def __init__(self, orders: _Optional[_Iterable[_Union[ExchangeOrder, _Mapping]]] = ..., answers_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetOrderBookRequest(_message.Message):
    __slots__ = ("symbol", "depth")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    depth: int
    def __init__(self, symbol: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class PriceLevel(_message.Message):
    __slots__ = ("price", "quantity", "order_count")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ORDER_COUNT_FIELD_NUMBER: _ClassVar[int]
    price: _decimal_pb2.Decimal
    quantity: int
    order_count: int
    def __init__(self, price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., quantity: _Optional[int] = ..., order_count: _Optional[int] = ...) -> None: ...

class OrderBook(_message.Message):
    __slots__ = ("symbol", "bids", "asks", "last_price")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    bids: _containers.RepeatedCompositeFieldContainer[PriceLevel]
    asks: _containers.RepeatedCompositeFieldContainer[PriceLevel]
    last_price: _decimal_pb2.Decimal
    def __init__(self, symbol: _Optional[str] = ..., bids: _Optional[_Iterable[_Union[PriceLevel, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[PriceLevel, _Mapping]]] = ..., last_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ...) -> None: ...

class HaltTradingRequest(_message.Message):
    __slots__ = ("symbol", "reason")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    reason: str
    def __init__(self, symbol: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeTradingRequest(_message.Message):
    __slots__ = ("symbol",)
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    def __init__(self, symbol: _Optional[str] = ...) -> None: ...

class TradingState(_message.Message):
    __slots__ = ("market_halted", "halted_symbols", "session_open", "market_halt_reason", "circuit_breaker_level", "index_value", "index_change_percent", "halt_end_time", "phase", "trading_date", "market_time")
    MARKET_HALTED_FIELD_NUMBER: _ClassVar[int]
    HALTED_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    SESSION_OPEN_FIELD_NUMBER: _ClassVar[int]
    MARKET_HALT_REASON_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_BREAKER_LEVEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_VALUE_FIELD_NUMBER: _ClassVar[int]
    INDEX_CHANGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    HALT_END_TIME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TRADING_DATE_FIELD_NUMBER: _ClassVar[int]
    MARKET_TIME_FIELD_NUMBER: _ClassVar[int]
    market_halted: bool
    halted_symbols: _containers.RepeatedScalarFieldContainer[str]
    session_open: bool
    market_halt_reason: str
    circuit_breaker_level: int
    index_value: _decimal_pb2.Decimal
    index_change_percent: _decimal_pb2.Decimal
    halt_end_time: _timestamp_pb2.Timestamp
    phase: MarketPhase
    trading_date: str
    market_time: _timestamp_pb2.Timestamp
    def __init__(self, market_halted: _Optional[bool] = ..., halted_symbols: _Optional[_Iterable[str]] = ..., session_open: _Optional[bool] = ..., market_halt_reason: _Optional[str] = ..., circuit_breaker_level: _Optional[int] = ..., index_value: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., index_change_percent: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., halt_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., phase: _Optional[_Union[MarketPhase, str]] = ..., trading_date: _Optional[str] = ..., market_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTradingStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("participant", "symbol", "side", "quantity", "order_type", "price", "time_in_force")
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ORDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    TIME_IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    participant: str
    symbol: str
    side: _trading_pb2.Side
    quantity: int
    order_type: _trading_pb2.OrderType
    price: _decimal_pb2.Decimal
    time_in_force: _trading_pb2.TimeInForce
    def __init__(self, participant: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[_trading_pb2.Side, str]] = ..., quantity: _Optional[int] = ..., order_type: _Optional[_Union[_trading_pb2.OrderType, str]] = ..., price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., time_in_force: _Optional[_Union[_trading_pb2.TimeInForce, str]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[FixSession]
    def __init__(self, sessions: _Optional[_Iterable[_Union[FixSession, _Mapping]]] = ...) -> None: ...

class FixSession(_message.Message):
    __slots__ = ("session_id", "counterparty", "role", "logged_on", "next_sender_seq_num", "next_target_seq_num")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LOGGED_ON_FIELD_NUMBER: _ClassVar[int]
    NEXT_SENDER_SEQ_NUM_FIELD_NUMBER: _ClassVar[int]
    NEXT_TARGET_SEQ_NUM_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    counterparty: str
    role: str
    logged_on: bool
    next_sender_seq_num: int
    next_target_seq_num: int
    def __init__(self, session_id: _Optional[str] = ..., counterparty: _Optional[str] = ..., role: _Optional[str] = ..., logged_on: _Optional[bool] = ..., next_sender_seq_num: _Optional[int] = ..., next_target_seq_num: _Optional[int] = ...) -> None: ...

class SetScenarioRequest(_message.Message):
    __slots__ = ("reject_next_orders", "reject_text", "delay_reports_ms", "drop_session", "pause_market_makers", "shock_market_percent")
    REJECT_NEXT_ORDERS_FIELD_NUMBER: _ClassVar[int]
    REJECT_TEXT_FIELD_NUMBER: _ClassVar[int]
    DELAY_REPORTS_MS_FIELD_NUMBER: _ClassVar[int]
    DROP_SESSION_FIELD_NUMBER: _ClassVar[int]
    PAUSE_MARKET_MAKERS_FIELD_NUMBER: _ClassVar[int]
    SHOCK_MARKET_PERCENT_FIELD_NUMBER: _ClassVar[int]
    reject_next_orders: int
    reject_text: str
    delay_reports_ms: int
    drop_session: str
    pause_market_makers: bool
    shock_market_percent: _decimal_pb2.Decimal
    def __init__(self, reject_next_orders: _Optional[int] = ..., reject_text: _Optional[str] = ..., delay_reports_ms: _Optional[int] = ..., drop_session: _Optional[str] = ..., pause_market_makers: _Optional[bool] = ..., shock_market_percent: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ...) -> None: ...

class SetScenarioResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
