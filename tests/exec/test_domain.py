"""svc_exec's pure logic: which reports get published, sequence progress, command rules."""

from __future__ import annotations

from decimal import Decimal

import pytest

from svc_exec.domain.commands import (
    CancelOrder,
    CommandMeta,
    InvalidCommand,
    NewOrder,
    ReplaceOrder,
    first_cl_ord_id,
    next_cl_ord_id,
    validate,
)
from svc_exec.domain.model import ExecKind, MessageRejected, OrdStatus, OrdType, Report, Side, TimeInForce
from svc_exec.domain.orders import OrderView
from svc_exec.domain.sequence import InboundProgress, resume_target

META = CommandMeta("cmd_1", "ord_1", "u_1", "req_1")


def view(quantity: int = 100) -> OrderView:
    return OrderView("ord_1", "u_1", "INFY", Side.BUY, quantity, Decimal("1500.05"))


def fill(exec_id: str, last: int, cum: int, price: str = "1500", avg: str | None = None) -> Report:
    status = OrdStatus.FILLED if cum == 100 else OrdStatus.PARTIALLY_FILLED
    return Report(
        kind=ExecKind.TRADE,
        exec_id=exec_id,
        cl_ord_id="ord_1",
        status=status,
        order_qty=100,
        last_qty=last,
        last_px=Decimal(price),
        cum_qty=cum,
        leaves_qty=100 - cum,
        avg_px=Decimal(avg or price),
    )


def status_report(status: OrdStatus, cum: int, avg: str = "0") -> Report:
    return Report(
        kind=ExecKind.ORDER_STATUS,
        exec_id="0",
        cl_ord_id="ord_1",
        status=status,
        order_qty=100,
        cum_qty=cum,
        leaves_qty=0 if status.terminal else 100 - cum,
        avg_px=Decimal(avg),
    )


# --- publishing decisions -----------------------------------------------------------------
def test_fills_are_published_once_even_when_replayed() -> None:
    order = view()
    assert order.apply(fill("E1", 40, 40)) == [fill("E1", 40, 40)]
    assert order.apply(fill("E1", 40, 40)) == []  # a resend, PossDup or not
    assert [r.exec_id for r in order.apply(fill("E2", 60, 100))] == ["E2"]
    assert order.apply(fill("E2", 60, 100)) == []
    assert (order.cum_qty, order.status, order.avg_px) == (100, OrdStatus.FILLED, Decimal(1500))


def test_a_missed_fill_is_inferred_from_the_next_one() -> None:
    order = view()
    order.apply(fill("E1", 10, 10, "100"))
    # E2 (20 @ 101) never arrived; E3 carries CumQty 50 and AvgPx over all three fills.
    avg = (Decimal(10 * 100 + 20 * 101 + 20 * 102) / 50).quantize(Decimal("0.0001"))
    out = order.apply(fill("E3", 20, 50, "102", avg=str(avg)))
    assert [(r.exec_id, r.last_qty) for r in out] == [("inferred-ord_1-30", 20), ("E3", 20)]
    assert out[0].last_px == Decimal(101)
    assert order.cum_qty == 50


def test_a_status_answer_reveals_missed_fills_and_a_cancel_once() -> None:
    order = view()
    order.apply(fill("E1", 10, 10, "100"))
    answer = status_report(OrdStatus.CANCELED, 30, avg="100.5")
    out = order.apply(answer)
    kinds = [(r.kind, r.exec_id, r.last_qty) for r in out]
    assert kinds == [
        (ExecKind.ORDER_STATUS, "0", 0),
        (ExecKind.TRADE, "inferred-ord_1-30", 20),
        (ExecKind.CANCELED, "inferred-ord_1-4", 0),
    ]
    # 10 @ 100 + 20 @ x = 30 @ 100.5  ⇒  x = 100.75
    assert out[1].last_px == Decimal("100.75")
    assert order.status is OrdStatus.CANCELED
    # Asking again tells nothing new: nothing to publish.
    assert order.apply(answer) == []
    # The real fill arriving late is not applied a second time.
    assert order.apply(fill("E2", 20, 30, "100.75")) == []


def test_a_late_fill_overlapping_an_inferred_one_publishes_only_the_rest() -> None:
    order = view()
    order.apply(status_report(OrdStatus.PARTIALLY_FILLED, 30, avg="100"))
    out = order.apply(fill("E9", 50, 60, "101", avg="100.5"))
    assert [(r.exec_id, r.last_qty) for r in out] == [("E9.rest", 30)]
    assert order.cum_qty == 60


def test_unknown_order_answers_infer_nothing() -> None:
    order = view()
    answer = Report(
        kind=ExecKind.ORDER_STATUS,
        exec_id="0",
        cl_ord_id="ord_1",
        status=OrdStatus.REJECTED,
        unknown_order=True,
    )
    assert order.apply(answer) == []  # only whoever asked hears it
    assert order.status is OrdStatus.PENDING_NEW


def test_status_answers_are_published_only_when_they_tell_something() -> None:
    order = view()
    working = status_report(OrdStatus.NEW, 0)
    assert order.apply(working) == [working]  # the broker had not heard the order accepted
    assert order.apply(working) == []
    order.apply(fill("E1", 40, 40))
    assert order.apply(status_report(OrdStatus.PARTIALLY_FILLED, 40, avg="1500")) == []


def test_terminal_orders_do_not_come_back_to_life() -> None:
    order = view()
    order.apply(Report(kind=ExecKind.CANCELED, exec_id="E5", cl_ord_id="ord_1.1", status=OrdStatus.CANCELED))
    replayed_new = Report(kind=ExecKind.NEW, exec_id="E1", cl_ord_id="ord_1", status=OrdStatus.NEW)
    assert order.apply(replayed_new) == [replayed_new]  # consumers dedupe it on ExecID
    assert order.status is OrdStatus.CANCELED


def test_replace_changes_quantity_and_price() -> None:
    order = view()
    order.apply(
        Report(
            kind=ExecKind.REPLACED,
            exec_id="E2",
            cl_ord_id="ord_1.1",
            orig_cl_ord_id="ord_1",
            status=OrdStatus.NEW,
            order_qty=150,
            limit_px=Decimal("1499.95"),
        )
    )
    assert (order.order_qty, order.limit_price) == (150, Decimal("1499.95"))


def test_dedup_ids() -> None:
    reject = Report(kind=ExecKind.CANCEL_REJECTED, exec_id="", cl_ord_id="ord_1.2")
    assert reject.msg_id == "cxlrej-ord_1.2"
    assert fill("E7", 1, 1).msg_id == "E7"
    a = status_report(OrdStatus.NEW, 0)
    b = status_report(OrdStatus.PARTIALLY_FILLED, 10)
    assert a.msg_id != b.msg_id  # venues often send ExecID 0 on every status answer


def test_refused_messages_become_rejections() -> None:
    refused_order = MessageRejected("D", "ord_1", "ord_1", "unsupported")
    report = refused_order.as_report()
    assert report is not None and report.kind is ExecKind.REJECTED and "unsupported" in report.text
    refused_cancel = MessageRejected("F", "ord_1.1", "", "")
    assert refused_cancel.as_report().kind is ExecKind.CANCEL_REJECTED  # type: ignore[union-attr]
    assert MessageRejected("AF", "", "msr_1", "").as_report() is None


# --- sequence progress --------------------------------------------------------------------
def test_safe_point_is_the_first_unpublished_message() -> None:
    progress = InboundProgress()
    assert progress.safe_next(expected_target=7) == 7
    for seq in (7, 8, 10):  # 9 was a heartbeat
        progress.received(seq)
    assert progress.safe_next(expected_target=11) == 7
    progress.published(7)
    progress.published(8)
    assert progress.safe_next(expected_target=11) == 10
    progress.published(10)
    assert progress.safe_next(expected_target=12) == 12


def test_resume_target_lowers_only_within_one_store_generation() -> None:
    assert resume_target(100, "gen1", 90, "gen1") == 90
    assert resume_target(100, "gen1", 120, "gen1") == 100  # never above the store
    assert resume_target(5, "gen2", 90, "gen1") == 5  # store reset since: its own numbers
    assert resume_target(5, "gen2", None, None) == 5


# --- commands ------------------------------------------------------------------------------
def new_order(**changes: object) -> NewOrder:
    fields: dict[str, object] = {
        "meta": META,
        "symbol": "INFY",
        "side": Side.BUY,
        "ord_type": OrdType.LIMIT,
        "time_in_force": TimeInForce.DAY,
        "quantity": 10,
        "limit_price": Decimal("1500.05"),
    }
    fields.update(changes)
    return NewOrder(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"symbol": "infy;DROP"}, "symbol"),
        ({"quantity": 0}, "quantity"),
        ({"limit_price": None}, "needs a limit price"),
        ({"limit_price": Decimal("-1")}, "positive"),
        ({"limit_price": Decimal("1500.055")}, "decimals"),
        ({"ord_type": OrdType.MARKET}, "takes no limit price"),
        ({"ord_type": OrdType.STOP_LIMIT}, "needs a stop price"),
    ],
)
def test_invalid_commands_are_refused_with_a_reason(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidCommand, match=reason):
        validate(new_order(**changes))


def test_valid_commands_pass() -> None:
    validate(new_order())
    validate(new_order(ord_type=OrdType.MARKET, limit_price=None))
    validate(new_order(ord_type=OrdType.STOP_LIMIT, stop_price=Decimal("1490")))
    validate(CancelOrder(META, "INFY", Side.BUY, 10))
    replace = ReplaceOrder(META, "INFY", Side.SELL, OrdType.LIMIT, TimeInForce.DAY, 20, Decimal("1"))
    validate(replace)


def test_cl_ord_ids_chain_from_the_order_id() -> None:
    assert first_cl_ord_id("ord_1") == "ord_1" == new_order().cl_ord_id
    assert next_cl_ord_id("ord_1", 2) == "ord_1.2"
