"""L2 market depth: the best price levels of each side of every symbol's book.

The exchange addresses levels by position (MDEntryPositionNo, 1 = best), as FIX 4.4's
position-based books do: a new level at position p pushes the ones from p down, a deleted
one pulls them up, a changed one is replaced in place. A snapshot restates the whole book.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from svc_marketdata.domain.quotes import BID, DELETE, NEW, OFFER, MarketDataEntry, SymbolUpdate

# Levels per side kept and served (what the market-data session asks the exchange for).
DEPTH_LEVELS = 5

Level = tuple[Decimal, int]  # (price, shares)


@dataclass(slots=True)
class Depth:
    symbol: str
    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)
    exchange_time_ns: int = 0
    # Rises by one with every change of this symbol's depth.
    sequence: int = 0


class DepthBook:
    def __init__(self, levels: int = DEPTH_LEVELS) -> None:
        self.levels = levels
        self.books: dict[str, Depth] = {}

    def get(self, symbol: str) -> Depth:
        return self.books.get(symbol) or Depth(symbol)

    def apply_batch(self, updates: Iterable[SymbolUpdate]) -> set[str]:
        """Apply updates in order; the symbols whose depth changed."""
        return {update.symbol for update in updates if self.apply(update)}

    def apply(self, update: SymbolUpdate) -> bool:
        # On the ingest hot path: an update without a book entry costs one pass over its
        # entries, and a change is noticed level by level rather than by copying the book.
        depth = self.books.get(update.symbol)
        if depth is None:
            depth = self.books[update.symbol] = Depth(update.symbol)
        snapshot = update.snapshot
        if snapshot:
            before = (depth.bids, depth.asks)
            depth.bids, depth.asks = [], []
        changed = False
        for entry in update.entries:
            kind = entry.entry_type
            if kind == BID:
                changed |= self._apply_level(depth.bids, entry, snapshot)
            elif kind == OFFER:
                changed |= self._apply_level(depth.asks, entry, snapshot)
        if snapshot:
            changed = (depth.bids, depth.asks) != before
        if not changed:
            return False
        depth.exchange_time_ns = max(depth.exchange_time_ns, update.exchange_time_ns)
        depth.sequence += 1
        return True

    def _apply_level(self, side: list[Level], entry: MarketDataEntry, snapshot: bool) -> bool:
        """Apply one level's entry; whether the side changed."""
        index = (entry.position or 1) - 1
        if index < 0 or index >= self.levels:
            return False  # deeper than served
        if entry.action == DELETE:
            changed = index < len(side)
            if changed:
                del side[index]
            return changed
        if entry.price is None:
            return False
        level = (entry.price, entry.size or 0)
        if snapshot or entry.action == NEW:
            side.insert(min(index, len(side)), level)
            del side[self.levels :]
        elif index >= len(side):
            side.append(level)  # a change of a level never announced: take it as new
        elif side[index] == level:
            return False
        else:
            side[index] = level
        return True
