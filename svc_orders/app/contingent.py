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

from svc_orders.app import metrics
from svc_orders.app.ports import AuditEntry, Clock, CommandKind, FundsPort, MarketPort, OrderStore, UnitOfWork
from svc_orders.domain import contingent, state_machine
from svc_orders.domain.model import LEGS, Actor, Order, Status, Transition
from svc_runtime import context
from svc_runtime.errors import DeadlineExceeded, ServiceError, Unavailable
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)


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

    # --- sending the legs the broker made ---------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.send_once()
            except Exception:
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
