"""Conflation for a push group (streams with the same symbols and rate): the latest value
wins, pushes are paced (`svc_runtime.pacing`). StreamQuotes promises at most
`max_updates_per_second` in any second, so its pace allows no burst: one push per interval.

A group remembers only *which* of its symbols changed since its last push, never the
intermediate quotes: its memory is bounded by its symbol count however fast prices move or
however slowly the client reads. When a push is due, the caller reads each pending
symbol's latest quote.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from svc_runtime.pacing import PushPace

DEFAULT_UPDATES_PER_SECOND = 4
MAX_UPDATES_PER_SECOND = 50


class Conflator:
    def __init__(self, symbols: Sequence[str], max_updates_per_second: int) -> None:
        if not 1 <= max_updates_per_second <= MAX_UPDATES_PER_SECOND:
            raise ValueError("max_updates_per_second out of range")
        self.symbols = frozenset(symbols)
        self._pending: dict[str, None] = {}
        self.pace = PushPace(1.0 / max_updates_per_second, burst=1)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def offer(self, changed: Iterable[str]) -> bool:
        """Note the stream's symbols among `changed`; True if any (a push is wanted)."""
        hits = self.symbols.intersection(changed)
        if not hits:
            return False
        self._pending.update(dict.fromkeys(hits))
        return True

    @property
    def next_push_at(self) -> float:
        """When the next push may go out."""
        return self.pace.next_push_at

    def due_in(self, now: float) -> float:
        """Seconds until the next push may go out (0 if it may go now)."""
        return max(0.0, self.pace.next_push_at - now)

    def take(self, now: float) -> list[str]:
        """The pending symbols (each once); spends a push."""
        taken = list(self._pending)
        self._pending.clear()
        if taken:
            self.pace.spend(now)
        return taken
