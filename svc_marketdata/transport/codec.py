"""Domain ↔ protobuf for quotes, instruments and watchlists, and the pre-encoded wire form.

Quotes are encoded once per change; messages that carry many of them (`TickBatch`,
`StreamQuotesResponse`, `BatchGetQuotesResponse`) are written by concatenating the encoded
quotes as a repeated length-delimited field, which is exactly protobuf's encoding of
`repeated Quote quotes = 1`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp

from brokermesh.marketdata.v1 import marketdata_pb2, watchlists_pb2
from brokermesh.type.v1 import decimal_pb2
from svc_marketdata.domain.instruments import Instrument
from svc_marketdata.domain.liveness import LIVE, FeedState
from svc_marketdata.domain.quotes import Quote
from svc_marketdata.domain.watchlists import Watchlist
from svc_runtime.decimals import format_decimal, parse_decimal


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


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
    return quote_message(quote).SerializeToString()


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
