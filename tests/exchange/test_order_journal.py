"""The exchange's order journal, in process: what it keeps, what it forgets, and that a report
never leaves before the change it announces is durable."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from exchange_sim.adapters.order_journal import FileOrderJournal, JournalCorrupt
from exchange_sim.app import messages as m
from exchange_sim.app.order_entry import ExchangeIds, OrderEntry
from exchange_sim.domain import matching as me
from exchange_sim.domain.instruments import Instrument

INFY = Instrument("INFY", "Infosys Ltd", "IT", Decimal("0.05"), 1, Decimal("1500.00"))
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 9, 30, tzinfo=UTC).timestamp()

    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


class Sink:
    def __init__(self, journal_path: Path) -> None:
        self.path = journal_path
        self.sent: list[m.ExecutionReport | m.CancelReject] = []
        self.journal_size_at_send: list[int] = []

    def send_execution_report(self, report: m.ExecutionReport) -> None:
        self.sent.append(report)
        self.journal_size_at_send.append(self.path.stat().st_size)

    def send_cancel_reject(self, reject: m.CancelReject) -> None:
        self.sent.append(reject)


def exchange(path: Path, clock: Clock, boot: str = "B1") -> tuple[OrderEntry, Sink]:
    sink = Sink(path)
    journal = FileOrderJournal(path, retain_seconds=7 * DAY, clock=lambda: clock.now)
    entry = OrderEntry(
        me.MatchingEngine([INFY]),
        sink,
        ExchangeIds(boot),
        clock.moment,
        counterparties=["BROKER"],
        journal=journal,
    )
    entry.restore()
    return entry, sink


def buy(cl: str, price: str = "1500.00", qty: str = "10") -> m.NewOrderRequest:
    return m.NewOrderRequest(cl, "INFY", "1", qty, "2", price=price, account="A")


def test_a_report_leaves_only_after_its_change_is_in_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "orders.journal"
    entry, sink = exchange(path, Clock())
    size = path.stat().st_size
    entry.new_order("BROKER", buy("c1"))
    assert sink.sent and sink.journal_size_at_send[0] > size


def test_working_and_finished_orders_come_back_and_old_finished_ones_are_forgotten(tmp_path: Path) -> None:
    path, clock = tmp_path / "orders.journal", Clock()
    entry, _ = exchange(path, clock)
    started = clock.now
    entry.new_order("BROKER", buy("old-done"))
    entry.cancel("BROKER", m.CancelRequest("old-cxl", "old-done", "INFY", "1"))
    clock.now += 8 * DAY
    entry.new_order("BROKER", buy("working", "1499.00"))
    entry.new_order("BROKER", buy("recent-done", "1498.00"))
    entry.cancel("BROKER", m.CancelRequest("recent-cxl", "recent-done", "INFY", "1"))
    entry.journal.close()  # type: ignore[union-attr]

    again, sink = exchange(path, clock, boot="B2")
    assert {r.cl_ord_id: r.order.status for r in again.orders} == {
        "working": me.NEW,
        "recent-cxl": me.CANCELLED,
    }
    assert again.answers_since == pytest.approx(clock.now - 7 * DAY) and again.answers_since > started
    assert again.engine.depth("INFY", 5)[0] == [(INFY.to_ticks(Decimal("1499.00")), 10, 1)]
    # The forgotten order is unknown now; the kept ones answer as before.
    again.status("BROKER", m.StatusRequest("old-cxl", "INFY", "1", status_request_id="s1"))
    again.status("BROKER", m.StatusRequest("recent-cxl", "INFY", "1", status_request_id="s2"))
    answers = {r.status_request_id: r for r in sink.sent if isinstance(r, m.ExecutionReport)}
    assert (answers["s1"].ord_status, answers["s1"].reject_reason) == (
        m.STATUS_REJECTED,
        m.REJECT_UNKNOWN_ORDER,
    )
    assert answers["s2"].ord_status == m.STATUS_CANCELED and answers["s2"].exchange_order_id.startswith("B1-")


def test_a_torn_last_line_is_dropped_and_a_torn_line_inside_is_corruption(tmp_path: Path) -> None:
    path, clock = tmp_path / "orders.journal", Clock()
    entry, _ = exchange(path, clock)
    entry.new_order("BROKER", buy("kept"))
    entry.journal.close()  # type: ignore[union-attr]
    with path.open("a") as journal:
        journal.write('{"k":"o","exchange_order_id":"B1-9","sess')  # a crash mid-write
    again, _ = exchange(path, clock)
    assert [r.cl_ord_id for r in again.orders] == ["kept"]
    again.journal.close()  # type: ignore[union-attr]

    lines = path.read_text().split("\n")
    path.write_text("\n".join([lines[0], '{"k":"o","trunc', *lines[1:]]))
    with pytest.raises(JournalCorrupt):
        exchange(path, clock)


def test_an_iceberg_comes_back_showing_its_display_quantity(tmp_path: Path) -> None:
    path, clock = tmp_path / "orders.journal", Clock()
    entry, _ = exchange(path, clock)
    request = m.NewOrderRequest("ice", "INFY", "1", "100", "2", price="1500.00", account="A", max_floor="10")
    entry.new_order("BROKER", request)
    assert entry.engine.depth("INFY", 1)[0] == [(30000, 10, 1)]
    entry.journal.close()  # type: ignore[union-attr]
    again, sink = exchange(path, clock, boot="B2")
    assert again.engine.depth("INFY", 1)[0] == [(30000, 10, 1)]
    (restored,) = again.orders
    assert (restored.order.max_floor, restored.order.leaves) == (10, 100)
    again.new_order("BROKER", m.NewOrderRequest("x", "INFY", "2", "15", "2", price="1500.00", account="B"))
    fills = [r for r in sink.sent if isinstance(r, m.ExecutionReport) and r.cl_ord_id == "ice" and r.last_qty]
    assert [(r.last_qty, r.cum, r.leaves, r.max_floor) for r in fills] == [(10, 10, 90, 10), (5, 15, 85, 10)]
