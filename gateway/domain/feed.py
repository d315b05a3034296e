"""Is the price feed live, as this gateway sees it?

Two things must hold: the price tracker says the exchange feed is live (its status
heartbeat, several a second), and the gateway still hears that heartbeat. A tracker that
falls silent (crashed, partitioned, NATS gone) leaves quotes frozen just as surely as a
silent exchange, so silence longer than `silence_limit` makes the feed stale here too,
stale since the last word heard. Times are wall-clock nanoseconds, passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

LIVE = "LIVE"
STALE = "STALE"


@dataclass(frozen=True, slots=True)
class FeedCondition:
    state: str
    # When STALE: since when quotes may be out of date (0: unknown, never heard).
    stale_since_ns: int = 0

    @property
    def live(self) -> bool:
        return self.state == LIVE


class FeedView:
    def __init__(self, *, silence_limit: float) -> None:
        self.silence_limit_ns = int(silence_limit * 1e9)
        self.condition = FeedCondition(STALE)
        # The highest quote sequence the tracker has issued (or this gateway has seen).
        self.last_sequence = 0
        self._tracker = FeedCondition(STALE)
        self._heard_ns = 0

    def on_status(self, tracker: FeedCondition, last_sequence: int, now_ns: int) -> FeedCondition | None:
        """The tracker's heartbeat; returns the new condition if it changed."""
        self._tracker = tracker
        self._heard_ns = now_ns
        self.last_sequence = max(self.last_sequence, last_sequence)
        return self.assess(connected=True, now_ns=now_ns)

    def saw_sequence(self, sequence: int) -> None:
        self.last_sequence = max(self.last_sequence, sequence)

    def assess(self, *, connected: bool, now_ns: int) -> FeedCondition | None:
        """The condition now; returned only when it differs from the last one."""
        heard = self._heard_ns
        if not connected or not heard or now_ns - heard > self.silence_limit_ns:
            condition = FeedCondition(STALE, self._tracker.stale_since_ns or heard)
        else:
            condition = self._tracker
        if condition == self.condition:
            return None
        self.condition = condition
        return condition
