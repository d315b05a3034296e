"""Change notices for latest-value streams (depth, candles).

A stream waits on the keys it follows; a change sets its event. The stream then reads the
latest state itself, so however many changes came meanwhile it writes one message with the
newest value: conflation without queues, and a slow client costs nothing but its event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import Gauge

from svc_runtime.errors import ResourceExhausted

STREAMS = Gauge("marketdata_value_streams", "Open depth and candle streams")


class ChangeBoard:
    def __init__(self, *, max_streams: int) -> None:
        self.max_streams = max_streams
        self._waiters: dict[Hashable, set[asyncio.Event]] = {}
        self._open = 0
        self.closing = asyncio.Event()

    def changed(self, keys: Iterable[Hashable]) -> None:
        waiters = self._waiters
        for key in keys:
            for event in waiters.get(key, ()):
                event.set()

    @contextmanager
    def watch(self, key: Hashable) -> Iterator[asyncio.Event]:
        if self._open >= self.max_streams:
            raise ResourceExhausted(
                f"at most {self.max_streams} depth and candle streams are served at once; retry later",
                reason="TOO_MANY_STREAMS",
                retry_after_seconds=1.0,
            )
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        self._open += 1
        STREAMS.inc()
        try:
            yield event
        finally:
            self._open -= 1
            STREAMS.dec()
            held = self._waiters.get(key)
            if held is not None:
                held.discard(event)
                if not held:
                    del self._waiters[key]

    def feed_changed(self) -> None:
        """The feed's status changed: every stream says so at once."""
        for events in self._waiters.values():
            for event in events:
                event.set()
