"""Abuse limits (OWASP API4/API6): request rates, login throttling, concurrent streams.

Time is passed in (`now`, in seconds), so the logic is tested without sleeping. State is
bounded: at most `max_keys` keys are remembered, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: `rate` requests per second on average, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def acquire(self, key: str, now: float) -> float:
        """0.0 if the request may proceed (and is counted), else seconds until it may."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


@dataclass
class _Failures:
    count: int
    last: float
    locked_until: float


class LoginThrottle:
    """Slows password guessing: after `free_failures` failures on a key (a username or a
    client address), each further failure locks the key for an exponentially growing
    time, capped at `max_lock`. Failures are forgotten after `forget_after` quiet seconds.

    Keys are checked whether or not the username exists, so throttling reveals nothing.
    """

    def __init__(
        self,
        *,
        free_failures: int = 5,
        base_lock: float = 1.0,
        max_lock: float = 900.0,
        forget_after: float = 900.0,
        max_keys: int = 100_000,
    ) -> None:
        self.free_failures = free_failures
        self.base_lock = base_lock
        self.max_lock = max_lock
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._keys: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, key: str, now: float) -> float:
        """Seconds `key` must still wait before another attempt (0.0: go ahead)."""
        entry = self._keys.get(key)
        if entry is None:
            return 0.0
        if now - entry.last > self.forget_after:
            del self._keys[key]
            return 0.0
        return max(0.0, entry.locked_until - now)

    def failed(self, key: str, now: float) -> None:
        entry = self._keys.get(key)
        if entry is None or now - entry.last > self.forget_after:
            entry = _Failures(0, now, 0.0)
            self._keys[key] = entry
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key)
        entry.count += 1
        entry.last = now
        excess = entry.count - self.free_failures
        if excess > 0:
            entry.locked_until = now + min(self.max_lock, self.base_lock * 2 ** (excess - 1))

    def succeeded(self, key: str) -> None:
        self._keys.pop(key, None)


class StreamSlots:
    """At most `per_user` concurrent streams per user."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[str, int] = {}

    def acquire(self, user_id: str) -> bool:
        count = self._open.get(user_id, 0)
        if count >= self.per_user:
            return False
        self._open[user_id] = count + 1
        return True

    def release(self, user_id: str) -> None:
        count = self._open.get(user_id, 0) - 1
        if count > 0:
            self._open[user_id] = count
        else:
            self._open.pop(user_id, None)

    def open_streams(self, user_id: str) -> int:
        return self._open.get(user_id, 0)
