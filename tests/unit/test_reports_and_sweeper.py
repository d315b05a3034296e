"""ReportProcessor and Sweeper (svc_orders/app/reports.py, sweeper.py) over in-memory
ports: reports applied once, fills recognised under a second exec id, unknown orders kept
aside, reports ahead of their time retried then parked; stuck orders accepted, rejected,
reconciled or left waiting. Crash and concurrency behaviour stays with tests/orders/."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from svc_orders.app.ports import CommandKind, ReportEnvelope, StatusAnswer
from svc_orders.app.reports import ReportProcessor
from svc_orders.app.sweeper import Sweeper
from svc_orders.domain import state_machine
from svc_orders.domain.model import Status
from tests.unit.orders_fakes import report
from tests.unit.test_order_entry import USER, Desk


class Venue(Desk):
    def __init__(self) -> None:
        super().__init__()
        self.reports = ReportProcessor(self.store, self.market, self.exchange, self.clock, park_after=3)
        self.sweeper = Sweeper(
            self.store, self.funds, self.exchange, self.market, self.reports, self.clock, stuck_after=30
        )

    async def tell(self, order_id: str, *reports_, delivery: int = 1) -> None:
        await self.reports.apply(
            [ReportEnvelope(r, order_id, USER, "req", delivery=delivery) for r in reports_]
        )

    def status(self, order_id: str) -> Status:
        return self.store.book.orders[order_id].status


def fill(exec_id: str, qty: int, cum: int, price: str = "1490.00"):
    return report(
        exec_id,
        "TRADE",
        ord_status="PARTIALLY_FILLED",
        last_quantity=qty,
        last_price=Decimal(price),
        cumulative_quantity=cum,
    )


async def test_new_then_fills_open_and_fill_the_order() -> None:
    venue = Venue()
    order = await venue.place()
    await venue.tell(order.order_id, report("e1", "NEW", ord_status="NEW", exchange_order_id="X1"))
    assert venue.status(order.order_id) is Status.OPEN
    await venue.tell(order.order_id, fill("e2", 4, 4), fill("e3", 6, 10))
    done = venue.store.book.orders[order.order_id]
    assert done.status is Status.FILLED and done.filled_quantity == 10 and done.exchange_order_id == "X1"
    assert [f.exec_id for f in venue.store.book.fills] == ["e2", "e3"]


async def test_a_report_is_applied_once_and_a_fill_once_under_two_ids() -> None:
    venue = Venue()
    order = await venue.place()
    await venue.tell(order.order_id, report("e1", "NEW", ord_status="NEW"), fill("e2", 4, 4))
    await venue.tell(order.order_id, fill("e2", 4, 4))
    await venue.tell(order.order_id, fill("e2-again", 4, 4))
    assert venue.store.book.orders[order.order_id].filled_quantity == 4
    assert venue.store.book.reports["e2-again"] == "duplicate fill"


async def test_a_report_for_an_unknown_order_is_kept_aside() -> None:
    venue = Venue()
    await venue.tell("ord_nope", report("e1", "NEW", ord_status="NEW"))
    assert [e.order_id for e in venue.store.book.unmatched] == ["ord_nope"]
    assert venue.store.book.reports["e1"] == "unmatched"


async def test_a_fill_ahead_of_its_order_is_retried_then_parked() -> None:
    venue = Venue()
    order = await venue.place()
    overfill = fill("e9", 50, 50)
    with pytest.raises(state_machine.ReportNotApplicable):
        await venue.tell(order.order_id, report("e1", "NEW", ord_status="NEW"), overfill)
    # The lane failed as a whole: not even its NEW was kept.
    assert venue.status(order.order_id) is Status.PENDING_EXCHANGE and venue.store.book.reports == {}
    await venue.tell(order.order_id, report("e1", "NEW", ord_status="NEW"), overfill, delivery=3)
    assert venue.store.book.reports["e9"].startswith("parked")
    assert venue.status(order.order_id) is Status.OPEN


async def test_a_cancel_confirmed_ends_the_order_and_leaves_the_block_to_svc_funds() -> None:
    venue = Venue()
    order = await venue.place()
    await venue.tell(order.order_id, report("e1", "NEW", ord_status="NEW"))
    await venue.entry.cancel(USER, order.order_id, "c1")
    await venue.tell(order.order_id, report("e2", "CANCELED", ord_status="CANCELED"))
    cancelled = venue.store.book.orders[order.order_id]
    assert cancelled.status is Status.CANCELLED and cancelled.status_reason == "cancelled at the exchange"
    # svc_funds settles the block from the same report; the OMS asks for nothing.
    assert venue.store.book.funds_actions == []
    assert venue.store.book.events[-1] == (order.order_id, "CANCELLED")


async def test_a_refused_cancel_resumes_the_order() -> None:
    venue = Venue()
    order = await venue.place()
    await venue.tell(order.order_id, report("e1", "NEW", ord_status="NEW"))
    await venue.entry.cancel(USER, order.order_id, "c1")
    await venue.tell(order.order_id, report("e2", "CANCEL_REJECTED", ord_status="NEW", text="too late"))
    assert venue.status(order.order_id) is Status.OPEN


async def _stuck_reservation(venue: Venue) -> str:
    from svc_runtime.errors import Unavailable

    venue.funds.fail_next = Unavailable("svc_funds is down")
    with pytest.raises(Unavailable):
        await venue.place()
    (order_id,) = venue.store.book.orders
    venue.clock.advance(60)
    return order_id


async def test_the_sweeper_accepts_a_reservation_whose_block_exists() -> None:
    venue = Venue()
    order_id = await _stuck_reservation(venue)
    venue.funds.blocks[order_id] = ("CASH", Decimal("14900.00"))
    assert await venue.sweeper.sweep_once() == 1
    assert venue.status(order_id) is Status.PENDING_EXCHANGE
    assert (CommandKind.NEW, order_id) in venue.store.book.commands


async def test_the_sweeper_rejects_a_reservation_without_a_block() -> None:
    venue = Venue()
    order_id = await _stuck_reservation(venue)
    assert await venue.sweeper.sweep_once() == 1
    assert venue.status(order_id) is Status.REJECTED


async def test_the_sweeper_waits_while_commands_may_still_reach_the_exchange() -> None:
    venue = Venue()
    order = await venue.place()
    venue.clock.advance(60)
    venue.exchange.drained = False
    assert await venue.sweeper.sweep_once() == 0
    assert venue.status(order.order_id) is Status.PENDING_EXCHANGE
    venue.exchange.drained = True
    assert await venue.sweeper.sweep_once() == 1
    assert venue.status(order.order_id) is Status.REJECTED


async def test_the_sweeper_reconciles_an_order_the_exchange_knows() -> None:
    venue = Venue()
    order = await venue.place()
    venue.clock.advance(60)
    known = report("", "ORDER_STATUS", ord_status="NEW", order_quantity=10, leaves_quantity=10)
    venue.exchange.answers[order.order_id] = StatusAnswer(report=known)
    assert await venue.sweeper.sweep_once() == 1
    assert venue.status(order.order_id) is Status.OPEN and venue.exchange.reconciliations == 1


async def test_a_young_order_is_not_swept() -> None:
    venue = Venue()
    order = await venue.place()
    venue.clock.advance(5)
    assert await venue.sweeper.sweep_once() == 0
    assert replace(venue.store.book.orders[order.order_id]) == order
