"""Quote streams: who wants which symbols, and when each stream may push next.

The feed calls `StreamHub.dispatch` once per coalesced flush with the symbols that changed.
Each stream keeps a conflated pending set (see `domain.conflation`) and wakes its writer;
the writer sleeps until its pacing interval allows, then takes everything pending at once.
Dispatch never waits on a stream, so a slow client cannot hold up the feed.

A change of the feed's status (live ↔ stale) is handed to every stream the same way and
goes out at its next push, with the quotes pending then; an idle stream gets the current
status as a heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from prometheus_client import Gauge

from svc_marketdata.domain.conflation import Conflator
from svc_runtime.errors import ResourceExhausted, Unavailable

STREAMS_ACTIVE = Gauge("marketdata_streams_active", "Open StreamQuotes streams")
STREAM_SYMBOLS = Gauge("marketdata_stream_symbols", "Symbols subscribed over all open streams")


class QuoteStream:
    def __init__(self, symbols: Sequence[str], max_updates_per_second: int) -> None:
        self.symbols = list(symbols)
        self.conflator = Conflator(symbols, max_updates_per_second)
        self._wake = asyncio.Event()
        self.closed = False
        self.shutting_down = False
        # A feed status to send at the next push (the latest replaces an unsent one).
        self.status: bytes | None = None

    def offer(self, changed: set[str]) -> None:
        if self.conflator.offer(changed):
            self._wake.set()

    def offer_status(self, status: bytes) -> None:
        self.status = status
        self._wake.set()

    def end(self) -> None:
        self.shutting_down = True
        self._wake.set()

    async def next_push(self, idle_timeout: float) -> tuple[list[str], bytes | None]:
        """Wait for changes, respect the pacing interval, then return every symbol that
        changed meanwhile (each once) and the feed status to send, if any. After
        `idle_timeout` seconds with nothing to send, returns ([], None): time for a heartbeat."""
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    await self._wake.wait()
            except TimeoutError:
                return [], None
            delay = self.conflator.due_in(time.monotonic())
            if delay > 0 and not self.shutting_down:
                await asyncio.sleep(delay)
            if self.shutting_down:
                raise Unavailable("the server is shutting down; reconnect", reason="SHUTTING_DOWN")
            self._wake.clear()
            taken = self.conflator.take(time.monotonic())
            status, self.status = self.status, None
            if taken or status is not None:
                return taken, status


class StreamHub:
    def __init__(self, *, max_streams: int) -> None:
        self.max_streams = max_streams
        self._streams: set[QuoteStream] = set()
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, symbols: Sequence[str], max_updates_per_second: int) -> QuoteStream:
        if self._shutting_down:
            raise Unavailable("the server is shutting down; reconnect", reason="SHUTTING_DOWN")
        if len(self._streams) >= self.max_streams:
            raise ResourceExhausted(
                "too many quote streams on this server; retry later",
                reason="TOO_MANY_STREAMS",
                retry_after_seconds=5.0,
            )
        stream = QuoteStream(symbols, max_updates_per_second)
        self._streams.add(stream)
        STREAMS_ACTIVE.set(len(self._streams))
        STREAM_SYMBOLS.inc(len(stream.symbols))
        return stream

    def close(self, stream: QuoteStream) -> None:
        if stream in self._streams:
            self._streams.discard(stream)
            stream.closed = True
            STREAMS_ACTIVE.set(len(self._streams))
            STREAM_SYMBOLS.dec(len(stream.symbols))

    def shutdown(self) -> None:
        """End every stream with UNAVAILABLE (clients reconnect to another replica) and
        refuse new ones."""
        self._shutting_down = True
        for stream in self._streams:
            stream.end()

    def dispatch(self, changed: set[str]) -> None:
        for stream in self._streams:
            stream.offer(changed)

    def feed_changed(self, status: bytes) -> None:
        """The feed went stale or recovered: every stream says so at its next push."""
        for stream in self._streams:
            stream.offer_status(status)
