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

class CandleInterval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANDLE_INTERVAL_UNSPECIFIED: _ClassVar[CandleInterval]
    CANDLE_INTERVAL_ONE_MINUTE: _ClassVar[CandleInterval]
    CANDLE_INTERVAL_FIVE_MINUTES: _ClassVar[CandleInterval]
    CANDLE_INTERVAL_FIFTEEN_MINUTES: _ClassVar[CandleInterval]
    CANDLE_INTERVAL_ONE_HOUR: _ClassVar[CandleInterval]
    CANDLE_INTERVAL_ONE_DAY: _ClassVar[CandleInterval]
CANDLE_INTERVAL_UNSPECIFIED: CandleInterval
CANDLE_INTERVAL_ONE_MINUTE: CandleInterval
CANDLE_INTERVAL_FIVE_MINUTES: CandleInterval
CANDLE_INTERVAL_FIFTEEN_MINUTES: CandleInterval
CANDLE_INTERVAL_ONE_HOUR: CandleInterval
CANDLE_INTERVAL_ONE_DAY: CandleInterval

class Instrument(_message.Message):
    __slots__ = ("name", "symbol", "company_name", "sector", "tick_size", "lot_size", "previous_close", "isin")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    COMPANY_NAME_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    TICK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOT_SIZE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CLOSE_FIELD_NUMBER: _ClassVar[int]
    ISIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    symbol: str
    company_name: str
    sector: str
    tick_size: _decimal_pb2.Decimal
    lot_size: int
    previous_close: _decimal_pb2.Decimal
    isin: str
    def __init__(self, name: _Optional[str] = ..., symbol: _Optional[str] = ..., company_name: _Optional[str] = ..., sector: _Optional[str] = ..., tick_size: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., lot_size: _Optional[int] = ..., previous_close: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., isin: _Optional[str] = ...) -> None: ...

class Quote(_message.Message):
    __slots__ = ("symbol", "last_price", "change", "change_percent", "bid_price", "bid_quantity", "ask_price", "ask_quantity", "volume", "open_price", "high_price", "low_price", "previous_close", "exchange_time", "sequence")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    BID_PRICE_FIELD_NUMBER: _ClassVar[int]
    BID_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ASK_PRICE_FIELD_NUMBER: _ClassVar[int]
    ASK_QUANTITY_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    OPEN_PRICE_FIELD_NUMBER: _ClassVar[int]
    HIGH_PRICE_FIELD_NUMBER: _ClassVar[int]
    LOW_PRICE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CLOSE_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    last_price: _decimal_pb2.Decimal
    change: _decimal_pb2.Decimal
    change_percent: _decimal_pb2.Decimal
    bid_price: _decimal_pb2.Decimal
    bid_quantity: int
    ask_price: _decimal_pb2.Decimal
    ask_quantity: int
    volume: int
    open_price: _decimal_pb2.Decimal
    high_price: _decimal_pb2.Decimal
    low_price: _decimal_pb2.Decimal
    previous_close: _decimal_pb2.Decimal
    exchange_time: _timestamp_pb2.Timestamp
    sequence: int
    def __init__(self, symbol: _Optional[str] = ..., last_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., change: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., change_percent: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., bid_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., bid_quantity: _Optional[int] = ..., ask_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., ask_quantity: _Optional[int] = ..., volume: _Optional[int] = ..., open_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., high_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., low_price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., previous_close: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., exchange_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class FeedStatus(_message.Message):
    __slots__ = ("state", "stale_since", "server_time", "last_sequence", "symbols")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[FeedStatus.State]
        STATE_LIVE: _ClassVar[FeedStatus.State]
        STATE_STALE: _ClassVar[FeedStatus.State]
    STATE_UNSPECIFIED: FeedStatus.State
    STATE_LIVE: FeedStatus.State
    STATE_STALE: FeedStatus.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    STALE_SINCE_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    state: FeedStatus.State
    stale_since: _timestamp_pb2.Timestamp
    server_time: _timestamp_pb2.Timestamp
    last_sequence: int
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, state: _Optional[_Union[FeedStatus.State, str]] = ..., stale_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sequence: _Optional[int] = ..., symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetQuotesRequest(_message.Message):
    __slots__ = ("symbols",)
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetQuotesResponse(_message.Message):
    __slots__ = ("quotes", "unknown_symbols")
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    quotes: _containers.RepeatedCompositeFieldContainer[Quote]
    unknown_symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, quotes: _Optional[_Iterable[_Union[Quote, _Mapping]]] = ..., unknown_symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamQuotesRequest(_message.Message):
    __slots__ = ("symbols", "max_updates_per_second", "watchlist", "portfolio")
    SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_UPDATES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    PORTFOLIO_FIELD_NUMBER: _ClassVar[int]
    symbols: _containers.RepeatedScalarFieldContainer[str]
    max_updates_per_second: int
    watchlist: str
    portfolio: str
    def __init__(self, symbols: _Optional[_Iterable[str]] = ..., max_updates_per_second: _Optional[int] = ..., watchlist: _Optional[str] = ..., portfolio: _Optional[str] = ...) -> None: ...

class StreamQuotesResponse(_message.Message):
    __slots__ = ("quotes", "feed_status")
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    FEED_STATUS_FIELD_NUMBER: _ClassVar[int]
    quotes: _containers.RepeatedCompositeFieldContainer[Quote]
    feed_status: FeedStatus
    def __init__(self, quotes: _Optional[_Iterable[_Union[Quote, _Mapping]]] = ..., feed_status: _Optional[_Union[FeedStatus, _Mapping]] = ...) -> None: ...

class GetInstrumentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SearchInstrumentsRequest(_message.Message):
    __slots__ = ("query", "page_size", "page_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    page_size: int
    page_token: str
    def __init__(self, query: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchInstrumentsResponse(_message.Message):
    __slots__ = ("instruments", "next_page_token")
    INSTRUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    instruments: _containers.RepeatedCompositeFieldContainer[Instrument]
    next_page_token: str
    def __init__(self, instruments: _Optional[_Iterable[_Union[Instrument, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Candle(_message.Message):
    __slots__ = ("symbol", "interval", "start_time", "end_time", "open", "high", "low", "close", "volume")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    interval: CandleInterval
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    open: _decimal_pb2.Decimal
    high: _decimal_pb2.Decimal
    low: _decimal_pb2.Decimal
    close: _decimal_pb2.Decimal
    volume: int
    def __init__(self, symbol: _Optional[str] = ..., interval: _Optional[_Union[CandleInterval, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., open: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., high: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., low: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., close: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., volume: _Optional[int] = ...) -> None: ...

class ListCandlesRequest(_message.Message):
    __slots__ = ("parent", "interval", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    interval: CandleInterval
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., interval: _Optional[_Union[CandleInterval, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCandlesResponse(_message.Message):
    __slots__ = ("candles", "next_page_token")
    CANDLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    candles: _containers.RepeatedCompositeFieldContainer[Candle]
    next_page_token: str
    def __init__(self, candles: _Optional[_Iterable[_Union[Candle, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StreamCandlesRequest(_message.Message):
    __slots__ = ("parent", "interval")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    parent: str
    interval: CandleInterval
    def __init__(self, parent: _Optional[str] = ..., interval: _Optional[_Union[CandleInterval, str]] = ...) -> None: ...

class StreamCandlesResponse(_message.Message):
    __slots__ = ("candles", "feed_status")
    CANDLES_FIELD_NUMBER: _ClassVar[int]
    FEED_STATUS_FIELD_NUMBER: _ClassVar[int]
    candles: _containers.RepeatedCompositeFieldContainer[Candle]
    feed_status: FeedStatus
    def __init__(self, candles: _Optional[_Iterable[_Union[Candle, _Mapping]]] = ..., feed_status: _Optional[_Union[FeedStatus, _Mapping]] = ...) -> None: ...

class PriceLevel(_message.Message):
    __slots__ = ("price", "quantity")
    PRICE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    price: _decimal_pb2.Decimal
    quantity: int
    def __init__(self, price: _Optional[_Union[_decimal_pb2.Decimal, _Mapping]] = ..., quantity: _Optional[int] = ...) -> None: ...

class MarketDepth(_message.Message):
    __slots__ = ("name", "symbol", "bids", "asks", "exchange_time", "sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BIDS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    symbol: str
    bids: _containers.RepeatedCompositeFieldContainer[PriceLevel]
    asks: _containers.RepeatedCompositeFieldContainer[PriceLevel]
    exchange_time: _timestamp_pb2.Timestamp
    sequence: int
    def __init__(self, name: _Optional[str] = ..., symbol: _Optional[str] = ..., bids: _Optional[_Iterable[_Union[PriceLevel, _Mapping]]] = ..., asks: _Optional[_Iterable[_Union[PriceLevel, _Mapping]]] = ..., exchange_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class GetMarketDepthRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StreamMarketDepthRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StreamMarketDepthResponse(_message.Message):
    __slots__ = ("depth", "feed_status")
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    FEED_STATUS_FIELD_NUMBER: _ClassVar[int]
    depth: MarketDepth
    feed_status: FeedStatus
    def __init__(self, depth: _Optional[_Union[MarketDepth, _Mapping]] = ..., feed_status: _Optional[_Union[FeedStatus, _Mapping]] = ...) -> None: ...
