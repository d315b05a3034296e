"""svc_orders and svc_funds read every execution report the same way: an order svc_orders
keeps working is never one whose block svc_funds takes as over, and the other way round."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from brokermesh.exec.v1 import execution_report_pb2 as er
from svc_funds.adapters.exec_reports import report_from_proto
from svc_orders.domain import state_machine as sm
from svc_orders.domain.model import ExchangeReport, ExchangeStatus, ExecType, Status
from svc_runtime import reports
from tests.orders.test_state_machine import order

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
EXEC_TYPES = [t for t in ExecType if t is not ExecType.TRADE]  # a fill's end depends on quantities
STATUSES = list(ExchangeStatus)
WORKING = [Status.OPEN, Status.PENDING_CANCEL, Status.PENDING_REPLACE, Status.TRIGGER_PENDING]


def funds_reads_as_over(exec_type: ExecType, status: ExchangeStatus) -> bool:
    message = er.ExecutionReport(
        exec_id="e1",
        order_id="ord_1",
        user_id="u_1",
        exec_type=er.ExecType.Value(f"EXEC_TYPE_{exec_type.value}"),
        ord_status=0
        if status is ExchangeStatus.UNKNOWN
        else er.OrdStatus.Value(f"ORD_STATUS_{status.value}"),
    )
    return report_from_proto(message).terminal is not None


@pytest.mark.parametrize("before", WORKING)
@pytest.mark.parametrize("exec_type", EXEC_TYPES)
def test_both_services_agree_whether_a_report_ends_a_working_order(
    before: Status, exec_type: ExecType
) -> None:
    for status in STATUSES:
        if exec_type is ExecType.ORDER_STATUS and status is ExchangeStatus.FILLED:
            continue  # both wait for the fills themselves: they arrive as their own reports
        working = order(status=before, resume_status=Status.OPEN if before is not Status.OPEN else None)
        report = ExchangeReport(exec_id="e1", exec_type=exec_type, ord_status=status)
        after = sm.apply_report(working, report, NOW).after.status
        funds_over = funds_reads_as_over(exec_type, status)
        # A report svc_orders ignores in this status leaves the order working: svc_funds
        # must keep its block too.
        assert funds_over == after.terminal, (
            f"{before} + {exec_type}/{status}: svc_orders → {after}, svc_funds takes it as over: {funds_over}"
        )


def test_a_fill_ends_the_order_for_both_only_when_it_leaves_it_filled() -> None:
    for cum, status, over in ((4, ExchangeStatus.PARTIALLY_FILLED, False), (10, ExchangeStatus.FILLED, True)):
        fill = ExchangeReport(
            exec_id="f1",
            exec_type=ExecType.TRADE,
            ord_status=status,
            last_quantity=cum,
            last_price=Decimal("1500.00"),
            cumulative_quantity=cum,
        )
        assert sm.apply_report(order(), fill, NOW).after.status.terminal is over
        assert reports.read("TRADE", status.value).ends_order is over


def test_a_cancel_reject_never_ends_the_order_whatever_status_it_carries() -> None:
    for status in STATUSES:
        assert not reports.read("CANCEL_REJECTED", status.value).ends_order
        assert not funds_reads_as_over(ExecType.CANCEL_REJECTED, status)
