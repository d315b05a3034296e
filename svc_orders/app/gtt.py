"""GTT orders: create, read and cancel them, and the watcher that fires them.

The watcher compares every live GTT with the last traded price the OMS has from the price
stream. Firing is one conditional update (ACTIVE → TRIGGERED); only then is the order placed,
with the GTT's id as its idempotency key. A crash after firing leaves a TRIGGERED GTT without
an order, which the next round places with that same key — so a restart neither loses the
order nor places a second one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from prometheus_client import Counter

from svc_orders.app.entry import OrderEntry
from svc_orders.app.ports import Clock, MarketPort
from svc_orders.domain import gtt as rules
from svc_orders.domain import risk, validation
from svc_orders.domain.gtt import Gtt, GttStatus
from svc_orders.domain.validation import OrderDraft
from svc_runtime import aio, context
from svc_runtime.errors import (
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)

GTTS = Counter("orders_gtt_total", "GTT steps: created, fired, placed, failed, expired, cancelled", ["step"])
# Placement errors after which the same key is simply tried again next round.
_RETRY = (Unavailable, DeadlineExceeded, ResourceExhausted, Aborted)


class GttStore(Protocol):
    async def create(self, gtt: Gtt) -> Gtt: ...

    async def get(self, user_id: str, gtt_id: str) -> Gtt | None: ...

    async def for_user(self, user_id: str, limit: int = 500) -> list[Gtt]: ...

    async def live(self) -> list[Gtt]: ...

    async def end(self, gtt_id: str, status: GttStatus, reason: str) -> Gtt | None: ...

    async def fire(self, gtt_id: str, last_price: Decimal, when: datetime) -> Gtt | None: ...

    async def placed(self, gtt_id: str, order_id: str, reason: str) -> None: ...


@dataclass
class Gtts:
    store: GttStore
    market: MarketPort
    entry: OrderEntry
    clock: Clock
    interval: float = 0.25

    # --- the owner's calls ------------------------------------------------------------------
    async def create(
        self,
        user_id: str,
        trigger_price: str,
        draft: OrderDraft,
        expire_time: datetime | None,
        request_id: str,
    ) -> Gtt:
        symbol = validation.symbol(draft.symbol)
        instrument = await self.market.instrument(symbol)
        spec = validation.new_order(replace(draft, symbol=symbol), instrument)
        rules.check_order(spec)
        trigger = validation.price(trigger_price, instrument, "gtt.trigger_price")
        reference = risk.reference_price(await self.market.snapshot(symbol), instrument)
        if reference is None:
            raise FailedPrecondition(
                f"{symbol} has no last or closing price to set the trigger against",
                reason="NO_REFERENCE_PRICE",
            )
        now = self.clock.now()
        gtt = await self.store.create(
            Gtt(
                gtt_id=new_id("gtt"),
                user_id=user_id,
                client_request_id=request_id,
                trigger_price=trigger,
                direction=rules.direction_of(trigger, reference),
                order=spec,
                status=GttStatus.ACTIVE,
                create_time=now,
                expire_time=rules.expiry(expire_time, now),
            )
        )
        GTTS.labels("created").inc()
        return gtt

    async def get(self, user_id: str, gtt_id: str) -> Gtt:
        gtt = await self.store.get(user_id, gtt_id)
        if gtt is None:
            raise NotFound(f"GTT {gtt_id} not found", reason="GTT_NOT_FOUND")
        return gtt

    async def for_user(self, user_id: str) -> list[Gtt]:
        return await self.store.for_user(user_id)

    async def cancel(self, user_id: str, gtt_id: str) -> Gtt:
        current = await self.get(user_id, gtt_id)
        ended = await self.store.end(gtt_id, GttStatus.CANCELLED, "cancelled by its owner")
        if ended is None:
            current = await self.get(user_id, gtt_id)
            if current.status is GttStatus.CANCELLED:
                return current  # a repeated cancel
            raise FailedPrecondition(
                f"the GTT is {current.status}; only an ACTIVE GTT can be cancelled",
                reason="GTT_NOT_ACTIVE",
                metadata={"status": current.status.value},
            )
        GTTS.labels("cancelled").inc()
        return ended

    # --- the watcher ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await aio.every(self.interval, stop, self.watch_once, what="GTT watch", log=log)

    async def watch_once(self) -> int:
        fired = 0
        now = self.clock.now()
        for gtt in await self.store.live():
            if gtt.status is GttStatus.TRIGGERED:
                await self._place(gtt)  # fired before a crash or a refusal to retry
                continue
            if gtt.expire_time <= now:
                if await self.store.end(gtt.gtt_id, GttStatus.EXPIRED, "lapsed unfired"):
                    GTTS.labels("expired").inc()
                continue
            last = self.market.cached_snapshot(gtt.order.symbol).last_price
            if last is None or not rules.crossed(gtt, last):
                continue
            won = await self.store.fire(gtt.gtt_id, last, now)
            if won is not None:
                fired += 1
                GTTS.labels("fired").inc()
                log.info(
                    "GTT fired", extra={"gtt_id": gtt.gtt_id, "user_id": gtt.user_id, "last_price": str(last)}
                )
                await self._place(won)
        return fired

    async def _place(self, gtt: Gtt) -> None:
        o = gtt.order
        draft = OrderDraft(
            symbol=o.symbol,
            side=o.side,
            type=o.type,
            time_in_force=o.time_in_force,
            product=o.product,
            quantity=o.quantity,
            limit_price="" if o.limit_price is None else str(o.limit_price),
        )
        with context.bind(request_id=gtt.placement_key, actor=f"gtt:{gtt.gtt_id}"):
            try:
                order = await self.entry.place(gtt.user_id, draft, gtt.placement_key)
            except _RETRY as error:
                log.info("GTT order not placed yet", extra={"gtt_id": gtt.gtt_id, "error": str(error)})
                return
            except ServiceError as error:
                log.warning("GTT order refused", extra={"gtt_id": gtt.gtt_id, "reason": error.reason})
                await self.store.placed(gtt.gtt_id, "", f"{error.reason}: {error.message}"[:500])
                GTTS.labels("failed").inc()
                return
        await self.store.placed(gtt.gtt_id, order.order_id, "")
        GTTS.labels("placed").inc()
