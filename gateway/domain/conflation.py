"""Conflation, shared: clients that watch the same symbols are pushed together.

The hub keeps one latest frame per symbol. Clients with the same set of symbols form a
push group (at most `MAX_MEMBERS` each, so one push is a short burst of writes, not
thousands); a group remembers only *which* of its symbols changed since its last push,
bounded by its symbol count however fast ticks arrive. When a push is due the group's
changed symbols are read from the hub's latest frames, joined into one payload once, and
the same bytes go to every member: each symbol's update is serialized once per push, not
once per client.

A group pushes on change at a bounded rate, paced by `svc_runtime.pacing` (a token bucket:
one push per `interval` sustained, a few back to back).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from svc_runtime.pacing import PUSH_BURST, PushPace

# (exchange time in nanoseconds, sequence): the exchange time orders quotes even if the
# price tracker's sequence restarts; the sequence breaks ties.
Version = tuple[int, int]

# Members per push group: a push writes to this many clients in one go (~50 µs each).
MAX_MEMBERS = 256

M = TypeVar("M")


class PushGroup(Generic[M]):
    __slots__ = ("_changed", "members", "pace", "symbols")

    def __init__(self, symbols: tuple[str, ...], interval: float, burst: int = PUSH_BURST) -> None:
        self.symbols = symbols
        self.members: set[M] = set()
        self._changed: dict[str, None] = {}
        self.pace = PushPace(interval, burst)

    @property
    def full(self) -> bool:
        return len(self.members) >= MAX_MEMBERS

    @property
    def dirty(self) -> bool:
        return bool(self._changed)

    def mark(self, symbol: str) -> bool:
        """Note that `symbol` changed; True if the group was clean until now."""
        was_clean = not self._changed
        self._changed[symbol] = None
        return was_clean

    @property
    def next_push_at(self) -> float:
        """When the group may push again."""
        return self.pace.next_push_at

    def take(self, now: float) -> list[str]:
        """The changed symbols, oldest change first, each once; spends a push."""
        taken = list(self._changed)
        self._changed.clear()
        if taken:
            self.pace.spend(now)
        return taken
