"""Changes written together, on the real PostgreSQL. A lane of execution reports is claimed
in one statement and written in one, whatever the number of reports, with every fill,
event, outbox row and audit row of each report kept, an order changed twice in a lane
continuing from its first change, and repeats (by exec id, or a fill by its cumulative
quantity) recognised within the lane. Acceptances are written in one statement too, each
NewOrder command queued right after its order's event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from svc_orders.adapters.postgres import SCHEMA, PostgresOrderStore
from svc_orders.app.ports import AuditEntry, CommandKind, ReportEnvelope
from svc_orders.app.reports import ReportProcessor
from svc_orders.domain import state_machine
from svc_orders.domain.model import Order, Status
from svc_runtime import db
from svc_runtime.errors import Aborted
from svc_runtime.messaging import Topology
from tests.orders.statements import Statements
from tests.orders.test_state_machine import order
from tests.unit.orders_fakes import MemoryExchange, MemoryMarket, SteppingClock, report

MIGRATIONS = Path(__file__).parents[2] / "svc_orders" / "adapters" / "migrations"
CLOCK = SteppingClock()
AUDIT = AuditEntry(action="EXCHANGE_REPORT", actor="EXCHANGE", request_id="req")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[tuple[PostgresOrderStore, Statements]]:
    await db.migrate(database_url, SCHEMA, db.RUNTIME_MIGRATIONS, MIGRATIONS)
    statements = Statements()
    pool = await db.create_pool(database_url, SCHEMA, init=statements.watch)
    yield PostgresOrderStore(pool, Topology("t")), statements
    await pool.close()


async def working(store: PostgresOrderStore, order_id: str, user_id: str) -> Order:
    placed = order(
        order_id=order_id,
        user_id=user_id,
        client_order_id=order_id,
        status=Status.PENDING_EXCHANGE,
        version=1,
    )
    async with store.unit_of_work() as uow:
        await uow.insert_order(placed)
        await uow.commit()
    return placed


def fill(exec_id: str, qty: int, cum: int, price: str = "1499.00"):
    return report(
        exec_id,
        "TRADE",
        ord_status="FILLED" if cum == 10 else "PARTIALLY_FILLED",
        last_quantity=qty,
        last_price=Decimal(price),
        cumulative_quantity=cum,
    )


async def test_a_lane_is_one_claim_and_one_write_and_keeps_every_fact(
    store: tuple[PostgresOrderStore, Statements],
) -> None:
    orders, statements = store
    first = await working(orders, "ord_lane_1", "u_lane_a")
    second = await working(orders, "ord_lane_2", "u_lane_b")
    new = report("e-new-1", "NEW", ord_status="NEW", exchange_order_id="X1")
    lane = [
        (first, new),
        (first, fill("e-f4", 4, 4)),
        (second, report("e-new-2", "NEW", ord_status="NEW", exchange_order_id="X2")),
        (first, new),  # the same report again, in the same batch
        (first, fill("e-f4-again", 4, 4)),  # the same fill under another exec id
        (first, fill("e-f6", 6, 10)),
    ]
    processor = ReportProcessor(orders, MemoryMarket(), MemoryExchange(), CLOCK, lanes=1)
    statements.texts.clear()
    await processor.apply([ReportEnvelope(r, o.order_id, o.user_id, "req") for o, r in lane])

    # One claim and one write for the six reports; the fill recognised by its cumulative
    # quantity has its outcome noted apart.
    writes = statements.writes()
    assert len(writes) == 3, writes

    pool = orders.pool
    done = await pool.fetchrow("SELECT * FROM orders WHERE order_id = 'ord_lane_1'")
    v1, v2 = first.version, second.version
    assert (done["status"], done["filled_quantity"], done["version"]) == ("FILLED", 10, v1 + 3)
    assert done["exchange_order_id"] == "X1" and done["filled_value"] == Decimal("14990.0000")
    opened = await pool.fetchrow("SELECT * FROM orders WHERE order_id = 'ord_lane_2'")
    assert (opened["status"], opened["version"]) == ("OPEN", v2 + 1)
    trades = await pool.fetch("SELECT exec_id, cumulative_quantity FROM trades ORDER BY cumulative_quantity")
    assert [(t["exec_id"], t["cumulative_quantity"]) for t in trades] == [("e-f4", 4), ("e-f6", 10)]
    # An event, its outbox row and an audit row per change, in the order of the changes.
    events = await pool.fetch("SELECT order_id, version FROM order_events")
    assert sorted((e["order_id"], e["version"]) for e in events) == [
        ("ord_lane_1", v1 + 1),
        ("ord_lane_1", v1 + 2),
        ("ord_lane_1", v1 + 3),
        ("ord_lane_2", v2 + 1),
    ]
    outboxed = await pool.fetch("SELECT msg_id FROM outbox ORDER BY id")
    by_event = {
        r["event_id"]: (r["order_id"], r["version"])
        for r in await pool.fetch("SELECT event_id, order_id, version FROM order_events")
    }
    assert [by_event[r["msg_id"]] for r in outboxed] == [
        ("ord_lane_1", v1 + 1),
        ("ord_lane_1", v1 + 2),
        ("ord_lane_2", v2 + 1),
        ("ord_lane_1", v1 + 3),
    ]
    audit = await pool.fetch(
        "SELECT order_version, from_status, to_status, exec_id FROM audit_log WHERE order_id = 'ord_lane_1' "
        "ORDER BY order_version"
    )
    assert [(a["from_status"], a["to_status"], a["exec_id"]) for a in audit] == [
        ("PENDING_EXCHANGE", "OPEN", "e-new-1"),
        ("OPEN", "PARTIALLY_FILLED", "e-f4"),
        ("PARTIALLY_FILLED", "FILLED", "e-f6"),
    ]
    outcomes = {
        r["exec_id"]: r["outcome"] for r in await pool.fetch("SELECT exec_id, outcome FROM exec_reports")
    }
    assert outcomes["e-f4-again"] == "duplicate fill" and outcomes["e-f6"] == "applied"


async def test_changes_to_an_order_read_at_an_old_version_write_nothing_at_all(
    store: tuple[PostgresOrderStore, Statements],
) -> None:
    orders, _ = store
    fresh = await working(orders, "ord_lane_3", "u_lane_c")
    stale = await working(orders, "ord_lane_4", "u_lane_c")
    await orders.pool.execute("UPDATE orders SET version = 7 WHERE order_id = 'ord_lane_4'")
    changes = [
        (
            state_machine.apply_report(o, report(f"e-{o.order_id}", "NEW", ord_status="NEW"), CLOCK.now()),
            AUDIT,
        )
        for o in (fresh, stale)
    ]
    with pytest.raises(Aborted) as refused:
        async with orders.unit_of_work() as uow:
            await uow.save_changes(changes)
            await uow.commit()
    assert refused.value.reason == "CONCURRENT_MODIFICATION"
    rows = await orders.pool.fetch("SELECT status FROM orders WHERE user_id = 'u_lane_c'")
    assert {r["status"] for r in rows} == {"PENDING_EXCHANGE"}
    assert await orders.pool.fetchval("SELECT count(*) FROM order_events WHERE user_id = 'u_lane_c'") == 0


async def test_acceptances_written_together_put_each_command_after_its_event(
    store: tuple[PostgresOrderStore, Statements],
) -> None:
    orders, statements = store
    placed = [await working(orders, f"ord_acc_{n}", f"u_acc_{n}") for n in range(3)]
    # As reserved: waiting for funds; accepting them is one write with a NewOrder each.
    await orders.pool.execute("UPDATE orders SET status = 'FUNDS_PENDING' WHERE order_id LIKE 'ord_acc_%'")
    reserved = [replace(o, status=Status.FUNDS_PENDING) for o in placed]
    statements.texts.clear()
    async with orders.unit_of_work() as uow:
        await uow.save_changes(
            [(state_machine.accept(o, CLOCK.now()), AUDIT) for o in reserved], command=CommandKind.NEW
        )
        await uow.commit()
    assert len(statements.writes()) == 1
    rows = await orders.pool.fetch("SELECT msg_id, subject FROM outbox ORDER BY id")
    kinds = [("command" if "command" in r["subject"] else "event") for r in rows]
    assert kinds == ["event", "command"] * 3
    commands = [r["msg_id"] for r in rows if "command" in r["subject"]]
    assert commands == [f"ord_acc_{n}-v2-new" for n in range(3)]
