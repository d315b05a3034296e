"""Execution reports → order state (docs/architecture.md §3, "Place an order", step 10).

A batch of reports is split by order into a few lanes; each lane is applied in one
transaction, the lanes side by side, and the batch is acknowledged only after every lane
committed. A lane holds every report of its orders in stream order, and lanes share no row
(an order's rows are its own), so they cannot deadlock. If a lane fails, the batch is
retried: reports a committed lane already applied are then skipped, because each report is
claimed by its exec id first (a repeat is skipped, however late it comes). A fill is also
recognised by its cumulative quantity, so a fill the exchange reports twice under two ids
is still recorded once.

Why lanes: applying a report is a handful of sequential round trips to PostgreSQL, so one
transaction at a time caps the fill path near the round-trip rate, below the rate at which
orders are placed; lanes let a busy moment's reports overlap their round trips.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from svc_orders.app import metrics
from svc_orders.app.ports import (
    AuditEntry,
    Clock,
    ExchangePort,
    FamilyHook,
    MarketPort,
    OrderStore,
    ReportEnvelope,
    UnitOfWork,
)
from svc_orders.domain import state_machine
from svc_orders.domain.model import Actor, ExecType
from svc_runtime import context

log = logging.getLogger(__name__)


@dataclass
class ReportProcessor:
    store: OrderStore
    market: MarketPort
    exchange: ExchangePort
    clock: Clock
    # Deliveries after which a report that still cannot be applied is parked.
    park_after: int = 10
    # Transactions applying one batch side by side (each holds a database connection).
    lanes: int = 4
    # Brackets and OCO groups: exits created and siblings withdrawn with the fill.
    family: FamilyHook | None = None

    async def apply(self, envelopes: Sequence[ReportEnvelope]) -> None:
        """Apply reports, each order's in stream order. Raises if any lane failed (the
        caller retries; applied reports are skipped then). ReportNotApplicable (a report
        ahead of one it depends on) fails its lane so it is retried later."""
        lanes: list[list[ReportEnvelope]] = [[] for _ in range(max(1, self.lanes))]
        lane_of: dict[str, int] = {}
        for envelope in envelopes:
            lane = lane_of.setdefault(envelope.order_id, len(lane_of) % len(lanes))
            lanes[lane].append(envelope)
        results = await asyncio.gather(
            *(self._apply_lane(lane) for lane in lanes if lane), return_exceptions=True
        )
        outcomes = [outcome for result in results if isinstance(result, list) for outcome in result]
        for outcome in outcomes:
            metrics.REPORTS.labels(outcome).inc()
        if "behind" in outcomes:
            await self.exchange.request_reconciliation()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _apply_lane(self, envelopes: Sequence[ReportEnvelope]) -> list[str]:
        """Apply reports in order in one transaction, all or nothing."""
        outcomes: list[str] = []
        async with self.store.unit_of_work() as uow:
            for envelope in envelopes:
                with context.bind(request_id=envelope.request_id or context.request_id()):
                    outcomes.append(await self._apply_one(uow, envelope))
            await uow.commit()
        return outcomes

    async def _apply_one(self, uow: UnitOfWork, envelope: ReportEnvelope) -> str:
        report = envelope.report
        claim = await uow.claim_report_and_lock(
            report.exec_id,
            envelope.user_id,
            envelope.order_id,
            report.exec_type.value,
            report.cumulative_quantity if report.exec_type is ExecType.TRADE else 0,
        )
        if not claim.claimed:
            return "duplicate"
        order = claim.order
        if order is None:  # no such order of this user
            log.error(
                "execution report for an unknown order; kept aside",
                extra={"exec_id": report.exec_id, "order_id": envelope.order_id, "user_id": envelope.user_id},
            )
            await uow.record_unmatched(envelope)
            await uow.note_report_outcome(envelope.user_id, report.exec_id, "unmatched")
            return "unmatched"
        if claim.fill_recorded:
            log.warning(
                "fill already recorded at this cumulative quantity under another exec id",
                extra={
                    "exec_id": report.exec_id,
                    "order_id": order.order_id,
                    "cum": report.cumulative_quantity,
                },
            )
            await uow.note_report_outcome(envelope.user_id, report.exec_id, "duplicate fill")
            return "duplicate_fill"
        try:
            if report.exec_type is ExecType.NEEDS_ATTENTION:
                # Nothing known to have changed, but the order must not look healthy either.
                log.error(
                    "the executor flags an order as needing attention",
                    extra={"exec_id": report.exec_id, "order_id": order.order_id, "text": report.text},
                )
                transition = state_machine.needs_attention(order, report.text, self.clock.now())
            else:
                transition = state_machine.apply_report(order, report, self.clock.now())
        except state_machine.ReportNotApplicable as error:
            if envelope.delivery < self.park_after:
                raise  # the report it depends on may still come: try again later
            # It never became applicable: keep it for an operator rather than retrying
            # forever or dropping it.
            log.error(
                "execution report could not be applied; parked",
                extra={"exec_id": report.exec_id, "order_id": order.order_id, "error": str(error)},
            )
            await uow.record_unmatched(envelope)
            await uow.note_report_outcome(envelope.user_id, report.exec_id, f"parked: {error}")
            return "parked"
        if transition.anomaly:
            metrics.REPORT_ANOMALIES.inc()
            log.warning(
                "execution report anomaly",
                extra={"exec_id": report.exec_id, "order_id": order.order_id, "anomaly": transition.anomaly},
            )
        if not transition.changed:
            await uow.note_report_outcome(
                envelope.user_id, report.exec_id, f"no change: {transition.anomaly or 'already reflected'}"
            )
            return "no_change"
        await uow.save(
            transition,
            AuditEntry(
                action="EXCHANGE_REPORT",
                actor=Actor.EXCHANGE.value,
                request_id=context.request_id(),
                snapshot=self.market.cached_snapshot(order.symbol),
                exec_id=report.exec_id,
                detail="; ".join(x for x in (report.exec_type.value, report.text, transition.anomaly) if x),
            ),
        )
        metrics.TRANSITIONS.labels(transition.trigger, transition.after.status.value).inc()
        if self.family is not None:
            await self.family.after_change(uow, transition)
        if (
            report.exec_type is ExecType.ORDER_STATUS
            and report.cumulative_quantity > transition.after.filled_quantity
        ):
            return "behind"
        return "applied"
