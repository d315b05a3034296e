"""Contingent orders at work: a bracket's exits come to life when its entry is over, an
OCO leg's first fill withdraws its siblings, and the legs the broker made are sent on.

Both reactions to a fill happen in the transaction that records the fill
(`after_change`): the exits are inserted, the siblings are moved to PENDING_CANCEL with
their cancel commands in the outbox. A crash before that commit loses the fill too (the
report is delivered again); a crash after it leaves the cancel in the outbox for the relay.
So no crash ends with a filled leg and a live sibling nobody asked the exchange to cancel.

Sending a leg the broker made (`send_once`, from a loop nudged after such a commit) blocks
the shares for the group's TARGET — the STOP_LOSS shares that block, it takes none — and
accepts the group's waiting legs in one transaction, as a placement does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Protocol

from svc_orders.app import metrics
from svc_orders.app.ports import AuditEntry, Clock, CommandKind, FundsPort, MarketPort, OrderStore, UnitOfWork
from svc_orders.domain import contingent, state_machine
from svc_orders.domain.model import (
    LEGS,
    Actor,
    Order,
    OrderType,
    Product,
    Side,
    Status,
    TimeInForce,
    Transition,
)
from svc_orders.domain.validation import OrderDraft
from svc_runtime import context
from svc_runtime.errors import DeadlineExceeded, ServiceError, Unavailable
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)

CLOSE_OUT_ACTOR = "system:oco-close-out"


class OrderDesk(Protocol):
    """The OMS's own placing (OrderEntry), for the broker's buy-back orders."""

    async def place(self, user_id: str, draft: OrderDraft, request_id: str) -> Order: ...


@dataclass
class ContingentOrders:
    store: OrderStore
    funds: FundsPort
    market: MarketPort
    clock: Clock
    interval: float = 1.0
    batch: int = 50
    # How long a bracket's exits wait for svc_funds to deliver the entry's shares.
    settle_wait: float = 30.0
    _nudged: asyncio.Event = field(default_factory=asyncio.Event)
    # Buys back what OCO groups oversold (the OMS's own placing); None: nobody does.
    desk: OrderDesk | None = None
    # Set when a group oversold, and at start: the next round looks for groups to close out.
    _oversold: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._oversold.set()

    def _audit(self, order: Order, action: str, detail: str) -> AuditEntry:
        return AuditEntry(
            action=action,
            actor=Actor.SYSTEM.value,
            request_id=context.request_id() or order.request_id,
            client_ip=order.client_ip,
            snapshot=self.market.cached_snapshot(order.symbol),
            detail=detail,
        )

    # --- in the transaction of a change ---------------------------------------------------
    async def after_change(self, uow: UnitOfWork, transition: Transition) -> None:
        """What a saved change means for the order's family, in the same transaction."""
        before, after = transition.before, transition.after
        if contingent.brings_its_stop_loss(before, after):
            await uow.insert_order(contingent.oco_stop_loss(after, new_id("ord"), self.clock.now()))
            metrics.CONTINGENT.labels("stop_loss_created").inc()
            self._nudged.set()
        if contingent.spawns_exits(before, after):
            target, stop = contingent.bracket_exits(after, new_id("ord"), new_id("ord"), self.clock.now())
            await uow.insert_order(target)
            await uow.insert_order(stop)
            metrics.CONTINGENT.labels("exits_created").inc()
            log.info(
                "bracket exits created",
                extra={"order_id": after.order_id, "target": target.order_id, "stop_loss": stop.order_id},
            )
            self._nudged.set()
        reason = contingent.withdraws_siblings(before, after)
        if reason:
            await self._withdraw_siblings(uow, after, reason)
        if (
            after.filled_quantity > before.filled_quantity
            and after.oco_group
            and LEGS[after.leg].one_cancels_other
        ):
            await self._note_oversold(uow, transition)

    async def _withdraw_siblings(self, uow: UnitOfWork, cause: Order, reason: str) -> None:
        for sibling in await uow.lock_group(cause.oco_group):
            if sibling.order_id == cause.order_id:
                continue
            transition = state_machine.withdraw_sibling(sibling, cause.order_id, self.clock.now(), reason)
            if not transition.changed:
                continue
            sent = transition.after.status is Status.PENDING_CANCEL
            await uow.save(
                transition,
                self._audit(sibling, "OCO_CANCEL", f"{cause.leg} {cause.order_id}: {reason}"),
                command=CommandKind.CANCEL if sent else None,
            )
            metrics.CONTINGENT.labels("sibling_withdrawn").inc()
            metrics.TRANSITIONS.labels(transition.trigger, transition.after.status.value).inc()

    async def _note_oversold(self, uow: UnitOfWork, transition: Transition) -> None:
        """The exchange filled a second leg before the broker's cancel reached it. Fills
        are the venue's facts, so both stand: svc_funds records the shares sold beyond the
        group's block as owed, and the broker says so loudly and buys them back (`close_out`)."""
        before, after = transition.before, transition.after
        group = await uow.lock_group(after.oco_group)
        now = contingent.oversold(group)
        earlier = contingent.oversold([before if o.order_id == after.order_id else o for o in group])
        if now <= earlier:
            return
        metrics.OCO_BOTH_FILLED.inc()
        traded = ", ".join(f"{o.leg} {o.order_id}: {o.filled_quantity}" for o in group if o.filled_quantity)
        detail = f"more than one leg of OCO group {after.oco_group} traded ({traded}): {now} shares oversold"
        log.error(
            "more than one leg of an OCO group traded",
            extra={"oco_group": after.oco_group, "user_id": after.user_id, "oversold": now},
        )
        await uow.audit_only(after, self._audit(after, "OCO_OVERSOLD", detail[:500]))
        self._oversold.set()

    # --- sending the legs the broker made ---------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.send_once()
                if self._oversold.is_set():
                    self._oversold.clear()
                    await self.close_out_once()
            except Exception:
                self._oversold.set()
                log.warning("sending contingent legs failed; will retry", exc_info=True)
            self._nudged.clear()
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._nudged.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waiters, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    def nudge(self) -> None:
        self._nudged.set()

    async def send_once(self) -> int:
        sent = 0
        for group in await self.store.legs_to_send(self.batch):
            with context.bind(request_id=f"legs-{group}", actor=Actor.SYSTEM.value):
                try:
                    sent += await self._send_group(group)
                except (Unavailable, DeadlineExceeded) as error:
                    # svc_funds may or may not have blocked: the block is keyed by the
                    # order id, so the next round asks again without blocking twice.
                    log.info("legs not sent yet", extra={"oco_group": group, "error": str(error)})
        return sent

    async def close_out_once(self) -> int:
        """Buy back, at the market, the shares OCO groups sold beyond their block, in the
        group's product; each order's key names the group and what was asked for before,
        so a repeated round finds its order instead of placing another."""
        if self.desk is None:
            return 0
        placed = 0
        for short in await self.store.oversold_groups(self.batch):
            draft = OrderDraft(
                symbol=short.symbol,
                side=Side.BUY,
                type=OrderType.MARKET,
                time_in_force=TimeInForce.DAY,
                product=Product(short.product),
                quantity=short.short,
            )
            key = contingent.close_out_key(short.oco_group, short.bought_back)
            with context.bind(request_id=key, actor=CLOSE_OUT_ACTOR):
                try:
                    order = await self.desk.place(short.user_id, draft, key)
                except ServiceError as error:
                    metrics.CONTINGENT.labels("close_out_refused").inc()
                    log.error(
                        "the buy-back of an OCO group's oversold shares was refused",
                        extra={"oco_group": short.oco_group, "quantity": short.short, "reason": error.reason},
                    )
                    continue
            metrics.CONTINGENT.labels("close_out_placed").inc()
            log.warning(
                "oversold shares bought back",
                extra={"oco_group": short.oco_group, "order_id": order.order_id, "quantity": short.short},
            )
            placed += 1
        return placed

    async def _send_group(self, group: str) -> int:
        async with self.store.unit_of_work() as uow:
            legs = await uow.lock_group(group)
            waiting = [leg for leg in legs if leg.status is Status.FUNDS_PENDING]
            holder = next((leg for leg in legs if LEGS[leg.leg].own_block), None)
            if not waiting or holder is None:
                return 0
            refusal = await self._block_for(holder)
            if refusal is None:
                return 0  # not yet: the next round asks again
            for leg in waiting:
                now = self.clock.now()
                if refusal:
                    transition = state_machine.broker_reject(leg, refusal, now)
                    await uow.save(transition, self._audit(leg, "CONTINGENT", refusal))
                else:
                    transition = state_machine.accept(leg, now)
                    await uow.save(
                        transition, self._audit(leg, "CONTINGENT", f"{leg.leg} sent"), command=CommandKind.NEW
                    )
                metrics.CONTINGENT.labels("leg_rejected" if refusal else "leg_sent").inc()
                metrics.TRANSITIONS.labels(transition.trigger, transition.after.status.value).inc()
            await uow.commit()
        return len(waiting)

    async def _block_for(self, holder: Order) -> str | None:
        """Block the group's shares on its TARGET if it waits too; '' when the legs can go,
        None when they cannot yet, else why they cannot."""
        if holder.status is Status.FUNDS_PENDING:
            try:
                await self.funds.block_holdings(holder)
            except (Unavailable, DeadlineExceeded):
                raise
            except ServiceError as error:
                waited = (self.clock.now() - holder.create_time).total_seconds()
                if (
                    error.reason == "INSUFFICIENT_HOLDINGS"
                    and holder.parent_order_id
                    and waited < self.settle_wait
                ):
                    # svc_funds settles the entry's fill from the same report, on its own
                    # time: the shares the exits sell may not be there yet.
                    return None
                log.warning(
                    "the exits' shares could not be blocked; legs rejected",
                    extra={"order_id": holder.order_id, "reason": error.reason},
                )
                return f"the exits' shares could not be blocked: {error.message}"[:500]
            return ""
        if holder.status.terminal or holder.status is Status.PENDING_CANCEL:
            # The block holder is gone (cancelled or rejected): the others have nothing to sell.
            return f"the group's {holder.leg} is {holder.status.public}"
        return ""
