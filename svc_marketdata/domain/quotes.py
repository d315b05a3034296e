"""The last-value quote cache: one `Quote` per symbol, changed by market-data entries.

Entries use FIX 4.4's MDEntryType and MDUpdateAction values, already parsed to exact
decimals and integers by the FIX adapter. Applying an update tells whether the quote
changed; only then does its sequence advance and a tick go out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

from svc_runtime.decimals import PAISA

# MDEntryType (269).
BID = "0"
OFFER = "1"
TRADE = "2"
OPENING_PRICE = "4"
CLOSING_PRICE = "5"
SESSION_HIGH = "7"
SESSION_LOW = "8"
TRADE_VOLUME = "B"
# MDUpdateAction (279).
NEW = "0"
CHANGE = "1"
DELETE = "2"
HUNDRED = Decimal(100)


class MarketDataEntry(NamedTuple):
    # A named tuple rather than a frozen dataclass: one is made per FIX entry, on the hot path.
    entry_type: str
    action: str = NEW
    price: Decimal | None = None
    size: int | None = None
    # MDEntryPositionNo: depth level, 1 = best. None means best.
    position: int | None = None
    # OpenCloseSettlFlag 4: the value is from the previous business day.
    previous_day: bool = False


class SymbolUpdate(NamedTuple):
    """What one FIX message says about one symbol."""

    symbol: str
    entries: tuple[MarketDataEntry, ...]
    exchange_time_ns: int
    # A full refresh (35=W) replaces the quote's state; an incremental (35=X) amends it.
    snapshot: bool = False


@dataclass(slots=True)
class Quote:
    symbol: str
    previous_close: Decimal | None = None
    last_price: Decimal | None = None
    bid_price: Decimal | None = None
    bid_quantity: int = 0
    ask_price: Decimal | None = None
    ask_quantity: int = 0
    volume: int = 0
    open_price: Decimal | None = None
    high_price: Decimal | None = None
    low_price: Decimal | None = None
    exchange_time_ns: int = 0
    sequence: int = 0
    # Once the exchange reports cumulative volume, trade sizes no longer add to it.
    volume_reported: bool = field(default=False, compare=False)

    @property
    def change(self) -> Decimal | None:
        if self.last_price is None or self.previous_close is None:
            return None
        return self.last_price - self.previous_close

    @property
    def change_percent(self) -> Decimal | None:
        change = self.change
        if change is None or not self.previous_close:
            return None
        return (change * HUNDRED / self.previous_close).quantize(PAISA, rounding=ROUND_HALF_UP)

    def state(self) -> tuple[object, ...]:
        """Everything a client sees except time and sequence: equal states mean no tick."""
        return (
            self.previous_close,
            self.last_price,
            self.bid_price,
            self.bid_quantity,
            self.ask_price,
            self.ask_quantity,
            self.volume,
            self.open_price,
            self.high_price,
            self.low_price,
        )


class QuoteBook:
    """Latest quote per symbol.

    Sequences start at `sequence_floor` (the process start time in microseconds), so they
    keep increasing across restarts without being stored: a consumer that keeps the highest
    sequence per symbol never mistakes a restarted service's ticks for old ones. One counter
    serves every symbol (far fewer than a million changes a second keep it below the clock),
    so `last_sequence` tells a client how current it is over all its symbols.
    """

    def __init__(self, sequence_floor: int) -> None:
        self.sequence_floor = sequence_floor
        self.last_sequence = sequence_floor - 1
        self.quotes: dict[str, Quote] = {}

    def __len__(self) -> int:
        return len(self.quotes)

    def get(self, symbol: str) -> Quote | None:
        return self.quotes.get(symbol)

    def ensure(self, symbol: str, previous_close: Decimal | None) -> Quote:
        """The symbol's quote, created from the instrument master if it has none yet."""
        quote = self.quotes.get(symbol)
        if quote is None:
            quote = self.quotes[symbol] = Quote(symbol, previous_close=previous_close)
        elif quote.previous_close is None and previous_close is not None:
            quote.previous_close = previous_close
        return quote

    def restore(self, quote: Quote) -> bool:
        """Seed the cache from a saved snapshot or a followed tick, unless the cached quote is
        as new; live market data replaces it. True if it was taken."""
        if quote.symbol not in self.quotes or self.quotes[quote.symbol].sequence < quote.sequence:
            self.quotes[quote.symbol] = replace(quote)
            self.last_sequence = max(self.last_sequence, quote.sequence)
            return True
        return False

    def apply_batch(self, updates: Iterable[SymbolUpdate]) -> list[str]:
        """Apply updates in order; the symbol of each one that changed its quote (a symbol
        may appear more than once)."""
        apply = self.apply
        return [update.symbol for update in updates if apply(update)]

    def apply(self, update: SymbolUpdate) -> bool:
        """Apply one update; True if the quote changed (its sequence then advanced)."""
        quote = self.quotes.get(update.symbol)
        if quote is None:
            quote = self.quotes[update.symbol] = Quote(update.symbol)
        before = quote.state()
        if update.snapshot:
            _reset_session(quote)
        for entry in update.entries:
            _apply_entry(quote, entry, update.snapshot)
        if quote.state() == before:
            return False
        quote.exchange_time_ns = max(update.exchange_time_ns, quote.exchange_time_ns)
        self.last_sequence = max(self.last_sequence, quote.sequence) + 1
        quote.sequence = self.last_sequence
        return True


def _reset_session(quote: Quote) -> None:
    quote.last_price = quote.bid_price = quote.ask_price = None
    quote.bid_quantity = quote.ask_quantity = quote.volume = 0
    quote.open_price = quote.high_price = quote.low_price = None
    quote.volume_reported = False


def _apply_entry(quote: Quote, entry: MarketDataEntry, snapshot: bool) -> None:
    kind, price = entry.entry_type, entry.price
    if kind in (BID, OFFER):
        if entry.position not in (None, 1):
            return  # deeper levels: the quote carries the best level only
        if entry.action == DELETE:
            price, size = None, 0
        elif price is None:
            return
        else:
            size = entry.size or 0
        if kind == BID:
            quote.bid_price, quote.bid_quantity = price, size
        else:
            quote.ask_price, quote.ask_quantity = price, size
        return
    if entry.action == DELETE:
        return
    if kind == TRADE_VOLUME:
        if entry.size is not None:
            quote.volume, quote.volume_reported = entry.size, True
        return
    if price is None:
        return
    if kind == TRADE:
        quote.last_price = price
        if entry.size and not snapshot and not quote.volume_reported:
            quote.volume += entry.size
        if quote.open_price is None:
            quote.open_price = price
        if quote.high_price is None or price > quote.high_price:
            quote.high_price = price
        if quote.low_price is None or price < quote.low_price:
            quote.low_price = price
    elif kind == OPENING_PRICE:
        quote.open_price = price
    elif kind == SESSION_HIGH:
        quote.high_price = price
    elif kind == SESSION_LOW:
        quote.low_price = price
    elif kind == CLOSING_PRICE and (snapshot or entry.previous_day):
        # A closing price in a snapshot, or flagged as the previous day's, is the reference
        # for change; today's close arriving intraday does not move it.
        quote.previous_close = price
