"""The cross-service audit's I5, pure: what the exchange can answer for is checked, what it
cannot is counted as unverified (never as passed), and a real disagreement is a violation
named order by order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from brokermesh.exchange.v1 import exchange_admin_pb2 as xpb
from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.orders.v1 import orders_pb2 as S
from svc_runtime import reports
from svc_runtime.audit import AuditReport, check_exchange_view, check_venue_answer

SINCE = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def broker(order_id: str, status: int, ended: datetime, filled: int = 0, exchange_id: str = "") -> S.Order:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(ended)
    return S.Order(
        order_id=order_id,
        user_id="u1",
        status=status,
        filled_quantity=filled,
        exchange_order_id=exchange_id if exchange_id else f"X-{order_id}",
        update_time=stamp,
    )


def venue(order_id: str, ord_status: str, filled: int = 0) -> xpb.ExchangeOrder:
    return xpb.ExchangeOrder(exchange_order_id=f"X-{order_id}", ord_status=ord_status, filled_quantity=filled)


def test_orders_the_exchange_holds_are_checked_and_agreeing_ones_pass() -> None:
    violations, unverified = check_exchange_view(
        [broker("a", S.ORDER_STATUS_OPEN, SINCE), broker("b", S.ORDER_STATUS_FILLED, SINCE, filled=5)],
        [venue("a", "0"), venue("b", "2", filled=5)],
        SINCE,
    )
    assert (violations, unverified) == ([], [])


def test_finished_orders_older_than_what_the_exchange_answers_for_are_unverified_not_violations() -> None:
    old = SINCE - timedelta(days=1)
    violations, unverified = check_exchange_view(
        [broker("gone", S.ORDER_STATUS_CANCELLED, old), broker("done", S.ORDER_STATUS_FILLED, old, filled=3)],
        [],
        SINCE,
    )
    assert violations == []
    assert [u[2].split(":")[0] for u in unverified] == ["gone", "done"]
    report = AuditReport(violations=violations, unverified=unverified, checked={"orders": 2})
    assert report.ok and not report.complete
    assert "no violations; unverified: 2 orders" in report.render()
    assert "all invariants hold" not in report.render()
    assert (report.exit_code(), report.exit_code(strict=True)) == (0, 1)


def test_an_order_ended_because_the_venue_no_longer_held_it_is_unverified_not_a_violation() -> None:
    """A venue that lost its book cannot answer for the orders the broker ended because of
    it, however recently they ended; a working order it does not hold is still a violation."""
    later = SINCE + timedelta(minutes=5)
    forgotten = broker("forgotten", S.ORDER_STATUS_CANCELLED, later)
    forgotten.status_reason = f"{reports.NOT_HELD_BY_VENUE} (it denied knowing it twice, 3s apart)"
    violations, unverified = check_exchange_view(
        [
            forgotten,
            broker("cancelled", S.ORDER_STATUS_CANCELLED, later),
            broker("open", S.ORDER_STATUS_OPEN, later),
        ],
        [],
        SINCE,
    )
    assert [v[2].split(":")[0] for v in violations] == ["cancelled", "open"]
    assert [u[2].split(":")[0] for u in unverified] == ["forgotten"]
    assert "ended because the venue no longer held it" in unverified[0][2]


def test_a_real_disagreement_is_always_a_violation_named_by_order() -> None:
    old = SINCE - timedelta(days=1)
    violations, unverified = check_exchange_view(
        [
            # Working at the broker, unknown to the exchange: however old, it must be held.
            broker("lost", S.ORDER_STATUS_OPEN, old),
            # Finished after the exchange's horizon: the exchange should still know it.
            broker("recent", S.ORDER_STATUS_CANCELLED, SINCE + timedelta(minutes=5)),
            # Listed, but the fills or the status differ.
            broker("fills", S.ORDER_STATUS_PARTIALLY_FILLED, old, filled=2),
            broker("status", S.ORDER_STATUS_OPEN, old),
        ],
        [venue("fills", "1", filled=3), venue("status", "4")],
        SINCE,
    )
    assert unverified == []
    named = [v[2].split(":")[0] for v in violations]
    assert named == ["lost", "recent", "fills", "status"]
    report = AuditReport(violations=violations)
    assert (report.exit_code(), report.exit_code(strict=True)) == (1, 1)


def test_without_a_promise_from_the_exchange_a_missing_finished_order_is_unverified() -> None:
    violations, unverified = check_exchange_view([broker("x", S.ORDER_STATUS_EXPIRED, SINCE)], [], None)
    assert (len(violations), len(unverified)) == (0, 1)


def test_a_clean_audit_says_so() -> None:
    report = AuditReport(checked={"orders": 0})
    assert report.complete and report.exit_code(strict=True) == 0
    assert "all invariants hold (I1–I9)" in report.render()


def test_a_venues_status_answer_must_say_working_with_the_same_fills() -> None:
    order = S.Order(order_id="o1", user_id="u1", status=S.ORDER_STATUS_PARTIALLY_FILLED, filled_quantity=4)
    agrees = er.ExecutionReport(ord_status=er.ORD_STATUS_PARTIALLY_FILLED, cumulative_quantity=4)
    assert check_venue_answer(order, agrees) == []
    more_filled = er.ExecutionReport(ord_status=er.ORD_STATUS_PARTIALLY_FILLED, cumulative_quantity=6)
    assert "filled 4 here, 6 at the venue" in check_venue_answer(order, more_filled)[0][2]
    denied = er.ExecutionReport(ord_status=er.ORD_STATUS_REJECTED, text="unknown order")
    assert "ORD_STATUS_REJECTED at the venue (unknown order)" in check_venue_answer(order, denied)[0][2]
