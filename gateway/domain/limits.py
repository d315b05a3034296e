"""Abuse limits (OWASP API4/API6): request rates, login throttling, failed authentication,
concurrent streams.

Time is passed in (`now`, in seconds), so the logic is tested without sleeping. State is
bounded: at most `max_keys` keys are remembered, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


def refilled(tokens: float, updated: float, now: float, rate: float, burst: int) -> float:
    """A token bucket's tokens at `now`, having held `tokens` at `updated`."""
    return min(float(burst), tokens + max(0.0, now - updated) * rate)


def take_token(tokens: float, rate: float) -> tuple[float, float]:
    """Take one of `tokens` (already refilled): the tokens left and 0.0, or, when not even
    one is there, `tokens` unchanged and the seconds until one is."""
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate


def tokens_state(tokens: float, rate: float, burst: int) -> tuple[int, float]:
    """Whole requests `tokens` allow at once, and seconds until the burst is full again."""
    return int(tokens), (burst - tokens) / rate


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
        bucket = self._refilled(key, now)
        bucket.tokens, wait = take_token(bucket.tokens, self.rate)
        return wait

    async def take(self, key: str, now: float) -> float:
        """`acquire`, as the edge asks (see gateway.app.ports.RequestRatePort)."""
        return self.acquire(key, now)

    def remaining(self, key: str, now: float) -> tuple[int, float]:
        """Whole requests `key` may still make at once, and seconds until its burst is full."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.burst, 0.0
        tokens = refilled(bucket.tokens, bucket.updated, now, self.rate, self.burst)
        return tokens_state(tokens, self.rate, self.burst)

    @property
    def window_seconds(self) -> float:
        """How long an empty bucket takes to fill: the window of a `burst`-request quota."""
        return self.burst / self.rate

    def _refilled(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = refilled(bucket.tokens, bucket.updated, now, self.rate, self.burst)
            bucket.updated = now
        return bucket


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


class LoginGuard:
    """Password guessing is slowed without letting one address lock out anyone else.

    - Each (username, address) pair gets `free_failures` failures, then exponentially
      growing lock-outs: guessing one user's password from one address is slow, while the
      same user elsewhere and everyone else at that address log in as usual.
    - An address failing for many usernames (spraying), or a username failing from many
      addresses (a distributed guess), is locked too, but only for pairs that are not
      *known*: a user who logged in successfully from an address within `trust_seconds`
      keeps logging in from there. So an attacker behind the office NAT, or one guessing
      a victim's password from a botnet, cannot lock the victim or the colleagues out of
      the addresses they use; a first login from a new address may have to wait.
    - A success forgets the pair's failures only: logging in to one's own account does
      not wash an address's or a username's record.

    No CAPTCHA: a correct password is never asked for more than the wait.
    """

    def __init__(
        self,
        *,
        free_failures: int = 5,
        address_failures: int = 30,
        user_failures: int = 50,
        base_lock: float = 1.0,
        max_lock: float = 900.0,
        forget_after: float = 900.0,
        trust_seconds: float = 30 * 86400.0,
        max_keys: int = 100_000,
    ) -> None:
        def throttle(free: int) -> LoginThrottle:
            return LoginThrottle(
                free_failures=free,
                base_lock=base_lock,
                max_lock=max_lock,
                forget_after=forget_after,
                max_keys=max_keys,
            )

        self.free_failures = free_failures
        self.address_failures = address_failures
        self.user_failures = user_failures
        self.max_lock = max_lock
        self.trust_seconds = trust_seconds
        self.max_keys = max_keys
        self._pairs = throttle(free_failures)
        self._addresses = throttle(address_failures)
        self._users = throttle(user_failures)
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()

    @staticmethod
    def _keys(username: str, address: str) -> tuple[str, str, str]:
        user = username.strip().lower()
        return f"{user}@{address}", f"ip:{address}", f"user:{user}"

    def known(self, username: str, address: str, now: float) -> bool:
        seen = self._known.get((username.strip().lower(), address))
        return seen is not None and now - seen <= self.trust_seconds

    def retry_after(self, username: str, address: str, now: float) -> float:
        pair, by_address, by_user = self._keys(username, address)
        wait = self._pairs.retry_after(pair, now)
        if not self.known(username, address, now):
            wait = max(
                wait, self._addresses.retry_after(by_address, now), self._users.retry_after(by_user, now)
            )
        return wait

    def failed(self, username: str, address: str, now: float) -> None:
        pair, by_address, by_user = self._keys(username, address)
        self._pairs.failed(pair, now)
        self._addresses.failed(by_address, now)
        self._users.failed(by_user, now)

    def succeeded(self, username: str, address: str, now: float) -> None:
        pair, _, _ = self._keys(username, address)
        self._pairs.succeeded(pair)
        key = (username.strip().lower(), address)
        self._known[key] = now
        self._known.move_to_end(key)
        if len(self._known) > self.max_keys:
            self._known.popitem(last=False)


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

    async def take(self, user_id: str) -> bool:
        """`acquire`, as the edge asks for a slot (see gateway.app.ports.StreamSlotsPort)."""
        return self.acquire(user_id)


# A user's open streams across every gateway process: slot id → when its lease ends (epoch
# seconds). A process renews the leases of its streams; a slot whose process died without
# releasing it lapses when its lease ends.
HeldSlots = dict[str, float]


def claim_slot(
    held: HeldSlots, slot: str, now: float, per_user: int, lease_seconds: float
) -> HeldSlots | None:
    """`held` with `slot` added, lapsed slots dropped; None when `per_user` are open already."""
    live = {s: end for s, end in held.items() if end > now}
    if len(live) >= per_user:
        return None
    live[slot] = now + lease_seconds
    return live


def renew_slots(held: HeldSlots, mine: set[str], now: float, lease_seconds: float) -> HeldSlots:
    """`held` with the leases of `mine` (those still held) extended, lapsed slots dropped."""
    return {
        s: (now + lease_seconds if s in mine else end) for s, end in held.items() if end > now or s in mine
    }


def drop_slots(held: HeldSlots, slots: Collection[str], now: float) -> HeldSlots:
    """`held` without `slots` and without lapsed slots."""
    return {s: end for s, end in held.items() if s not in slots and end > now}
