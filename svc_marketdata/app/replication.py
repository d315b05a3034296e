"""Replicas of svc_marketdata: one holds the exchange feed, the others follow its ticks.

The exchange's market-data session is one FIX session (one sender, one message store), so
one replica at a time holds it, through the PostgreSQL advisory-lock lease: the holder
follows the feed, publishes ticks and the feed's status, saves quote snapshots and candles,
and evaluates price alerts. Every other replica stands by: it follows the holder's ticks on
NATS into its own quote cache (`MarketData.follow_ticks`), so quotes, quote streams,
instruments, watchlists and alerts are answered by every replica alike; the instrument
master it reads from PostgreSQL, where the holder stores it. Depth and forming
candles are not carried by ticks: only the holder serves them (`MarketData.require_feed`).

A holder that loses the lease stops publishing and ends its process (its FIX session must
not outlive the lease); `up` starts it again, as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from svc_marketdata.app.alerts import PriceAlerts
from svc_marketdata.app.market import MarketData
from svc_runtime import aio
from svc_runtime.lease import Lease, as_singleton

log = logging.getLogger(__name__)


class FeedReplica:
    def __init__(
        self,
        lease: Lease,
        market: MarketData,
        alerts: PriceAlerts,
        *,
        open_feed: Callable[[], None],
        announce: Callable[[bool], Awaitable[None]],
        alert_reload_seconds: float = 1.0,
        master_follow_seconds: float = 2.0,
    ) -> None:
        self.lease = lease
        self.market = market
        self.alerts = alerts
        # Connects the exchange session (called once, on taking the lease).
        self.open_feed = open_feed
        # Tells clients whether this replica holds the feed (its health for depth and candles).
        self.announce = announce
        self.alert_reload_seconds = alert_reload_seconds
        # A standby reads the stored instrument master this often (a holder ignores it).
        self.master_follow_seconds = master_follow_seconds
        market.holding.clear()  # a standby until the lease is ours

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by (serving followed ticks) until the lease is ours, then hold the feed
        until `stop` or the lease is lost (then `stop` is set: the process ends)."""
        self._stop = stop
        self._standby_pushes = asyncio.create_task(self.market.hub.run_pushes())
        following = asyncio.create_task(
            aio.every(
                self.master_follow_seconds,
                stop,
                self.market.follow_master,
                what="follow the instrument master",
                log=log,
            )
        )
        try:
            await as_singleton(self.lease, self._hold, stop)
        finally:
            await _cancelled(self._standby_pushes)
            await _cancelled(following)

    async def _hold(self, ended: asyncio.Event) -> None:
        # The holder's own loop pushes to the streams from now on.
        await _cancelled(self._standby_pushes)
        # Alerts created on a standby are stored, not watched there: the holder reads the
        # active ones again every interval, so each is evaluated within about one.
        await self.alerts.load()
        reloading = asyncio.create_task(
            aio.every(self.alert_reload_seconds, ended, self.alerts.load, what="reload price alerts", log=log)
        )
        self.market.take_feed(self.alerts.on_quotes)
        await self.announce(True)
        log.info("holding the exchange feed")
        self.open_feed()
        try:
            await self.market.run(ended)
        finally:
            await _cancelled(reloading)
            await self.announce(False)
        if self.lease.lost.is_set() and not self._stop.is_set():
            log.error("lost the market-data feed lease; stopping so that a standby takes the feed")
            self._stop.set()


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
