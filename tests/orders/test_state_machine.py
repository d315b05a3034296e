"""The order state machine, pure: every transition the OMS relies on."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from svc_orders.domain import state_machine as sm
from svc_orders.domain.model import (
    TERMINAL,
    EventType,
    ExchangeReport,
    ExchangeStatus,
    ExecType,
    Leg,
    Order,
    OrderType,
    Product,
    Side,
    Status,
    TimeInForce,
)
from svc_orders.domain.validation import Modification
from svc_runtime.errors import FailedPrecondition

NOW = datetime(2026, 1, 17, 10, 45, tzinfo=UTC)


def order(**changes: object) -> Order:
    base = Order(
        order_id="ord_1",
        user_id="u_1",
        client_order_id="k1",
        fingerprint="f",
        symbol="INFY",
        side=Side.BUY,
        type=OrderType.LIMIT,
        time_in_force=TimeInForce.DAY,
        product=Product.CNC,
        quantity=10,
        limit_price=Decimal("1500.00"),
        stop_price=None,
        protection_price=None,
        status=Status.OPEN,
        create_time=NOW,
        update_time=NOW,
        version=2,
        exchange_order_id="X1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def report(exec_type: ExecType, **fields: object) -> ExchangeReport:
    return ExchangeReport(exec_id=str(fields.pop("exec_id", "e1")), exec_type=exec_type, **fields)  # type: ignore[arg-type]


def fill(qty: int, price: str, cum: int, exec_id: str = "f1") -> ExchangeReport:
    return report(
        ExecType.TRADE,
        exec_id=exec_id,
        last_quantity=qty,
        last_price=Decimal(price),
        cumulative_quantity=cum,
    )


def test_table_covers_every_status_and_terminals_accept_only_fills() -> None:
    assert set(sm.TRANSITIONS) == set(Status)
    for status in TERMINAL:
        assert set(sm.TRANSITIONS[status]) == {sm.Trigger.TRADE}
    assert set(sm.EVENTS) == set(sm.Trigger)


def test_accept_moves_funds_pending_to_pending_exchange_with_version_one() -> None:
    t = sm.accept(order(status=Status.FUNDS_PENDING, version=0, exchange_order_id=""), NOW)
    assert (t.after.status, t.after.version, t.event) == (Status.PENDING_EXCHANGE, 1, EventType.ACCEPTED)
    with pytest.raises(FailedPrecondition):
        sm.accept(order(status=Status.OPEN), NOW)


def test_new_then_partial_then_full_fill_with_exact_average_price() -> None:
    o = order(status=Status.PENDING_EXCHANGE, version=1, exchange_order_id="")
    t1 = sm.apply_report(o, report(ExecType.NEW, exchange_order_id="X9"), NOW)
    assert (t1.after.status, t1.after.exchange_order_id, t1.after.version) == (Status.OPEN, "X9", 2)
    t2 = sm.apply_report(t1.after, fill(4, "1500.05", 4), NOW)
    assert (t2.after.status, t2.after.filled_quantity, t2.after.leaves_quantity) == (
        Status.PARTIALLY_FILLED,
        4,
        6,
    )
    assert t2.fill is not None and t2.fill.cumulative_quantity == 4
    t3 = sm.apply_report(t2.after, fill(6, "1499.95", 10, "f2"), NOW)
    assert (t3.after.status, t3.after.filled_quantity, t3.after.leaves_quantity) == (Status.FILLED, 10, 0)
    # (4 × 1500.05 + 6 × 1499.95) / 10 = 1499.99
    assert t3.after.average_price == Decimal("1499.99")
    assert t3.after.version == 4 and t3.event is EventType.FILLED


def test_average_price_keeps_four_places_when_not_exact() -> None:
    o = order()
    t = sm.apply_report(o, fill(1, "100.00", 1), NOW)
    t = sm.apply_report(t.after, fill(2, "100.05", 3, "f2"), NOW)
    assert t.after.average_price == Decimal("100.0333")


def test_fill_arriving_before_the_acknowledgement_is_applied_and_the_late_ack_changes_nothing() -> None:
    o = order(status=Status.PENDING_EXCHANGE, version=1, exchange_order_id="")
    t1 = sm.apply_report(o, fill(10, "1500", 10), NOW)
    assert t1.after.status is Status.FILLED
    late_new = sm.apply_report(t1.after, report(ExecType.NEW, exec_id="n1", exchange_order_id="X1"), NOW)
    assert not late_new.changed and late_new.anomaly


def test_out_of_order_fills_sum_correctly_and_finish_filled() -> None:
    o = order()
    second = sm.apply_report(o, fill(6, "1500", 10, "f2"), NOW)
    assert second.after.status is Status.PARTIALLY_FILLED and second.after.filled_quantity == 6
    assert second.anomaly  # the exchange's cumulative is ahead of what is recorded
    first = sm.apply_report(second.after, fill(4, "1500", 4, "f1"), NOW)
    assert first.after.status is Status.FILLED and first.after.filled_quantity == 10


def test_a_fill_beyond_the_quantity_waits_for_the_report_it_depends_on() -> None:
    with pytest.raises(sm.ReportNotApplicable):
        sm.apply_report(order(filled_quantity=8, status=Status.PARTIALLY_FILLED), fill(5, "1500", 13), NOW)


def test_cancel_goes_pending_then_cancelled_only_when_the_exchange_confirms() -> None:
    t1 = sm.request_cancel(order(), "c1", NOW)
    assert t1.after.status is Status.PENDING_CANCEL and t1.event is EventType.CANCEL_REQUESTED
    again = sm.request_cancel(t1.after, "c2", NOW)
    assert not again.changed
    t2 = sm.apply_report(t1.after, report(ExecType.PENDING_CANCEL), NOW)
    assert t2.after.status is Status.PENDING_CANCEL and not t2.changed
    t3 = sm.apply_report(t1.after, report(ExecType.CANCELED, text="user cancel"), NOW)
    assert t3.after.status is Status.CANCELLED and t3.after.leaves_quantity == 0
    assert t3.after.status_reason == "user cancel" and t3.after.pending is None


def test_fills_after_a_cancel_request_are_applied() -> None:
    pending = sm.request_cancel(order(), "c1", NOW).after
    t = sm.apply_report(pending, fill(3, "1500", 3), NOW)
    assert t.after.status is Status.PENDING_CANCEL and t.after.filled_quantity == 3
    assert t.after.resume_status is Status.PARTIALLY_FILLED
    refused = sm.apply_report(t.after, report(ExecType.CANCEL_REJECTED, exec_id="r1", text="too late"), NOW)
    assert refused.after.status is Status.PARTIALLY_FILLED and refused.event is EventType.AMEND_REJECTED
    full = sm.apply_report(pending, fill(10, "1500", 10), NOW)
    assert full.after.status is Status.FILLED


def test_a_late_fill_on_a_cancelled_order_is_still_recorded() -> None:
    cancelled = order(status=Status.CANCELLED, filled_quantity=2, filled_value=Decimal(3000))
    t = sm.apply_report(cancelled, fill(3, "1500", 5), NOW)
    assert t.after.status is Status.CANCELLED and t.after.filled_quantity == 5 and t.fill is not None


def test_cancel_of_a_terminal_order_is_a_failed_precondition() -> None:
    for status in TERMINAL:
        with pytest.raises(FailedPrecondition) as err:
            sm.request_cancel(order(status=status), "c1", NOW)
        assert err.value.reason == "ORDER_NOT_CANCELLABLE"


def test_cancel_refused_before_the_acknowledgement_returns_to_pending_exchange() -> None:
    o = order(status=Status.PENDING_EXCHANGE, exchange_order_id="")
    pending = sm.request_cancel(o, "c1", NOW).after
    back = sm.apply_report(pending, report(ExecType.CANCEL_REJECTED), NOW)
    assert back.after.status is Status.PENDING_EXCHANGE
    acked = sm.apply_report(pending, report(ExecType.NEW, exchange_order_id="X2"), NOW).after
    assert acked.status is Status.PENDING_CANCEL and acked.resume_status is Status.OPEN


def test_modify_up_is_replaced_without_a_second_adjustment_and_down_adjusts_after_confirmation() -> None:
    o = order()
    up = sm.request_modify(
        o, Modification(20, Decimal("1500.00"), None), None, "m1", NOW, block_raised=True
    ).after
    assert up.status is Status.PENDING_REPLACE
    done = sm.apply_report(up, report(ExecType.REPLACED, order_quantity=20), NOW)
    assert (done.after.status, done.after.quantity, done.funds_action) == (Status.OPEN, 20, None)
    assert done.event is EventType.MODIFIED

    down = sm.request_modify(
        o, Modification(10, Decimal("1400.00"), None), None, "m2", NOW, block_raised=False
    ).after
    confirmed = sm.apply_report(down, report(ExecType.REPLACED, order_quantity=10), NOW)
    assert confirmed.after.limit_price == Decimal("1400.00")
    action = confirmed.funds_action
    assert action is not None and (action.kind, action.quantity, action.price) == (
        "ADJUST",
        10,
        Decimal("1400.00"),
    )


def test_modify_refused_after_raising_the_block_lowers_it_back() -> None:
    up = sm.request_modify(
        order(), Modification(20, Decimal("1500.00"), None), None, "m1", NOW, block_raised=True
    ).after
    refused = sm.apply_report(up, report(ExecType.CANCEL_REJECTED), NOW)
    assert refused.after.status is Status.OPEN and refused.after.quantity == 10
    action = refused.funds_action
    assert action is not None and (action.kind, action.quantity, action.price) == (
        "ADJUST",
        10,
        Decimal("1500.00"),
    )


def test_modify_is_refused_before_the_exchange_acknowledges_and_while_a_cancel_is_pending() -> None:
    mod = Modification(20, Decimal("1500.00"), None)
    for status in (Status.PENDING_EXCHANGE, Status.PENDING_CANCEL, Status.FILLED, Status.FUNDS_PENDING):
        with pytest.raises(FailedPrecondition):
            sm.request_modify(order(status=status), mod, None, "m", NOW, block_raised=False)


def test_stop_orders_wait_for_their_trigger() -> None:
    stop = order(
        type=OrderType.STOP, limit_price=None, stop_price=Decimal("1600"), status=Status.PENDING_EXCHANGE
    )
    waiting = sm.apply_report(stop, report(ExecType.NEW, exchange_order_id="X3"), NOW).after
    assert waiting.status is Status.TRIGGER_PENDING
    live = sm.apply_report(waiting, report(ExecType.TRIGGERED, exec_id="t1"), NOW)
    assert live.after.status is Status.OPEN and live.event is EventType.TRIGGERED


def test_broker_reject_releases_the_block_and_is_only_for_orders_the_exchange_never_took() -> None:
    t = sm.broker_reject(order(status=Status.PENDING_EXCHANGE, exchange_order_id=""), "lost", NOW)
    assert t.after.status is Status.REJECTED and t.funds_action is not None
    assert t.funds_action.kind == "RELEASE"
    with pytest.raises(FailedPrecondition):
        sm.broker_reject(order(status=Status.OPEN), "no", NOW)


def test_status_reports_acknowledge_but_never_invent_fills() -> None:
    o = order(status=Status.PENDING_EXCHANGE, exchange_order_id="")
    t = sm.apply_report(
        o,
        report(
            ExecType.ORDER_STATUS,
            ord_status=ExchangeStatus.PARTIALLY_FILLED,
            cumulative_quantity=4,
            exchange_order_id="X5",
        ),
        NOW,
    )
    assert t.after.status is Status.OPEN and t.after.filled_quantity == 0 and t.anomaly
    gone = sm.apply_report(o, report(ExecType.ORDER_STATUS, ord_status=ExchangeStatus.CANCELED), NOW)
    assert gone.after.status is Status.CANCELLED


def test_reports_not_in_the_table_are_ignored_without_a_new_version() -> None:
    t = sm.apply_report(order(status=Status.FILLED, filled_quantity=10), report(ExecType.CANCELED), NOW)
    assert not t.changed and t.event is None and "ignored" in t.anomaly


def test_a_fill_for_an_order_not_yet_accepted_waits() -> None:
    with pytest.raises(sm.ReportNotApplicable):
        sm.apply_report(order(status=Status.FUNDS_PENDING), fill(1, "1500", 1), NOW)


# --- contingent orders ------------------------------------------------------------------------
def test_every_oco_withdraw_edge_says_why_it_exists() -> None:
    edges = {(status, trigger) for status, targets in sm.TRANSITIONS.items() for trigger in targets}
    sibling_edges = {edge for edge in edges if edge[1] is sm.Trigger.OCO_WITHDRAW}
    assert sibling_edges, "OCO_WITHDRAW has no edge"
    assert sibling_edges <= set(sm.EDGE_REASONS)
    assert set(sm.EDGE_REASONS) <= edges, "a reason for an edge the table does not have"


def test_a_working_leg_whose_sibling_filled_waits_for_its_cancel() -> None:
    leg = order(
        status=Status.TRIGGER_PENDING, type=OrderType.STOP, version=2, leg=Leg.STOP_LOSS, oco_group="ord_t"
    )
    t = sm.withdraw_sibling(leg, "ord_t", NOW)
    assert (t.after.status, t.after.version, t.event) == (
        Status.PENDING_CANCEL,
        3,
        EventType.CANCEL_REQUESTED,
    )
    assert t.after.pending is not None and t.after.pending.kind == "CANCEL"
    assert t.after.status_reason == "OCO: a sibling leg filled"
    # Cancelled at the exchange, it keeps saying why; a refused cancel brings it back.
    cancelled = sm.apply_report(t.after, report(ExecType.CANCELED, text="cancelled on request"), NOW).after
    assert (cancelled.status, cancelled.status_reason) == (Status.CANCELLED, "OCO: a sibling leg filled")
    assert (
        sm.apply_report(t.after, report(ExecType.CANCEL_REJECTED), NOW).after.status is Status.TRIGGER_PENDING
    )


def test_a_leg_never_sent_is_cancelled_at_once_and_one_already_over_is_left_alone() -> None:
    waiting = order(status=Status.FUNDS_PENDING, leg=Leg.TARGET, oco_group="ord_t")
    t = sm.withdraw_sibling(waiting, "ord_s", NOW)
    assert t.after.status is Status.CANCELLED
    assert t.funds_action is not None and t.funds_action.kind == "RELEASE"  # it may have got its block
    done = order(status=Status.FILLED, filled_quantity=10, leg=Leg.TARGET, oco_group="ord_t")
    assert not sm.withdraw_sibling(done, "ord_s", NOW).changed
    cancelling = order(status=Status.PENDING_CANCEL, leg=Leg.TARGET, oco_group="ord_t")
    assert not sm.withdraw_sibling(cancelling, "ord_s", NOW).changed


def test_an_oco_group_is_oversold_only_by_what_its_legs_sold_beyond_the_targets_shares() -> None:
    from svc_orders.domain.contingent import close_out_key, oversold

    target = order(order_id="t", leg=Leg.TARGET, oco_group="t", side=Side.SELL, quantity=10)
    stop = order(order_id="s", leg=Leg.STOP_LOSS, oco_group="t", side=Side.SELL, quantity=10)
    assert oversold([replace(target, filled_quantity=10), stop]) == 0
    # A partly filled target's block still covers what the stop-loss sells meanwhile.
    assert oversold([replace(target, filled_quantity=4), replace(stop, filled_quantity=6)]) == 0
    assert oversold([replace(target, filled_quantity=4), replace(stop, filled_quantity=10)]) == 4
    assert oversold([replace(target, filled_quantity=10), replace(stop, filled_quantity=10)]) == 10
    assert oversold([replace(stop, filled_quantity=10)]) == 0  # no TARGET: nothing blocked to exceed
    assert close_out_key("t", 4) == "closeout-t-4"
