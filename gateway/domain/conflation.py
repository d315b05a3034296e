"""Conflation, shared: clients that watch the same symbols are pushed together.

The hub keeps one latest frame per symbol. Clients with the same set of symbols form a
push group (at most `MAX_MEMBERS` each, so one push is a short burst of writes, not
thousands); a group remembers only *which* of its symbols changed since its last push,
bounded by its symbol count however fast ticks arrive. When a push is due the group's
changed symbols are read from the hub's latest frames, joined into one payload once, and
the same bytes go to every member: each symbol's update is serialized once per push, not
once per client.

A group pushes on change at a bounded rate, paced by a token bucket: one push per
`interval` sustained, up to `PUSH_BURST` back to back. A fixed spacing would hold a change
that comes soon after a push (the next part of a quiet market's update) for a whole
interval; the bucket lets it through at once and still paces a busy symbol set at the rate.
"""

from __future__ import annotations

from typing import Generic, TypeVar

# (exchange time in nanoseconds, sequence): the exchange time orders quotes even if the
# price tracker's sequence restarts; the sequence breaks ties.
Version = tuple[int, int]

# Members per push group: a push writes to this many clients in one go (~50 µs each).
MAX_MEMBERS = 256
# Pushes a group may make back to back before the rate paces it.
PUSH_BURST = 3

M = TypeVar("M")


class PushGroup(Generic[M]):
    __slots__ = (
        "_changed",
        "_next_push_at",
        "_refilled_at",
        "_tokens",
        "burst",
        "interval",
        "members",
        "symbols",
    )

    def __init__(self, symbols: tuple[str, ...], interval: float, burst: int = PUSH_BURST) -> None:
        self.symbols = symbols
        self.interval = interval
        self.burst = burst
        self.members: set[M] = set()
        self._changed: dict[str, None] = {}
        self._next_push_at = 0.0
        self._tokens = float(burst)
        self._refilled_at: float | None = None

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
        return self._next_push_at

    def take(self, now: float) -> list[str]:
        """The changed symbols, oldest change first, each once; spends a push, and sets when
        the next may go (at once while the bucket holds a whole push, else when it will)."""
        taken = list(self._changed)
        self._changed.clear()
        if taken:
            if self._refilled_at is not None:
                earned = (now - self._refilled_at) / self.interval
                self._tokens = min(float(self.burst), self._tokens + earned)
            self._refilled_at = now
            self._tokens = max(0.0, self._tokens - 1.0)
            self._next_push_at = now + max(0.0, 1.0 - self._tokens) * self.interval
        return taken
