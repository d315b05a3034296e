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
    ReportClaim,
    ReportEnvelope,
    ReportKey,
    UnitOfWork,
)
from svc_orders.domain import state_machine
from svc_orders.domain.model import Actor, ExchangeReport, ExecType, Order, Transition
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
            lane = _Lane(uow)
            # One claim for the lane; an exec id repeated within it is the first one's duplicate.
            first_of: dict[tuple[str, str], int] = {}
            for index, envelope in enumerate(envelopes):
                first_of.setdefault((envelope.user_id, envelope.report.exec_id), index)
            firsts = list(first_of.values())  # ascending: in the order first seen
            claimed = await uow.claim_reports_and_lock([_key(envelopes[i]) for i in firsts])
            claims = dict(zip(firsts, claimed, strict=True))
            for index, envelope in enumerate(envelopes):
                claim = claims.get(index)
                with context.bind(request_id=envelope.request_id or context.request_id()):
                    outcomes.append(
                        "duplicate" if claim is None else await self._apply_one(lane, envelope, claim)
                    )
            await lane.flush()
            await uow.commit()
        return outcomes

    async def _apply_one(self, lane: _Lane, envelope: ReportEnvelope, claim: ReportClaim) -> str:
        report, uow = envelope.report, lane.uow
        if not claim.claimed:
            return "duplicate"
        order = await lane.current(envelope, claim.order)
        if order is None:  # no such order of this user
            log.error(
                "execution report for an unknown order; kept aside",
                extra={"exec_id": report.exec_id, "order_id": envelope.order_id, "user_id": envelope.user_id},
            )
            await uow.record_unmatched(envelope)
            await uow.note_report_outcome(envelope.user_id, report.exec_id, "unmatched")
            return "unmatched"
        if report.exec_type is ExecType.TRADE and lane.fill_recorded(order.order_id, report, claim):
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
        lane.save(
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
        if self.family is not None and transition.after.in_family:
            # The family's rules read and change its other orders in the database.
            await lane.flush()
            await self.family.after_change(uow, transition)
            lane.reread()
        if (
            report.exec_type is ExecType.ORDER_STATUS
            and report.cumulative_quantity > transition.after.filled_quantity
        ):
            return "behind"
        return "applied"


def _key(envelope: ReportEnvelope) -> ReportKey:
    report = envelope.report
    return ReportKey(
        exec_id=report.exec_id,
        user_id=envelope.user_id,
        order_id=envelope.order_id,
        exec_type=report.exec_type.value,
        cumulative_quantity=report.cumulative_quantity if report.exec_type is ExecType.TRADE else 0,
    )


class _Lane:
    """A lane's changes, written together: each order continues from its last change in the
    lane, and a fill is recognised as recorded by the lane as well as by the database."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._orders: dict[str, Order] = {}  # an order's state after its last change here
        self._fills: set[tuple[str, int]] = set()  # (order, cumulative quantity) recorded here
        self._changes: list[tuple[Transition, AuditEntry]] = []
        self._stale = False  # a family rule wrote orders: read them again

    async def current(self, envelope: ReportEnvelope, claimed: Order | None) -> Order | None:
        """The report's order as this lane left it (None: no such order of this user)."""
        if claimed is None:
            return None
        order = self._orders.get(claimed.order_id)
        if order is None and self._stale:
            order = await self.uow.lock_order(envelope.user_id, envelope.order_id)
            if order is not None:
                self._orders[order.order_id] = order
        return order or claimed

    def fill_recorded(self, order_id: str, report: ExchangeReport, claim: ReportClaim) -> bool:
        return claim.fill_recorded or (order_id, report.cumulative_quantity) in self._fills

    def save(self, transition: Transition, audit: AuditEntry) -> None:
        after = transition.after
        self._orders[after.order_id] = after
        if transition.fill is not None:
            self._fills.add((after.order_id, transition.fill.cumulative_quantity))
        self._changes.append((transition, audit))

    async def flush(self) -> None:
        if self._changes:
            changes, self._changes = self._changes, []
            await self.uow.save_changes(changes)

    def reread(self) -> None:
        self._orders.clear()
        self._stale = True
