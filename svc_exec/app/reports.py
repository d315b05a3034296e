"""From the exchange to the broker: every report published exactly once, in order.

The FIX adapter hands each incoming report (with its sequence number) to `ReportDesk.inbound`
on the event loop. One task resolves it to the broker's order and folds it into the order's
view, which decides what to publish; a second task publishes in arrival order, pipelined,
retrying with the same ids until JetStream acknowledges; a third persists, every
`persist_interval`, how far the incoming sequence is safely published together with the
views of the orders whose reports went out. After a crash, everything after that point is
resent by the exchange and folded in again (see `svc_exec.domain.sequence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from svc_exec.app.ports import ExecStore, InboundCursor, ReportSink, SessionProgress
from svc_exec.domain.model import (
    Addressed,
    ExecKind,
    Inbound,
    MessageRejected,
    OrdStatus,
    Report,
    VenueIncident,
)
from svc_exec.domain.orders import OrderSnapshot, OrderView
from svc_runtime import aio, context, tracing

log = logging.getLogger(__name__)

# Batches on the wire awaiting JetStream's acks; with batches of up to 500 reports this
# stays under nats-py's limit of pending asynchronous publishes (4,000).
MAX_BATCHES_IN_FLIGHT = 6

# Failures worth waiting out: the database or the network, not a defect.
TRANSIENT = (OSError, ConnectionError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

REPORTS_RECEIVED = Counter("exec_reports_received_total", "Reports received from the exchange", ["kind"])
REPORTS_PUBLISHED = Counter("exec_reports_published_total", "Reports published to JetStream", ["kind"])
REPORTS_SUPPRESSED = Counter(
    "exec_reports_suppressed_total", "Fills not republished: their cumulative quantity was already published"
)
REPORTS_UNROUTABLE = Counter("exec_reports_unroutable_total", "Reports for ClOrdIDs svc_exec never issued")
PUBLISH_FAILURES = Counter(
    "exec_report_publish_failures_total", "Publish attempts that failed and were retried"
)
REPORTS_PENDING = Gauge("exec_reports_pending", "Reports received but not yet acknowledged by JetStream")
PUBLISH_SECONDS = Histogram(
    "exec_report_publish_seconds",
    "Receipt from FIX to JetStream acknowledgement",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RESOLVE_FAILURES = Counter("exec_report_resolve_failures_total", "Reports skipped because of a defect")
VENUE_INCIDENTS = Counter(
    "exec_venue_incidents_total",
    "Rejects sent or received, unmappable reports, refused status requests, orders the venue denies knowing",
    ["venue", "kind", "reason"],
)
SAFE_TARGET = Gauge(
    "exec_fix_safe_next_target_seq", "First incoming sequence number not yet safely published"
)


@dataclass
class _Outgoing:
    seq: int | None
    received: float
    reports: list[Addressed]
    snapshot: OrderSnapshot | None


@dataclass
class MassStatus:
    """Answers to one OrderMassStatusRequest."""

    request_id: str
    reported: int = 0
    inferred: int = 0
    order_ids: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    refused: str = ""


class ReportDesk:
    def __init__(
        self,
        store: ExecStore,
        sink: ReportSink,
        *,
        batch_size: int = 500,
        persist_interval: float = 0.1,
        max_views: int = 200_000,
        fault_publish_delay: float = 0.0,
        forgotten_after: float = 5.0,
    ) -> None:
        self.store = store
        self.sink = sink
        self.cursor: InboundCursor | None = None
        self.batch_size = batch_size
        self.persist_interval = persist_interval
        self.max_views = max_views
        self.fault_publish_delay = fault_publish_delay
        # A venue that denies knowing a working order twice, at least this long apart, no
        # longer holds it: long enough for anything sent before the first question (a New,
        # a replace) to have reached the venue, which takes a session's messages in order.
        self.forgotten_after = forgotten_after
        # Who asks the venue again about an order it denied knowing (the reconciler).
        self.ask_again: Callable[[str], None] = lambda _order_id: None
        self._denied: dict[str, float] = {}  # order id → when the venue first denied it
        self._inbound: asyncio.Queue[tuple[int | None, Inbound, float]] = asyncio.Queue()
        self._outgoing: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self._unconfirmed: asyncio.Queue[tuple[list[_Outgoing], list[Addressed], Awaitable[None] | None]] = (
            asyncio.Queue(MAX_BATCHES_IN_FLIGHT)
        )
        self._views: OrderedDict[str, OrderView] = OrderedDict()
        self._orders_by_cl_ord: OrderedDict[str, str] = OrderedDict()
        # ClOrdID → traceparent of the span that sent it (only while tracing is on).
        self._sent_spans: OrderedDict[str, str] = OrderedDict()
        self._dirty: dict[str, OrderSnapshot] = {}
        self._status_waiters: dict[str, asyncio.Future[Addressed]] = {}
        self._mass_status: dict[str, MassStatus] = {}
        self._answers_to_publish: set[str] = set()
        self._saved: SessionProgress | None = None
        self.published = 0
        self.incidents = 0
        self.venue = ""
        self._in_flight = 0  # received, not yet published
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []

    # --- wiring -----------------------------------------------------------------------------
    def attach(self, cursor: InboundCursor) -> None:
        self.cursor = cursor
        self.venue = cursor.session_key

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._resolve_loop(), name="reports-resolve"),
            asyncio.create_task(self._publish_loop(), name="reports-publish"),
            asyncio.create_task(self._confirm_loop(), name="reports-confirm"),
            asyncio.create_task(self._persist_loop(), name="reports-persist"),
        ]

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Publish what is in hand, persist progress, then stop."""
        await self.drained(drain_timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.persist_now()

    @property
    def pending(self) -> int:
        return self._in_flight

    async def drained(self, timeout: float) -> bool:
        """Wait until every report received so far is published."""
        with contextlib.suppress(TimeoutError):
            await aio.within(self._idle.wait(), timeout)
        return not self._in_flight

    # --- the order views ----------------------------------------------------------------
    def track(self, view: OrderView, cl_ord_id: str) -> None:
        """Called when a command is recorded, before it is sent, so its reports resolve."""
        self._views[view.order_id] = view
        self._views.move_to_end(view.order_id)
        self.map_cl_ord(cl_ord_id, view.order_id)
        self._trim()

    def map_cl_ord(self, cl_ord_id: str, order_id: str) -> None:
        self._orders_by_cl_ord[cl_ord_id] = order_id
        self._orders_by_cl_ord.move_to_end(cl_ord_id)

    def note_sent(self, cl_ord_id: str, traceparent: str) -> None:
        """The venue's reports about `cl_ord_id` continue the trace of the span that sent
        it (kept in memory: after a restart or `max_views` later, a report starts a trace)."""
        if traceparent:
            self._sent_spans[cl_ord_id] = traceparent
            self._sent_spans.move_to_end(cl_ord_id)
            while len(self._sent_spans) > self.max_views:
                self._sent_spans.popitem(last=False)

    def _trim(self) -> None:
        while len(self._views) > self.max_views:
            self._views.popitem(last=False)
        while len(self._orders_by_cl_ord) > 2 * self.max_views:
            self._orders_by_cl_ord.popitem(last=False)

    async def view(self, order_id: str) -> OrderView | None:
        view = self._views.get(order_id)
        if view is None:
            view = await self.store.load_view(order_id)
            if view is not None:
                self._views[order_id] = view
                self._trim()
        else:
            self._views.move_to_end(order_id)
        return view

    async def _view_of(self, cl_ord_id: str) -> OrderView | None:
        order_id = self._orders_by_cl_ord.get(cl_ord_id)
        if order_id is None:
            order_id = await self.store.order_of(cl_ord_id)
            if order_id is None:
                return None
            self.map_cl_ord(cl_ord_id, order_id)
        return await self.view(order_id)

    # --- questions to the exchange --------------------------------------------------------
    def denied(self, order_id: str) -> bool:
        """Whether the venue denied knowing this working order and has not spoken of it since."""
        return order_id in self._denied

    def expect_status(self, request_id: str, cl_ord_id: str) -> asyncio.Future[Addressed]:
        future: asyncio.Future[Addressed] = asyncio.get_running_loop().create_future()
        self._status_waiters[request_id] = future
        self._status_waiters[f"cl:{cl_ord_id}"] = future
        return future

    def publish_answer(self, request_id: str) -> None:
        """The answer to this status request goes to JetStream whatever it says."""
        self._answers_to_publish.add(request_id)

    def forget_status(self, request_id: str, cl_ord_id: str) -> None:
        self._status_waiters.pop(request_id, None)
        self._status_waiters.pop(f"cl:{cl_ord_id}", None)

    def expect_mass_status(self, request_id: str) -> MassStatus:
        waiter = MassStatus(request_id)
        self._mass_status[request_id] = waiter
        return waiter

    def forget_mass_status(self, request_id: str) -> None:
        self._mass_status.pop(request_id, None)

    # --- inbound ------------------------------------------------------------------------------
    def inbound(self, seq: int | None, item: Inbound) -> None:
        """Called on the loop, in FIX sequence order."""
        self._inbound.put_nowait((seq, item, time.monotonic()))
        self._in_flight += 1
        self._idle.clear()
        REPORTS_PENDING.inc()

    async def _resolve_loop(self) -> None:
        while True:
            seq, item, received = await self._inbound.get()
            try:
                outgoing = await self._resolve(seq, item, received)
            except TRANSIENT:
                # A store outage: keep the order of reports, retry this one.
                log.warning("resolving a report failed; retrying", exc_info=True, extra={"seq": seq})
                await asyncio.sleep(0.5)
                self._requeue_front(seq, item, received)
                continue
            except Exception:
                # A defect must not stall every report behind this one. Reconciliation with
                # the exchange recovers what this report would have told.
                RESOLVE_FAILURES.inc()
                log.error("cannot process a report; skipping it", exc_info=True, extra={"seq": seq})
                outgoing = _Outgoing(seq, received, [], None)
            self._outgoing.put_nowait(outgoing)

    def _requeue_front(self, seq: int | None, item: Inbound, received: float) -> None:
        rest = []
        while not self._inbound.empty():
            rest.append(self._inbound.get_nowait())
        self._inbound.put_nowait((seq, item, received))
        for entry in rest:
            self._inbound.put_nowait(entry)

    async def _resolve(self, seq: int | None, item: Inbound, received: float) -> _Outgoing:
        if isinstance(item, MessageRejected):
            return await self._resolve_refusal(seq, item, received)
        if isinstance(item, VenueIncident):
            view = await self._view_of(item.cl_ord_id) if item.cl_ord_id else None
            if view is not None and item.exchange_order_id not in ("", "NONE"):
                # Learnt even from a report refused: the venue's own id for the order is
                # what many venues need to answer a status request about it.
                view.exchange_order_id = view.exchange_order_id or item.exchange_order_id
            flagged = await self.note_incident(item, view, flag=True)
            return _Outgoing(seq, received, flagged, view.snapshot() if view else None)
        report = item
        REPORTS_RECEIVED.labels(report.kind.name).inc()
        if report.kind is ExecKind.ORDER_STATUS and report.mass_status_request_id and not report.cl_ord_id:
            # "Nothing to report": the only answer to this mass status request.
            self._count_mass_status(report, 0, None, last=True)
            return _Outgoing(seq, received, [], None)
        view = await self._view_of(report.cl_ord_id)
        if view is None and report.orig_cl_ord_id:
            view = await self._view_of(report.orig_cl_ord_id)
        if view is None:
            if report.kind is ExecKind.ORDER_STATUS:
                self._count_mass_status(report, 0, None)
                self._answer_status(report, None)
            else:
                REPORTS_UNROUTABLE.inc()
                log.error(
                    "report for a ClOrdID svc_exec never issued",
                    extra={"cl_ord_id": report.cl_ord_id, "exec_id": report.exec_id, "seq": seq},
                )
            return _Outgoing(seq, received, [], None)
        if report.cl_ord_id not in self._orders_by_cl_ord:
            self.map_cl_ord(report.cl_ord_id, view.order_id)
        if report.kind is ExecKind.CANCEL_REJECTED:
            await self.store.mark_refused(report.cl_ord_id)
        denied = report.unknown_order and _believed_at_venue(view)
        if denied and report.kind is ExecKind.ORDER_STATUS:
            return await self._denied_by_venue(seq, report, view, received)
        if report.kind is not ExecKind.CANCEL_REJECTED:
            # The venue spoke of the order as one it holds.
            self._denied.pop(view.order_id, None)
        elif denied:
            # A cancel refused as "unknown order": the venue may have lost the order; ask.
            self.ask_again(view.order_id)
        to_publish = view.apply(report)
        if report.kind is ExecKind.TRADE and not to_publish:
            REPORTS_SUPPRESSED.inc()
        if report.kind is ExecKind.ORDER_STATUS:
            # The OMS asked (an order-status command): it hears the answer even if not news.
            if not to_publish and report.status_request_id in self._answers_to_publish:
                to_publish = [report]
            self._answers_to_publish.discard(report.status_request_id)
            self._count_mass_status(report, max(0, len(to_publish) - 1), view.order_id)
            self._answer_status(report, Addressed(report, view.order_id, view.user_id, view.request_id))
        traceparent = self._report_span(report, view, received) if tracing.enabled() else ""
        addressed = [
            Addressed(r, view.order_id, view.user_id, view.request_id, traceparent) for r in to_publish
        ]
        return _Outgoing(seq, received, addressed, view.snapshot())

    async def _denied_by_venue(
        self, seq: int | None, report: Report, view: OrderView, received: float
    ) -> _Outgoing:
        """The venue denies knowing an order it acknowledged or filled: never dropped. The
        first denial flags the order and has the venue asked again once `forgotten_after`
        has passed; a second denial that late means the venue no longer holds the order,
        which then ends (cancelled, so that its block is released) and is recorded."""
        # Recorded before whoever asked hears the answer: the asker reads `denied` next.
        first = self._denied.setdefault(view.order_id, received)
        self._count_mass_status(report, 0, view.order_id)
        self._answer_status(report, Addressed(report, view.order_id, view.user_id, view.request_id))
        if received - first < self.forgotten_after:
            flagged = await self.note_incident(
                VenueIncident(
                    kind="unknown_order",
                    reason="denied",  # bounded: the venue's words go in the text
                    text=f"the venue denies knowing order {view.order_id} "
                    f"(broker: {view.status.name}, {view.cum_qty} filled): {report.text}",
                    raw=report.raw,
                    cl_ord_id=report.cl_ord_id,
                    ref_msg_type="8",
                ),
                view,
                flag=True,
            )
            if received == first:
                self.ask_again(view.order_id)
            return _Outgoing(seq, received, flagged, view.snapshot())
        del self._denied[view.order_id]
        ended = view.not_held_by_venue(
            report.cl_ord_id, f"it denied knowing it twice, {received - first:.0f}s apart"
        )
        await self.note_incident(
            VenueIncident(
                kind="order_forgotten",
                reason="ended",
                text=f"{ended.text} (broker: {view.cum_qty} of {view.order_qty} filled): {report.text}",
                raw=report.raw,
                cl_ord_id=report.cl_ord_id,
                ref_msg_type="8",
            ),
            view,
            flag=False,
        )
        addressed = [Addressed(ended, view.order_id, view.user_id, view.request_id)]
        return _Outgoing(seq, received, addressed, view.snapshot())

    def _report_span(self, report: Report, view: OrderView, received: float) -> str:
        """A span from the report's receipt to its resolution, continuing the trace of the
        FIX message it answers (by ClOrdID); its traceparent goes out with what is published."""
        parent = self._sent_spans.get(report.cl_ord_id) or self._sent_spans.get(report.orig_cl_ord_id, "")
        with (
            context.bind(request_id=view.request_id),
            tracing.span(
                f"FIX execution report {report.kind.name}",
                kind="consumer",
                parent=parent,
                start_ns=tracing.epoch_ns_of(received),
                attributes={
                    "fix.cl_ord_id": report.cl_ord_id,
                    "fix.exec_id": report.exec_id,
                    "brokermesh.order_id": view.order_id,
                },
            ) as span,
        ):
            return span.traceparent

    async def note_incident(
        self, incident: VenueIncident, view: OrderView | None, *, flag: bool
    ) -> list[Addressed]:
        """Log, count and store an incident; with `flag`, the report that flags its order
        as needing attention (to publish). A replayed incident is logged and counted again
        but stored and published once (its key and report id are stable)."""
        VENUE_INCIDENTS.labels(self.venue, incident.kind, incident.reason).inc()
        order_id = view.order_id if view is not None else ""
        log.error(
            "venue incident",
            extra={
                "venue": self.venue,
                "kind": incident.kind,
                "reason": incident.reason,
                "text": incident.text,
                "raw": incident.raw,
                "cl_ord_id": incident.cl_ord_id,
                "order_id": order_id,
            },
        )
        if await self.store.record_incident(incident.key, self.venue, incident, order_id):
            self.incidents += 1
        if not flag or view is None:
            return []
        report = incident.attention_report(view.order_id)
        return [Addressed(report, view.order_id, view.user_id, view.request_id)]

    async def flag(self, incident: VenueIncident, order_id: str) -> None:
        """Record an incident about an order and publish that it needs attention now (the
        status path escalating a venue that keeps refusing)."""
        view = await self.view(order_id)
        await self.publish_now(await self.note_incident(incident, view, flag=True))

    async def end_not_held(self, order_id: str, incident: VenueIncident) -> Addressed:
        """End a working order the venue does not hold, on an operator's word (`incident`
        says who and why): published now, recorded, and its view persisted as over."""
        view = await self.view(order_id)
        if view is None:
            raise LookupError(order_id)
        ended = view.not_held_by_venue(incident.cl_ord_id, incident.text)
        self._denied.pop(order_id, None)
        await self.note_incident(incident, view, flag=False)
        addressed = Addressed(ended, view.order_id, view.user_id, view.request_id)
        await self.publish_now([addressed])
        self._dirty[order_id] = view.snapshot()
        return addressed

    async def _resolve_refusal(self, seq: int | None, item: MessageRejected, received: float) -> _Outgoing:
        # Refused orders, cancels and replaces become REJECTED / CANCEL_REJECTED reports;
        # refused queries escalate through the status path. Each is an incident too.
        view = await self._view_of(item.cl_ord_id) if item.cl_ord_id else None
        await self.note_incident(item.incident(), view, flag=False)
        if item.ref_msg_type == "AF":
            waiter = self._mass_status.get(item.ref_id)
            if waiter is not None:
                waiter.refused = item.text or "refused"
                waiter.done.set()
            return _Outgoing(seq, received, [], None)
        if item.ref_msg_type == "H":
            future = self._status_waiters.get(item.ref_id) or self._status_waiters.get(f"cl:{item.cl_ord_id}")
            if future is not None and not future.done():
                future.set_exception(LookupError(item.text or "status request refused"))
            return _Outgoing(seq, received, [], None)
        report = item.as_report()
        if report is None:
            return _Outgoing(seq, received, [], None)
        return await self._resolve(seq, report, received)

    def _count_mass_status(
        self, report: Report, inferred: int, order_id: str | None, *, last: bool = False
    ) -> None:
        waiter = (
            self._mass_status.get(report.mass_status_request_id) if report.mass_status_request_id else None
        )
        if waiter is None:
            return
        if report.cl_ord_id and report.cl_ord_id != "NONE":
            waiter.reported += 1
        if order_id is not None:
            waiter.order_ids.add(order_id)
        waiter.inferred += max(0, inferred)
        if (
            last
            or report.last_of_mass_status
            or (report.mass_status_total and waiter.reported >= report.mass_status_total)
        ):
            waiter.done.set()

    def _answer_status(self, report: Report, addressed: Addressed | None) -> None:
        future = None
        if report.status_request_id:
            future = self._status_waiters.get(report.status_request_id)
        if future is None:
            future = self._status_waiters.get(f"cl:{report.cl_ord_id}")
        if future is not None and not future.done():
            if addressed is None:
                addressed = Addressed(report, "", "", "")
            future.set_result(addressed)

    # --- publishing ---------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        """Puts batches on the wire without waiting for the previous batch's acks (up to
        `MAX_BATCHES_IN_FLIGHT`): JetStream's acknowledgements, fsynced, take longer than
        sending, and waiting for each batch would cap the rate at one batch per ack time."""
        while True:
            batch = [await self._outgoing.get()]
            while len(batch) < self.batch_size and not self._outgoing.empty():
                batch.append(self._outgoing.get_nowait())
            if self.fault_publish_delay:
                await asyncio.sleep(self.fault_publish_delay)
            reports = [r for item in batch for r in item.reports]
            acks = await self._send(reports)
            # Bounded: a slow JetStream holds the publisher back here.
            await self._unconfirmed.put((batch, reports, acks))

    async def _send(self, reports: list[Addressed]) -> Awaitable[None] | None:
        attempt = 0
        while reports:
            try:
                return await self.sink.send(reports)
            except Exception:
                attempt += 1
                PUBLISH_FAILURES.inc()
                log.warning("sending reports failed; retrying", exc_info=True, extra={"attempt": attempt})
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
        return None

    async def _confirm_loop(self) -> None:
        """Waits for each batch's acknowledgements in order, then records it as published."""
        while True:
            batch, reports, acks = await self._unconfirmed.get()
            attempt = 0
            while acks is not None:
                try:
                    await acks
                    break
                except Exception:
                    # Unknown outcome: publish again with the same ids; JetStream dedupes.
                    attempt += 1
                    PUBLISH_FAILURES.inc()
                    log.warning(
                        "reports unacknowledged; publishing again", exc_info=True, extra={"attempt": attempt}
                    )
                    await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
                    acks = await self._send(reports)
            self._published(batch, reports)

    def _published(self, batch: list[_Outgoing], reports: list[Addressed]) -> None:
        now = time.monotonic()
        debug = log.isEnabledFor(logging.DEBUG)
        for item in batch:
            for addressed in item.reports:
                REPORTS_PUBLISHED.labels(addressed.report.kind.name).inc()
                if debug:
                    with context.bind(request_id=addressed.request_id or None):  # type: ignore[arg-type]
                        log.debug(
                            "report published",
                            extra={"order_id": addressed.order_id, "exec_id": addressed.msg_id},
                        )
            PUBLISH_SECONDS.observe(now - item.received)
            if item.snapshot is not None:
                self._dirty[item.snapshot.order_id] = item.snapshot
            if item.seq is not None and self.cursor is not None:
                self.cursor.published(item.seq)
        self.published += len(reports)
        self._in_flight -= len(batch)
        if not self._in_flight:
            self._idle.set()
        REPORTS_PENDING.dec(len(batch))

    async def publish_now(self, reports: Sequence[Addressed]) -> None:
        """Publish reports svc_exec makes itself (refused commands), awaiting the acks."""
        if reports:
            await self.sink.publish(reports)
            for addressed in reports:
                REPORTS_PUBLISHED.labels(addressed.report.kind.name).inc()
            self.published += len(reports)

    # --- progress -------------------------------------------------------------------------------
    async def _persist_loop(self) -> None:
        while True:
            await asyncio.sleep(self.persist_interval)
            try:
                await self.persist_now()
            except Exception:
                log.warning("persisting FIX progress failed; will retry", exc_info=True)

    async def persist_now(self) -> None:
        cursor = self.cursor
        if cursor is None:
            return
        # Read the session's expected number first: every message below it is registered.
        expected = cursor.expected_target()
        progress = SessionProgress(cursor.safe_next(expected), cursor.store_created)
        snapshots, self._dirty = self._dirty, {}
        if progress == self._saved and not snapshots:
            return
        try:
            await self.store.save_progress(cursor.session_key, progress, list(snapshots.values()))
        except BaseException:
            self._dirty = {**snapshots, **self._dirty}
            raise
        self._saved = progress
        SAFE_TARGET.set(progress.next_target_seq)


def _believed_at_venue(view: OrderView) -> bool:
    """The broker holds the venue to know this order: acknowledged or filled, not over.
    (An order never acknowledged that the venue does not know is the stuck-order
    sweeper's to settle: the venue never took it.)"""
    return not view.terminal and (view.status is not OrdStatus.PENDING_NEW or view.cum_qty > 0)
