"""The per-user (or, anonymous, per-address) request rate counted across every gateway
process, as a token bucket in a NATS KV bucket: the same shared record and compare-and-set
writes as open streams (gateway.adapters.stream_slots), one key per caller.

A request takes a token by rewriting the caller's key at the revision this process last
wrote it (one round trip while one process serves the caller), reading it again only when
another process wrote in between. The bucket is timed by the wall clock, which the processes
share.

While NATS cannot be reached the limit still holds per process: that is logged and counted
(`gateway_request_rate_unshared_total`), never silent.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import nats.errors
from nats.js.api import StorageType
from prometheus_client import Counter

from gateway.adapters.kv import BackgroundBucket, Conflicting, Versioned, change_at_revision
from gateway.domain.limits import RateLimiter, refilled, take_token, tokens_state
from svc_runtime import messaging

log = logging.getLogger(__name__)

# On the path of every request: a NATS that slow is treated as out of reach.
TIMEOUT_SECONDS = 1.0
ATTEMPTS = 8
MAX_KEYS = 100_000
UNSHARED = Counter(
    "gateway_request_rate_unshared_total",
    "Requests counted against the rate limit in this gateway process only: the shared count was out of reach",
)


class NatsRequestRate:
    def __init__(
        self,
        nats_url: str,
        topology: messaging.Topology,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = RateLimiter(rate, burst)
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.record = BackgroundBucket(
            nats_url,
            topology.kv_bucket("request_rate"),
            description="requests per user (gateway)",
            # A bucket untouched for a window is full again: its key may go.
            ttl_seconds=max(60.0, 2 * self.window_seconds),
            # Written at every request: kept in memory (still on every node of the cluster),
            # not synced to disk; a NATS restart only hands every caller a full bucket.
            storage=StorageType.MEMORY,
        )
        # key → the caller's bucket as this process last wrote it (tried first on the next request).
        self._written: OrderedDict[str, Versioned] = OrderedDict()
        self._shared = True

    @property
    def window_seconds(self) -> float:
        return self.local.window_seconds

    def start(self) -> None:
        self.record.start()

    async def stop(self) -> None:
        await self.record.stop()

    async def take(self, key: str, now: float) -> float:
        """0.0 if the request may proceed (and is counted), else seconds until it may.
        `now` times only this process's own count (while the shared one is out of reach)."""
        wait = self.local.acquire(key, now)  # kept too: the fallback starts from what this process saw
        kv = self.record.kv
        if kv is None or not self.record.ready:
            return self._unshared(wait, "not connected")
        waits: list[float] = []

        def spend(value: bytes | None) -> bytes | None:
            wall = self.clock()
            tokens, updated = self._bucket(value, wall)
            left, waited = take_token(refilled(tokens, updated, wall, self.rate, self.burst), self.rate)
            waits[:] = [waited]
            # A refused request changes nothing: nothing to write.
            return None if waited else json.dumps([left, wall]).encode()

        name = messaging.Topology.quote_key(key)
        try:
            written = await change_at_revision(
                kv, name, spend, timeout=TIMEOUT_SECONDS, attempts=ATTEMPTS, known=self._written.get(key)
            )
        except (TimeoutError, nats.errors.Error, Conflicting) as error:
            self._written.pop(key, None)
            return self._unshared(wait, repr(error))
        if written is not None:
            self._remember(key, written)
        if not self._shared:
            self._shared = True
            log.info("request rate counted across gateway processes again")
        return waits[-1]

    def remaining(self, key: str, now: float) -> tuple[int, float]:
        """Whole requests `key` may still make at once (as this process last saw its bucket),
        and seconds until its burst is full."""
        written = self._written.get(key)
        if written is None or not self._shared:
            return self.local.remaining(key, now)
        wall = self.clock()
        tokens, updated = self._bucket(written[0], wall)
        return tokens_state(refilled(tokens, updated, wall, self.rate, self.burst), self.rate, self.burst)

    def _bucket(self, value: bytes | None, wall: float) -> tuple[float, float]:
        if not value:
            return float(self.burst), wall
        tokens, updated = json.loads(value)
        return float(tokens), float(updated)

    def _remember(self, key: str, written: Versioned) -> None:
        self._written[key] = written
        self._written.move_to_end(key)
        if len(self._written) > MAX_KEYS:
            self._written.popitem(last=False)

    def _unshared(self, wait: float, why: str) -> float:
        UNSHARED.inc()
        if self._shared:
            self._shared = False
            log.warning("request rate counted in this process only", extra={"error": why})
        return wait
