"""Domain ↔ protobuf for quotes, instruments and watchlists, and the pre-encoded wire form.

Quotes are encoded once per change; messages that carry many of them (`TickBatch`,
`StreamQuotesResponse`, `BatchGetQuotesResponse`) are written by concatenating the encoded
quotes as a repeated length-delimited field, which is exactly protobuf's encoding of
`repeated Quote quotes = 1`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from brokermesh.marketdata.v1 import marketdata_pb2, watchlists_pb2
from brokermesh.type.v1 import decimal_pb2
from svc_marketdata.domain.candles import Candle
from svc_marketdata.domain.depth import Depth
from svc_marketdata.domain.instruments import Instrument
from svc_marketdata.domain.liveness import LIVE, FeedState
from svc_marketdata.domain.quotes import Quote
from svc_marketdata.domain.watchlists import Watchlist
from svc_runtime.decimals import format_decimal, parse_decimal


def _long_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Varints of up to two bytes (below 16,384: keys, lengths, most sizes), looked up; longer
# ones (sequences, nanoseconds) are written 14 bits at a time from a table of the two-byte
# groups that continue, not 7 bits at a time in Python.
_SHORT_VARINTS = [_long_varint(n) for n in range(1 << 14)]
_CONTINUED_PAIRS = [bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(1 << 14)]


def _varint(value: int) -> bytes:
    if 0 <= value < 16_384:
        return _SHORT_VARINTS[value]
    if value < 0:
        return _long_varint(value)
    parts = []
    while value >= 16_384:
        parts.append(_CONTINUED_PAIRS[value & 0x3FFF])
        value >>= 14
    parts.append(_SHORT_VARINTS[value])
    return b"".join(parts)


def repeated_field(field_number: int, items: Iterable[bytes]) -> bytes:
    """Protobuf wire bytes of a repeated length-delimited field holding `items`."""
    key = _varint(field_number << 3 | 2)
    parts = []
    for item in items:
        parts.append(key)
        parts.append(_varint(len(item)))
        parts.append(item)
    return b"".join(parts)


def _dec(value: Decimal | None) -> decimal_pb2.Decimal | None:
    return None if value is None else decimal_pb2.Decimal(value=format_decimal(value))


def quote_message(quote: Quote) -> marketdata_pb2.Quote:
    message = marketdata_pb2.Quote(
        symbol=quote.symbol,
        last_price=_dec(quote.last_price),
        change=_dec(quote.change),
        change_percent=_dec(quote.change_percent),
        bid_price=_dec(quote.bid_price),
        bid_quantity=quote.bid_quantity,
        ask_price=_dec(quote.ask_price),
        ask_quantity=quote.ask_quantity,
        volume=quote.volume,
        open_price=_dec(quote.open_price),
        high_price=_dec(quote.high_price),
        low_price=_dec(quote.low_price),
        previous_close=_dec(quote.previous_close),
        sequence=quote.sequence,
    )
    if quote.exchange_time_ns:
        message.exchange_time.FromNanoseconds(quote.exchange_time_ns)
    return message


def encode_quote(quote: Quote) -> bytes:
    """`quote_message(quote).SerializeToString()`, byte for byte, written directly.

    The tick path encodes every changed quote at every flush; building the protobuf message
    (nine nested Decimals and a Timestamp) cost more than everything else a tick does. The
    fields are written in field-number order, as protobuf does, and the encoded form of a
    decimal field is cached by its text (prices repeat across ticks)."""
    parts = [_symbol_field(quote.symbol)]
    last, previous = quote.last_price, quote.previous_close
    if last is not None:
        parts.append(_decimal_field(2, last))
        if previous is not None:
            parts.append(_change_fields(quote, last, previous))
    if quote.bid_price is not None:
        parts.append(_decimal_field(5, quote.bid_price))
    if quote.bid_quantity:
        parts.append(_int_field(6, quote.bid_quantity))
    if quote.ask_price is not None:
        parts.append(_decimal_field(7, quote.ask_price))
    if quote.ask_quantity:
        parts.append(_int_field(8, quote.ask_quantity))
    if quote.volume:
        parts.append(_int_field(9, quote.volume))
    for number, value in ((10, quote.open_price), (11, quote.high_price), (12, quote.low_price)):
        if value is not None:
            parts.append(_decimal_field(number, value))
    if previous is not None:
        parts.append(_decimal_field(13, previous))
    if quote.exchange_time_ns:
        parts.append(_timestamp_field(14, quote.exchange_time_ns))
    if quote.sequence:
        parts.append(_int_field(15, quote.sequence))
    return b"".join(parts)


# Bounded caches of encoded fields (cleared when full): symbols, decimals by field and text,
# and the change fields by (last, previous close) text.
_ENCODED_CACHE_LIMIT = 100_000
_symbols: dict[str, bytes] = {}
_decimals: dict[tuple[int, str], bytes] = {}
_changes: dict[tuple[str, str], bytes] = {}
_seconds: dict[int, bytes] = {}
# The same, by the identity of the Decimal objects (see `_decimal_field`).
_decimal_objects: dict[int, dict[int, tuple[Decimal, bytes]]] = {
    n: {} for n in (2, 3, 4, 5, 7, 10, 11, 12, 13)
}
_change_objects: dict[tuple[int, int], tuple[Decimal, Decimal, bytes]] = {}


def _remember(cache: dict[Any, bytes], key: Any, value: bytes) -> bytes:
    if len(cache) >= _ENCODED_CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _int_field(number: int, value: int) -> bytes:
    # int64: a negative value is its two's complement, ten bytes long.
    return _varint(number << 3) + _varint(value if value >= 0 else value + (1 << 64))


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _symbol_field(symbol: str) -> bytes:
    encoded = _symbols.get(symbol)
    if encoded is None:
        encoded = _remember(_symbols, symbol, _length_delimited(1, symbol.encode()) if symbol else b"")
    return encoded


def _decimal_field(number: int, value: Decimal) -> bytes:
    # The feed hands out one Decimal object per distinct price text, so the same object
    # comes back tick after tick: found by identity first, without formatting it. The entry
    # holds the object, so its id cannot be reused while the entry is cached.
    by_object = _decimal_objects[number]
    held = by_object.get(id(value))
    if held is not None and held[0] is value:
        return held[1]
    text = format_decimal(value)
    encoded = _decimals.get((number, text))
    if encoded is None:
        # A Decimal message holds its text as field 1 (omitted when empty, as proto3 does).
        inner = _length_delimited(1, text.encode()) if text else b""
        encoded = _remember(_decimals, (number, text), _length_delimited(number, inner))
    if len(by_object) >= _ENCODED_CACHE_LIMIT:
        by_object.clear()
    by_object[id(value)] = (value, encoded)
    return encoded


def _change_fields(quote: Quote, last: Decimal, previous: Decimal) -> bytes:
    held = _change_objects.get((id(last), id(previous)))
    if held is not None and held[0] is last and held[1] is previous:
        return held[2]
    key = (format_decimal(last), format_decimal(previous))
    encoded = _changes.get(key)
    if encoded is None:
        change, percent = quote.change, quote.change_percent
        encoded = b"" if change is None else _decimal_field(3, change)
        if percent is not None:
            encoded += _decimal_field(4, percent)
        encoded = _remember(_changes, key, encoded)
    if len(_change_objects) >= _ENCODED_CACHE_LIMIT:
        _change_objects.clear()
    _change_objects[(id(last), id(previous))] = (last, previous, encoded)
    return encoded


def _timestamp_field(number: int, ns: int) -> bytes:
    seconds, nanos = divmod(ns, 1_000_000_000)
    whole = _seconds.get(seconds)
    if whole is None:
        whole = _remember(_seconds, seconds, _int_field(1, seconds) if seconds else b"")
    inner = whole + _int_field(2, nanos) if nanos else whole
    return _length_delimited(number, inner)


def decode_quote(data: bytes) -> Quote:
    """An encoded quote (e.g. from the quotes KV bucket) back to the domain."""
    message = marketdata_pb2.Quote.FromString(data)

    def dec(name: str) -> Decimal | None:
        if not message.HasField(name):
            return None
        return parse_decimal(getattr(message, name).value, field=f"quote.{name}", max_places=4)

    return Quote(
        symbol=message.symbol,
        previous_close=dec("previous_close"),
        last_price=dec("last_price"),
        bid_price=dec("bid_price"),
        bid_quantity=message.bid_quantity,
        ask_price=dec("ask_price"),
        ask_quantity=message.ask_quantity,
        volume=message.volume,
        open_price=dec("open_price"),
        high_price=dec("high_price"),
        low_price=dec("low_price"),
        exchange_time_ns=message.exchange_time.ToNanoseconds() if message.HasField("exchange_time") else 0,
        sequence=message.sequence,
    )


_FEED_STATES = {
    LIVE: marketdata_pb2.FeedStatus.STATE_LIVE,
}


def encode_feed_status(state: FeedState, *, last_sequence: int, server_time_ns: int) -> bytes:
    message = marketdata_pb2.FeedStatus(
        state=_FEED_STATES.get(state.state, marketdata_pb2.FeedStatus.STATE_STALE),
        last_sequence=last_sequence,
    )
    message.server_time.FromNanoseconds(server_time_ns)
    if not state.live and state.stale_since_ns:
        message.stale_since.FromNanoseconds(state.stale_since_ns)
    return message.SerializeToString()


# Instruments change only with a new master, and a search page repeats the same few: their
# messages are built once (a message put into a response is copied there, so sharing is safe).
@functools.lru_cache(maxsize=8192)
def instrument_message(instrument: Instrument) -> marketdata_pb2.Instrument:
    return marketdata_pb2.Instrument(
        name=f"instruments/{instrument.symbol}",
        symbol=instrument.symbol,
        company_name=instrument.company_name,
        sector=instrument.sector,
        tick_size=_dec(instrument.tick_size),
        lot_size=instrument.lot_size,
        previous_close=_dec(instrument.previous_close),
        isin=instrument.isin,
    )


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def watchlist_message(user_id: str, watchlist: Watchlist) -> watchlists_pb2.Watchlist:
    return watchlists_pb2.Watchlist(
        name=f"users/{user_id}/watchlists/{watchlist.watchlist_id}",
        watchlist_id=watchlist.watchlist_id,
        display_name=watchlist.display_name,
        symbols=watchlist.symbols,
        create_time=_timestamp(watchlist.create_time),
        update_time=_timestamp(watchlist.update_time),
    )


# CandleInterval values ↔ the interval names of `domain.candles.INTERVALS`.
INTERVAL_NAMES: dict[int, str] = {
    marketdata_pb2.CANDLE_INTERVAL_ONE_MINUTE: "1m",
    marketdata_pb2.CANDLE_INTERVAL_FIVE_MINUTES: "5m",
    marketdata_pb2.CANDLE_INTERVAL_FIFTEEN_MINUTES: "15m",
    marketdata_pb2.CANDLE_INTERVAL_ONE_HOUR: "1h",
    marketdata_pb2.CANDLE_INTERVAL_ONE_DAY: "1d",
}
INTERVAL_VALUES = {name: value for value, name in INTERVAL_NAMES.items()}


def _at_second(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def candle_message(candle: Candle) -> marketdata_pb2.Candle:
    return marketdata_pb2.Candle(
        symbol=candle.symbol,
        interval=INTERVAL_VALUES[candle.interval],  # type: ignore[arg-type]
        start_time=_at_second(candle.start),
        end_time=_at_second(candle.end),
        open=_dec(candle.open),
        high=_dec(candle.high),
        low=_dec(candle.low),
        close=_dec(candle.close),
        volume=candle.volume,
    )


def depth_message(depth: Depth) -> marketdata_pb2.MarketDepth:
    message = marketdata_pb2.MarketDepth(
        name=f"instruments/{depth.symbol}/depth",
        symbol=depth.symbol,
        bids=[marketdata_pb2.PriceLevel(price=_dec(p), quantity=q) for p, q in depth.bids],
        asks=[marketdata_pb2.PriceLevel(price=_dec(p), quantity=q) for p, q in depth.asks],
        sequence=depth.sequence,
    )
    if depth.exchange_time_ns:
        message.exchange_time.FromNanoseconds(depth.exchange_time_ns)
    return message
