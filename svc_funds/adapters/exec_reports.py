"""Settlement input: the durable JetStream consumer of execution reports.

Each fetched batch becomes one group of ledger commands, applied in stream order in one
transaction; the consumer acknowledges the batch only after that transaction committed.
A redelivered or republished report is recognized by its exec id (a primary key) and applied
once; a report that cannot be read or attributed is parked (kept, and reported by the audit),
never dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.type.v1 import trading_pb2
from svc_funds.app.engine import LedgerEngine
from svc_funds.domain import operations as ops
from svc_funds.domain.model import Side, check_symbol, trading_day
from svc_runtime import context, reports, service, tracing
from svc_runtime.decimals import parse_decimal
from svc_runtime.errors import InvalidArgument, ServiceError
from svc_runtime.market_clock import MarketClock
from svc_runtime.messaging import MSG_ID_HEADER, DurableConsumer, Topology, request_context_of

log = logging.getLogger(__name__)

DURABLE = "svc_funds_exec_reports"
# Settling takes up to this many reports per fetch, with this many fetch loops at once.
BATCH_SIZE = 500
PULLERS = 2
# A short wait for an empty fetch keeps shutdown prompt; a busy stream is unaffected (a fetch
# returns as soon as messages are there).
FETCH_TIMEOUT = 0.25

REPORTS = Counter("funds_exec_reports_total", "Execution reports consumed, by outcome", ["outcome"])
SETTLEMENT_LAG = Histogram(
    "funds_settlement_lag_seconds",
    "From svc_exec receiving a fill to its settlement committing",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

_SIDES = {trading_pb2.SIDE_BUY: Side.BUY, trading_pb2.SIDE_SELL: Side.SELL}


# ExecType and OrdStatus by name without prefix (EXEC_TYPE_TRADE → TRADE), as
# svc_runtime.reports reads them.
_EXEC_TYPE_NAMES = {value: name.removeprefix("EXEC_TYPE_") for name, value in er.ExecType.items()}
_ORD_STATUS_NAMES = {value: name.removeprefix("ORD_STATUS_") for name, value in er.OrdStatus.items()}


def _settlement_span(report: ops.ExecReport, result: object, traceparent: str, started_ns: int) -> None:
    """The settlement of one report (its batch's transaction, committed), in its trace."""
    with tracing.span(
        "settle execution report",
        parent=traceparent,
        start_ns=started_ns,
        attributes={
            "fix.exec_id": report.exec_id,
            "brokermesh.order_id": report.order_id,
            tracing.REQUEST_ID_ATTRIBUTE: report.request_id,
            "brokermesh.settled": isinstance(result, ops.ReportResult) and bool(result.filled),
        },
    ) as span:
        if isinstance(result, ServiceError):
            span.fail(result.message)


def report_from_message(msg: Msg) -> tuple[ops.ExecReport, float | None]:
    """The settlement view of one message and when svc_exec received it. A message that
    cannot be read becomes a report with a `problem`, to be parked under a stable id."""
    fallback_id = (msg.headers or {}).get(MSG_ID_HEADER) or (
        f"stream-seq-{msg.metadata.sequence.stream}" if msg.metadata else "unknown"
    )
    try:
        report = er.ExecutionReport.FromString(msg.data)
    except Exception:
        unreadable = ops.ExecReport(
            fallback_id,
            "",
            "",
            "",
            None,
            0,
            None,
            0,
            None,
            datetime.now(UTC),
            problem="unreadable message",
            raw=msg.data,
        )
        return unreadable, None
    received = (
        report.receive_time.ToDatetime(tzinfo=UTC).timestamp() if report.HasField("receive_time") else None
    )
    return report_from_proto(report, fallback_id, raw=msg.data), received


def report_from_proto(
    report: er.ExecutionReport, fallback_id: str = "", *, raw: bytes = b""
) -> ops.ExecReport:
    problem = ""
    exec_id = report.exec_id or fallback_id
    if not report.exec_id:
        problem = "the report has no exec id"
    is_fill = report.exec_type == er.EXEC_TYPE_TRADE and report.last_quantity > 0
    price = None
    if is_fill:
        try:
            price = parse_decimal(report.last_price.value, field="last_price", max_places=2, positive=True)
        except InvalidArgument as error:
            problem = problem or f"bad fill price {report.last_price.value!r}: {error.message}"
    symbol = report.symbol
    try:
        symbol = check_symbol(report.symbol) if report.symbol else ""
    except ServiceError:
        problem = problem or f"bad symbol {report.symbol!r}"
    if report.exec_type == er.EXEC_TYPE_TRADE and report.last_quantity < 0:
        problem = problem or f"negative fill quantity {report.last_quantity}"
    # Whether the order is over, read exactly as svc_orders reads it: a cancel reject never
    # is, whatever OrdStatus it carries.
    terminal = reports.read(
        _EXEC_TYPE_NAMES.get(report.exec_type, ""), _ORD_STATUS_NAMES.get(report.ord_status, "")
    ).final
    executed_at = (
        report.transact_time.ToDatetime(tzinfo=UTC)
        if report.HasField("transact_time")
        else report.receive_time.ToDatetime(tzinfo=UTC)
        if report.HasField("receive_time")
        else datetime.now(UTC)
    )
    return ops.ExecReport(
        exec_id=exec_id,
        order_id=report.order_id,
        user_id=report.user_id,
        symbol=symbol,
        side=_SIDES.get(report.side),
        fill_quantity=report.last_quantity if is_fill else 0,
        fill_price=price,
        cumulative_quantity=report.cumulative_quantity,
        terminal=terminal,
        executed_at=executed_at,
        request_id=report.request_id,
        problem=problem,
        raw=raw if problem else b"",
    )


class ExecReportConsumer:
    """`pullers` fetch loops on the one durable consumer, so that one batch can be fetched
    and acknowledged while another commits. Batches may then commit out of stream order,
    which settlement tolerates by design: fills add up commutatively, and a block waits for
    every fill up to the exchange's final cumulative quantity before it is released."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        engine: LedgerEngine,
        *,
        batch_size: int = BATCH_SIZE,
        pullers: int = PULLERS,
        market: MarketClock | None = None,
    ) -> None:
        self.engine = engine
        # A fill's trading day is the market's date when it executed (a fast clock's in
        # tests and demos); None: the exchange-time date of its transact time.
        self.market = market if market is not None and market.fast else None
        self.consumers = [
            DurableConsumer(
                js,
                stream=topology.exec_reports_stream,
                durable=DURABLE,
                filter_subject=topology.wildcard(topology.exec_report_subject("x")),
                handler=self.handle,
                batch_size=batch_size,
                fetch_timeout=FETCH_TIMEOUT,
                # Settle what has arrived at once instead of waiting for a full batch:
                # batches still grow with the rate, since a fetch takes whatever is waiting.
                linger=False,
                # After a crash, the reports the dead process had fetched come back only
                # when their ack wait expires; a batch commits in well under a second, so
                # 10 s keeps recovery quick without redelivering work still in progress.
                ack_wait=10.0,
            )
            for _ in range(pullers)
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            service.supervise(consumer.run(), name=f"exec-report-puller-{i}")
            for i, consumer in enumerate(self.consumers)
        ]

    async def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle(self, msgs: Sequence[Msg]) -> None:
        commands = []
        receive_times = {}
        traceparents = []
        started_ns = time.time_ns()
        for msg in msgs:
            with context.bind(**vars(request_context_of(msg))):
                report, received = report_from_message(msg)
                if self.market is not None:
                    moment = self.market.at_wall(report.executed_at.timestamp())
                    report = dataclasses.replace(report, trading_day=trading_day(moment))
                commands.append(ops.ApplyReport(report))
                traceparents.append(context.current().traceparent)
                if report.problem:
                    log.error(
                        "unreadable execution report",
                        extra={"exec_id": report.exec_id, "problem": report.problem},
                    )
            if received is not None:
                receive_times[report.exec_id] = received
        results = await self.engine.execute_all(commands)  # raises unless committed
        now = time.time()
        for command, result, traceparent in zip(commands, results, traceparents, strict=True):
            report = command.report
            if traceparent:
                _settlement_span(report, result, traceparent, started_ns)
            if isinstance(result, ServiceError):  # not expected: reports are parked, not refused
                REPORTS.labels("refused").inc()
                log.error(
                    "execution report refused", extra={"exec_id": report.exec_id, "error": result.message}
                )
                continue
            assert isinstance(result, ops.ReportResult)
            outcome = (
                "duplicate"
                if result.duplicate
                else "parked"
                if result.parked
                else "fill"
                if result.filled
                else "release"
                if result.closed
                else "noop"
            )
            REPORTS.labels(outcome).inc()
            if result.parked:
                with context.bind(request_id=report.request_id or context.request_id()):
                    log.error(
                        "execution report parked",
                        extra={
                            "exec_id": report.exec_id,
                            "order_id": report.order_id,
                            "reason": result.parked,
                        },
                    )
            elif result.filled and report.exec_id in receive_times:
                SETTLEMENT_LAG.observe(max(0.0, now - receive_times[report.exec_id]))
