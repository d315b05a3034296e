"""How often a price stream may be pushed: a token bucket per push group.

`rate` pushes a second sustained, up to `burst` back to back. A fixed spacing between pushes
would hold a change that comes soon after a push (the next part of a quiet market's update)
for a whole interval; the bucket lets it through at once and still paces a symbol set that
changes all the time at the rate, so fan-out costs no more at saturation. The gateway's
SSE streams use the burst; svc_marketdata's `StreamQuotes`, whose contract says "at most N
updates per second", a burst of one (a fixed spacing).
"""

from __future__ import annotations

# Pushes a stream may get back to back before the rate paces it.
PUSH_BURST = 3


class PushPace:
    __slots__ = ("_refilled_at", "_tokens", "burst", "interval", "next_push_at")

    def __init__(self, interval: float, burst: int = PUSH_BURST) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("a pace needs a positive interval and a burst of at least one")
        self.interval = interval
        self.burst = burst
        self._tokens = float(burst)
        self._refilled_at: float | None = None
        # When the next push may go (monotonic seconds).
        self.next_push_at = 0.0

    def spend(self, now: float) -> None:
        """A push went out at `now`: the next may go at once while the bucket holds a whole
        push, else when it will."""
        if self._refilled_at is not None:
            earned = (now - self._refilled_at) / self.interval
            self._tokens = min(float(self.burst), self._tokens + earned)
        self._refilled_at = now
        self._tokens = max(0.0, self._tokens - 1.0)
        self.next_push_at = now + max(0.0, 1.0 - self._tokens) * self.interval
