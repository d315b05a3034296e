"""The tick feed: one core-NATS subscription per gateway process, shared by all clients.

svc_marketdata publishes `TickBatch` messages on `topology.tick_subject(shard)`; the
gateway takes every shard (ticks are latest-value data: a missed one is superseded by the
next, so core NATS without acks is the right tool) and hands each batch to the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import Counter, Gauge

from brokermesh.marketdata.v1 import marketdata_pb2, tick_pb2
from svc_runtime import messaging

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retrying(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()` until it succeeds, backing off to 10 s: for what NATS gives the gateway in
    the background (the REST API works meanwhile)."""
    delay = 0.5
    while True:
        try:
            return await attempt()
        except Exception as exc:
            log.warning("%s cannot reach NATS; retrying", what, extra={"error": repr(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def stopped(task: asyncio.Task[None] | None, nc: NatsClient | None) -> None:
    """End a background connection started with `retrying`, connected or not."""
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if nc is not None:
        with contextlib.suppress(Exception):
            await nc.drain()


BATCHES = Counter("gateway_tick_batches_total", "Tick batches received from NATS")
BAD_BATCHES = Counter("gateway_tick_batches_undecodable_total", "Tick batches that failed to decode")
CONNECTED = Gauge("gateway_tick_feed_connected", "1 while the tick subscription is up")

# A subscriber that falls this far behind drops messages rather than growing without bound.
PENDING_BYTES_LIMIT = 64 * 1024 * 1024


class TickFeed:
    def __init__(
        self,
        nats_url: str,
        topology: messaging.Topology,
        on_quotes: Callable[[Iterable[marketdata_pb2.Quote]], None],
        on_status: Callable[[marketdata_pb2.FeedStatus], None] = lambda status: None,
    ) -> None:
        self.nats_url = nats_url
        # Every shard, and the tracker's status heartbeat (`topology.feed_status_subject`).
        self.subject = topology.all_ticks_subject
        self.on_quotes = on_quotes
        self.on_status = on_status
        self._nc: NatsClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def start(self) -> None:
        """Connect in the background: REST keeps working while NATS is unreachable."""
        self._task = asyncio.create_task(self._run(), name="tick-feed")

    async def _run(self) -> None:
        nc = await retrying("tick feed", lambda: messaging.connect(self.nats_url, "gateway-ticks"))
        self._nc = nc
        await nc.subscribe(self.subject, cb=self._on_message, pending_bytes_limit=PENDING_BYTES_LIMIT)
        await nc.flush()
        CONNECTED.set(1)
        self.ready.set()
        log.info("tick feed subscribed", extra={"subject": self.subject})

    def generation(self) -> int | None:
        """None unless subscribed and connected; changes with every reconnect (after which
        ticks may have been missed)."""
        nc = self._nc
        if nc is None or not self.ready.is_set() or not nc.is_connected:
            return None
        return int(nc.stats["reconnects"])

    async def _on_message(self, msg: Msg) -> None:
        BATCHES.inc()
        try:
            batch = messaging.decode(msg, tick_pb2.TickBatch)
        except Exception:
            BAD_BATCHES.inc()
            log.warning("undecodable tick batch", extra={"subject": msg.subject})
            return
        if batch.quotes:
            self.on_quotes(batch.quotes)
        if batch.HasField("feed_status"):
            self.on_status(batch.feed_status)

    async def stop(self) -> None:
        await stopped(self._task, self._nc)
        CONNECTED.set(0)
