"""Candles (OHLCV bars) built from the exchange's trade prints.

Every incremental refresh that carries a trade (MDEntryType 2) moves the candle of each
interval whose bucket holds the update's time: the first trade of a bucket opens a candle,
later ones move its high, low and close. Volume is the rise of the exchange's cumulative
volume (MDEntryType B) across the update, or the trade's own size while the exchange
reports no cumulative volume. Snapshots restate the session, they are not trades: they only
tell the cumulative volume the next increments count from.

Buckets are aligned to the exchange's clock (India Standard Time, UTC+05:30, no daylight
saving): a 1h candle starts on the hour and a 1d candle at midnight there, as traders read
them. Prices are the exchange's exact decimals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from svc_marketdata.domain.quotes import TRADE, TRADE_VOLUME, SymbolUpdate

# Interval names as clients write them → length in seconds, shortest first.
INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
EXCHANGE_UTC_OFFSET_SECONDS = 5 * 3600 + 30 * 60
_LENGTHS = tuple(INTERVALS.items())

CandleKey = tuple[str, str]  # (symbol, interval)


def bucket_start(time_ns: int, interval: str) -> int:
    """The UTC second at which the `interval` candle holding `time_ns` starts."""
    length = INTERVALS[interval]
    local = time_ns // 1_000_000_000 + EXCHANGE_UTC_OFFSET_SECONDS
    return local - local % length - EXCHANGE_UTC_OFFSET_SECONDS


@dataclass(slots=True)
class Candle:
    symbol: str
    interval: str
    start: int  # UTC seconds
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int

    @property
    def end(self) -> int:
        return self.start + INTERVALS[self.interval]

    def add(self, price: Decimal, volume: int) -> None:
        # Comparisons rather than max()/min(): called for every interval of every trade.
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += volume


class CandleBook:
    """The forming candle (and the one before it) of every symbol and interval, and which
    candles changed since they were last saved."""

    def __init__(self) -> None:
        self.current: dict[CandleKey, Candle] = {}
        self.previous: dict[CandleKey, Candle] = {}
        # Cumulative volume last reported per symbol, which the next increment counts from.
        self._volume: dict[str, int] = {}
        self._unsaved: dict[tuple[str, str, int], Candle] = {}
        # Per symbol, its forming candles (shortest interval first) while one minute lasts:
        # (minute's start, its end, the candles, their keys). Every interval's bucket holds
        # whole minutes, so a trade inside the minute moves exactly these candles.
        self._rows: dict[str, tuple[int, int, list[Candle], tuple[CandleKey, ...]]] = {}
        # Symbols whose row is all in `_unsaved` already (until it is next taken).
        self._row_unsaved: set[str] = set()

    def restore(self, candles: Iterable[Candle]) -> None:
        """Continue from stored candles (the latest of each symbol and interval)."""
        for candle in candles:
            key = (candle.symbol, candle.interval)
            held = self.current.get(key)
            if held is None or held.start <= candle.start:
                self.current[key] = replace(candle)
                self._rows.pop(candle.symbol, None)

    def apply_batch(self, updates: Iterable[SymbolUpdate]) -> set[CandleKey]:
        """Apply updates in order; the (symbol, interval) pairs whose candles changed."""
        changed: set[CandleKey] = set()
        for update in updates:
            changed.update(self.apply(update))
        return changed

    def apply(self, update: SymbolUpdate) -> Sequence[CandleKey]:
        price: Decimal | None = None
        traded_size = 0
        cumulative: int | None = None
        for entry in update.entries:
            if entry.entry_type == TRADE and entry.price is not None and entry.action != "2":
                price = entry.price
                traded_size += entry.size or 0
            elif entry.entry_type == TRADE_VOLUME and entry.size is not None:
                cumulative = entry.size
        volume = self._volume_delta(update.symbol, cumulative, traded_size, update.snapshot)
        if update.snapshot or price is None:
            return []
        return self._trade(update.symbol, update.exchange_time_ns, price, volume)

    def _volume_delta(self, symbol: str, cumulative: int | None, traded: int, snapshot: bool) -> int:
        if cumulative is None:
            # No cumulative figure from this exchange (yet): the trade's own size.
            return 0 if snapshot or symbol in self._volume else traded
        before = self._volume.get(symbol)
        self._volume[symbol] = cumulative
        if snapshot or before is None:
            return 0
        # A smaller total is a new trading day's count starting again.
        return cumulative - before if cumulative >= before else cumulative

    def _trade(self, symbol: str, time_ns: int, price: Decimal, volume: int) -> Sequence[CandleKey]:
        # On the ingest hot path: a trade in the same minute as the symbol's last one moves
        # the same candles, found in one lookup.
        row = self._rows.get(symbol)
        seconds = time_ns // 1_000_000_000
        if row is not None and row[0] <= seconds < row[1]:
            for candle in row[2]:
                candle.add(price, volume)
            if symbol not in self._row_unsaved:
                self._row_unsaved.add(symbol)
                for candle in row[2]:
                    self._unsaved[(symbol, candle.interval, candle.start)] = candle
            return row[3]
        keys = self._bucket_trade(symbol, time_ns, price, volume)
        self._remember_row(symbol, seconds)
        return keys

    def _remember_row(self, symbol: str, seconds: int) -> None:
        """Keep the symbol's row if every interval's forming candle holds `seconds` (a late
        trade that only reached some of them leaves the row unknown until the next one)."""
        candles = [self.current.get((symbol, interval)) for interval in INTERVALS]
        minute = seconds - (seconds + EXCHANGE_UTC_OFFSET_SECONDS) % 60
        if all(c is not None and c.start <= minute < c.end for c in candles):
            row = [c for c in candles if c is not None]
            self._rows[symbol] = (minute, minute + 60, row, tuple((symbol, c.interval) for c in row))
            self._row_unsaved.add(symbol)
        else:
            self._rows.pop(symbol, None)
            self._row_unsaved.discard(symbol)

    def _bucket_trade(self, symbol: str, time_ns: int, price: Decimal, volume: int) -> list[CandleKey]:
        """Move the candle of every interval holding `time_ns`, computing each bucket."""
        local = time_ns // 1_000_000_000 + EXCHANGE_UTC_OFFSET_SECONDS
        current, unsaved = self.current, self._unsaved
        keys = []
        for interval, length in _LENGTHS:
            key = (symbol, interval)
            start = local - local % length - EXCHANGE_UTC_OFFSET_SECONDS
            candle = current.get(key)
            if candle is not None and candle.start == start:
                candle.add(price, volume)
            elif candle is None or candle.start < start:
                if candle is not None:
                    self.previous[key] = candle
                candle = current[key] = Candle(symbol, interval, start, price, price, price, price, volume)
            else:
                # A trade older than the forming candle (clock skew across a restart): its
                # bucket is closed, and rewriting history would surprise every chart.
                continue
            unsaved[(symbol, interval, start)] = candle
            keys.append(key)
        return keys

    def take_unsaved(self) -> list[Candle]:
        """Copies of the candles changed since the last call (to store them)."""
        unsaved, self._unsaved = self._unsaved, {}
        self._row_unsaved.clear()
        return [replace(c) for c in unsaved.values()]

    def return_unsaved(self, candles: Iterable[Candle]) -> None:
        """Candles that could not be stored: kept for the next attempt unless newer exist."""
        for candle in candles:
            key = (candle.symbol, candle.interval, candle.start)
            if key not in self._unsaved:
                self._unsaved[key] = candle

    def recent(self, symbol: str, interval: str) -> list[Candle]:
        """The forming candle and the one before it, newest first (what storage may lag)."""
        key = (symbol, interval)
        return [c for c in (self.current.get(key), self.previous.get(key)) if c is not None]
