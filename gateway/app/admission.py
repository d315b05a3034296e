"""Admission of order placements: a bound on those in progress in this gateway process.

Past capacity, letting every placement in only makes every placement late: the queues
between the gateway and the database grow, each order waits for all those before it, and
clients time out on orders that were then placed. So at most `in_flight` placements are
forwarded at once; up to `queue` more wait for a slot, each at most `queue_seconds`; any
other is refused at once (429 SERVER_BUSY with Retry-After), before its body is read or
validated and before any service is called. Orders that are admitted keep a bounded
latency, and the refusals cost the gateway little.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


class Busy(Exception):
    """No slot now, nor within the queue deadline: the caller should retry later."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__("at capacity")
        self.retry_after_seconds = retry_after_seconds


@dataclass
class Admission:
    in_flight: int = 32
    queue: int = 32
    queue_seconds: float = 0.25
    # What a refusal tells the client to wait: whole seconds (HTTP's Retry-After).
    retry_after_seconds: int = 1
    _slots: asyncio.Semaphore = field(init=False, repr=False)
    _waiting: int = field(default=0, init=False, repr=False)
    _taken: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.in_flight < 1 or self.queue < 0 or self.queue_seconds < 0:
            raise ValueError("in_flight must be at least 1; queue and queue_seconds not negative")
        self._slots = asyncio.Semaphore(self.in_flight)

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def taken(self) -> int:
        """Slots held now."""
        return self._taken

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """A slot for the duration of the block, or `Busy`."""
        await self._enter()
        self._taken += 1
        try:
            yield
        finally:
            self._taken -= 1
            self._slots.release()

    async def _enter(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns without suspending
            return
        if self._waiting >= self.queue:
            raise Busy(self.retry_after_seconds)
        self._waiting += 1
        try:
            async with asyncio.timeout(self.queue_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise Busy(self.retry_after_seconds) from None
        finally:
            self._waiting -= 1
