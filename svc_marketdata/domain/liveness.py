"""Is the exchange feed live? Judged from when the exchange was last heard from.

A quiet market and a dead feed look alike from the quotes alone, so liveness is judged on
any message from the exchange, heartbeats included: after `probe_after` seconds of silence
the session asks the exchange to answer (a FIX TestRequest), and after `stale_after`
seconds without a word the feed is stale. A session that is down is stale at once.
Times are wall-clock nanoseconds, passed in: `stale_since` is shown to clients.
"""

from __future__ import annotations

from dataclasses import dataclass

LIVE = "LIVE"
STALE = "STALE"


@dataclass(frozen=True, slots=True)
class FeedState:
    state: str
    # When STALE: when the exchange was last heard from (0 if never).
    stale_since_ns: int = 0

    @property
    def live(self) -> bool:
        return self.state == LIVE


class FeedLiveness:
    def __init__(self, *, stale_after: float, probe_after: float) -> None:
        if not 0 < probe_after < stale_after:
            raise ValueError("probe_after must be positive and shorter than stale_after")
        self.stale_after_ns = int(stale_after * 1e9)
        self.probe_after_ns = int(probe_after * 1e9)
        self.current = FeedState(STALE)  # until the exchange is first heard from
        self._probed_at_ns = 0

    def assess(self, *, session_up: bool, last_heard_ns: int, now_ns: int) -> FeedState | None:
        """The feed's state now; returned only when it differs from the last one assessed."""
        silent_ns = now_ns - last_heard_ns
        if session_up and last_heard_ns and silent_ns <= self.stale_after_ns:
            state = FeedState(LIVE)
        elif self.current.live:
            state = FeedState(STALE, last_heard_ns)
        else:
            state = self.current  # still stale, since the same moment
        if state == self.current:
            return None
        self.current = state
        return state

    def should_probe(self, *, session_up: bool, last_heard_ns: int, now_ns: int) -> bool:
        """True when the exchange has been silent long enough to ask it for a heartbeat
        (at most once per `probe_after`)."""
        if not session_up:
            return False
        if now_ns - last_heard_ns < self.probe_after_ns or now_ns - self._probed_at_ns < self.probe_after_ns:
            return False
        self._probed_at_ns = now_ns
        return True
