"""Trailing stops, server-side: the broker moves each waiting trailing STOP order's stop
after the last price from the price stream, through the ordinary modification (so the
exchange holds the new stop, and the audit trail says who moved it and when)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from svc_orders.app.entry import OrderEntry
from svc_orders.app.ports import MarketPort
from svc_orders.domain import trailing
from svc_orders.domain.model import Actor, Order
from svc_orders.domain.validation import ModificationDraft
from svc_runtime import aio, context
from svc_runtime.errors import ServiceError

log = logging.getLogger(__name__)

TRAILED = Counter("orders_trailing_stop_moves_total", "Trailing stops moved, by outcome", ["outcome"])


class TrailingStopStore(Protocol):
    async def trailing_stops(self, limit: int = 1000) -> list[Order]: ...


@dataclass
class TrailingStops:
    store: TrailingStopStore
    market: MarketPort
    entry: OrderEntry
    interval: float = 0.25

    async def run(self, stop: asyncio.Event) -> None:
        await aio.every(self.interval, stop, self.follow_once, what="following trailing stops", log=log)

    async def follow_once(self) -> int:
        moved = 0
        for order in await self.store.trailing_stops():
            last = self.market.cached_snapshot(order.symbol).last_price
            if last is None:
                continue
            instrument = await self.market.instrument(order.symbol)
            stop = trailing.new_stop(order, last, instrument.tick_size)
            if stop is None:
                continue
            # One key per order version: a repeat of this step is the same modification.
            key = f"trail-{order.order_id}-v{order.version}"
            with context.bind(request_id=key, actor=Actor.SYSTEM.value):
                try:
                    await self.entry.modify(
                        order.user_id, order.order_id, ModificationDraft(stop_price=str(stop)), key
                    )
                except ServiceError as error:
                    # Changed meanwhile (triggered, being modified, cancelled): next round sees it.
                    TRAILED.labels(error.reason).inc()
                    log.info(
                        "trailing stop not moved",
                        extra={"order_id": order.order_id, "reason": error.reason, "stop": str(stop)},
                    )
                    continue
            TRAILED.labels("moved").inc()
            moved += 1
        return moved
