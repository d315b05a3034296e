"""The sweeper: resolves orders stuck before the exchange (docs/architecture.md §3, "Stuck
orders").

- FUNDS_PENDING for too long (the OMS died between recording the order and accepting it):
  ask svc_funds whether the block exists. It does → accept the order and send it on. It
  does not → REJECTED, and release (a no-op unless a late block appears).
- PENDING_EXCHANGE for too long: ask the exchange, through svc_exec, what it knows. It
  knows the order → apply what it says and ask svc_exec to replay the reports the broker
  missed. It does not → only once every command has left the outbox and been taken by
  the executor (so the order cannot still reach the exchange) → REJECTED + release.

An order is never both released and filled: a release happens only for an order the
exchange has never seen and can no longer receive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from svc_orders.app import metrics
from svc_orders.app.ports import (
    AuditEntry,
    Clock,
    CommandKind,
    ExchangePort,
    FamilyHook,
    FundsPort,
    MarketPort,
    OrderStore,
    ReportEnvelope,
)
from svc_orders.app.reports import ReportProcessor
from svc_orders.domain import state_machine
from svc_orders.domain.model import Actor, ExchangeReport, ExchangeStatus, Order, Status
from svc_runtime import aio, context
from svc_runtime.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)


@dataclass
class Sweeper:
    store: OrderStore
    funds: FundsPort
    exchange: ExchangePort
    market: MarketPort
    reports: ReportProcessor
    clock: Clock
    # Brackets and OCO groups: an OCO's stop-loss is recorded with its target's acceptance.
    family: FamilyHook | None = None
    stuck_after: float = 30.0
    interval: float = 5.0
    batch: int = 100

    async def run(self, stop: asyncio.Event, may_act: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Sweep every `interval` until `stop`. `may_act`: the fence checked before each sweep
        (this replica still holds the sweeper's lease); a sweep it refuses is skipped."""

        async def fenced_sweep() -> None:
            if may_act is None or await may_act():
                await self.sweep_once()

        await aio.every(self.interval, stop, fenced_sweep, what="sweep", log=log)

    async def sweep_once(self) -> int:
        older_than = self.clock.now() - timedelta(seconds=self.stuck_after)
        resolved = 0
        for order in await self.store.stuck_orders(older_than, self.batch):
            with context.bind(
                request_id=f"sweep-{order.order_id}-v{order.version}", actor=Actor.SYSTEM.value
            ):
                try:
                    if order.status is Status.FUNDS_PENDING:
                        outcome = await self._settle_reservation(order)
                    else:
                        outcome = await self._settle_unacknowledged(order)
                except (Unavailable, DeadlineExceeded, FailedPrecondition) as error:
                    # FailedPrecondition: the venue refuses to answer about the order; svc_exec
                    # backs off and flags the order, the sweep goes on with the others.
                    log.info(
                        "sweeper could not ask; will retry",
                        extra={"order_id": order.order_id, "error": str(error)},
                    )
                    outcome = "deferred"
            metrics.SWEPT.labels(outcome).inc()
            if outcome not in ("deferred", "waiting", "skipped"):
                resolved += 1
                log.warning("stuck order resolved", extra={"order_id": order.order_id, "outcome": outcome})
        return resolved

    def _audit(self, order: Order, detail: str) -> AuditEntry:
        return AuditEntry(
            action="SWEEP",
            actor=Actor.SYSTEM.value,
            request_id=order.request_id,
            client_ip=order.client_ip,
            snapshot=self.market.cached_snapshot(order.symbol),
            detail=detail,
        )

    async def _settle_reservation(self, order: Order) -> str:
        async with self.store.unit_of_work() as uow:
            current = await uow.lock_order(order.user_id, order.order_id, skip_locked=True)
            if current is None or current.status is not Status.FUNDS_PENDING:
                return "skipped"  # being placed right now, or already settled
            if await self.funds.block_active(current.user_id, current.order_id):
                transition = state_machine.accept(current, self.clock.now())
                await uow.save(
                    transition,
                    self._audit(current, "funds were blocked; order sent on"),
                    command=CommandKind.NEW,
                )
                if self.family is not None:
                    await self.family.after_change(uow, transition)
                outcome = "accepted"
            else:
                transition = state_machine.broker_reject(
                    current, "the broker could not confirm the funds block", self.clock.now()
                )
                await uow.save(transition, self._audit(current, "no funds block; order rejected"))
                outcome = "rejected"
            await uow.commit()
        return outcome

    async def _settle_unacknowledged(self, order: Order) -> str:
        if await self.store.command_queued(order.order_id):
            return "waiting"  # the relay has not published it yet
        answer = await self.exchange.order_status(order.order_id)
        report = answer.report
        if report is not None and not _refused_unfilled(report):
            if not report.exec_id:
                report = replace(report, exec_id=new_id("status"))
            await self.reports.apply(
                [
                    ReportEnvelope(
                        report=report,
                        order_id=order.order_id,
                        user_id=order.user_id,
                        request_id=order.request_id,
                    )
                ]
            )
            # The exchange has it but the broker missed its reports: have them replayed.
            await self.exchange.request_reconciliation()
            return "reconciled"
        if not answer.never_sent and not await self.exchange.commands_drained():
            return "waiting"  # the command may still be on its way to the executor
        async with self.store.unit_of_work() as uow:
            current = await uow.lock_order(order.user_id, order.order_id, skip_locked=True)
            if (
                current is None
                or current.status is not Status.PENDING_EXCHANGE
                or current.version != order.version
            ):
                return "skipped"
            transition = state_machine.broker_reject(
                current, "the exchange never received the order", self.clock.now()
            )
            await uow.save(transition, self._audit(current, "unknown to the exchange; order rejected"))
            await uow.commit()
        return "rejected"


def _refused_unfilled(report: ExchangeReport) -> bool:
    """The exchange knows the order only as rejected, with nothing filled: the broker
    rejects it too and releases the funds itself."""
    return report.ord_status is ExchangeStatus.REJECTED and report.cumulative_quantity == 0
