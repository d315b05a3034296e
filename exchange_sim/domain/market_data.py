"""Market data: a book's public state, and the entries that describe it or its changes.

A snapshot lists the state; an incremental refresh lists only what changed since the state
last sent to that subscriber. Price levels are addressed by position (1 = best), as FIX's
MDEntryPositionNo does: "change position 2 of the bids" rather than "the level at 1530.15".
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from exchange_sim.domain.instruments import Instrument
from exchange_sim.domain.matching import Book

# MDEntryType (269).
BID = "0"
OFFER = "1"
TRADE = "2"
OPEN = "4"
CLOSE = "5"
HIGH = "7"
LOW = "8"
VWAP = "9"
VOLUME = "B"
ENTRY_TYPES = frozenset({BID, OFFER, TRADE, OPEN, CLOSE, HIGH, LOW, VWAP, VOLUME})

# MDUpdateAction (279).
NEW = "0"
CHANGE = "1"
DELETE = "2"

# The deepest book a subscriber can ask for ("full book" included).
MAX_DEPTH = 50

Level = tuple[int, int, int]  # (price ticks, shares, orders)


@dataclass(frozen=True, slots=True)
class QuoteState:
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    last: int
    last_qty: int
    trades: int
    volume: int
    turnover: int  # sum of shares x price ticks
    open: int
    high: int
    low: int
    reference_close: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One MDEntry. `action` is empty in snapshots."""

    symbol: str
    entry_type: str
    price: Decimal | None = None
    size: int | None = None
    action: str = ""
    position: int | None = None
    orders: int | None = None
    time_ns: int = 0
    previous_day: bool = False


def quote_state(book: Book, depth: int) -> QuoteState:
    return QuoteState(
        bids=tuple(book.bids.depth(depth)),
        asks=tuple(book.asks.depth(depth)),
        last=book.last,
        last_qty=book.last_qty,
        trades=book.trades,
        volume=book.volume,
        turnover=book.turnover,
        open=book.open,
        high=book.high,
        low=book.low,
        reference_close=book.reference_close,
    )


def _vwap(instrument: Instrument, state: QuoteState) -> Decimal:
    return (instrument.tick_size * state.turnover / state.volume).quantize(Decimal("0.0001")).normalize() + 0


def snapshot(
    instrument: Instrument, state: QuoteState, wanted: frozenset[str], *, trade_time_ns: int, now_ns: int
) -> list[Entry]:
    """The full state, as MarketDataSnapshotFullRefresh entries."""
    symbol, price = instrument.symbol, instrument.to_price
    out: list[Entry] = []
    for entry_type, levels in ((BID, state.bids), (OFFER, state.asks)):
        if entry_type in wanted:
            out.extend(
                Entry(symbol, entry_type, price(p), q, position=i, orders=n, time_ns=now_ns)
                for i, (p, q, n) in enumerate(levels, start=1)
            )
    if TRADE in wanted and state.last:
        out.append(Entry(symbol, TRADE, price(state.last), state.last_qty, time_ns=trade_time_ns))
    for entry_type, ticks in ((OPEN, state.open), (HIGH, state.high), (LOW, state.low)):
        if entry_type in wanted and ticks:
            out.append(Entry(symbol, entry_type, price(ticks), time_ns=trade_time_ns))
    if VWAP in wanted and state.volume:
        out.append(Entry(symbol, VWAP, _vwap(instrument, state), time_ns=trade_time_ns))
    if VOLUME in wanted:
        out.append(Entry(symbol, VOLUME, size=state.volume, time_ns=trade_time_ns or now_ns))
    if CLOSE in wanted or not out:
        # Before today's close, the closing price is the previous session's (286=4).
        out.append(Entry(symbol, CLOSE, price(state.reference_close), previous_day=True))
    return out


def incremental(
    instrument: Instrument,
    old: QuoteState,
    new: QuoteState,
    wanted: frozenset[str],
    *,
    trade_time_ns: int,
    now_ns: int,
) -> list[Entry]:
    """What changed from `old` to `new`, as MarketDataIncrementalRefresh entries."""
    symbol, price = instrument.symbol, instrument.to_price
    out: list[Entry] = []
    for entry_type, before, after in ((BID, old.bids, new.bids), (OFFER, old.asks, new.asks)):
        if entry_type not in wanted or before == after:
            continue
        for position in range(1, max(len(before), len(after)) + 1):
            was = before[position - 1] if position <= len(before) else None
            now = after[position - 1] if position <= len(after) else None
            if was == now:
                continue
            if now is None:
                assert was is not None
                out.append(Entry(symbol, entry_type, price(was[0]), 0, DELETE, position, time_ns=now_ns))
            else:
                action = NEW if was is None else CHANGE
                out.append(Entry(symbol, entry_type, price(now[0]), now[1], action, position, now[2], now_ns))
    traded = new.trades != old.trades
    if traded and TRADE in wanted:
        out.append(Entry(symbol, TRADE, price(new.last), new.last_qty, NEW, time_ns=trade_time_ns))
    for entry_type, before_ticks, after_ticks in (
        (OPEN, old.open, new.open),
        (HIGH, old.high, new.high),
        (LOW, old.low, new.low),
    ):
        if entry_type in wanted and after_ticks != before_ticks and after_ticks:
            action = NEW if not before_ticks else CHANGE
            out.append(Entry(symbol, entry_type, price(after_ticks), None, action, time_ns=trade_time_ns))
    if VWAP in wanted and traded and new.volume:
        out.append(Entry(symbol, VWAP, _vwap(instrument, new), None, CHANGE, time_ns=trade_time_ns))
    if VOLUME in wanted and new.volume != old.volume:
        out.append(Entry(symbol, VOLUME, None, new.volume, CHANGE, time_ns=trade_time_ns))
    if CLOSE in wanted and new.reference_close != old.reference_close:
        out.append(Entry(symbol, CLOSE, price(new.reference_close), None, CHANGE, previous_day=True))
    return out
