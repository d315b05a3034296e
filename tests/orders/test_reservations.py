"""Group commit of reservations: placements reserved at the same moment share one
statement (one commit, one WAL flush), and each keeps its own outcome — a replay finds
the first order, a user past the order rate is refused alone. On the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from svc_orders.adapters.postgres import SCHEMA, PostgresOrderStore
from svc_orders.app.ports import Reservation
from svc_orders.domain.model import Order, OrderType, Product, Side, Status, TimeInForce
from svc_orders.domain.risk import RiskLimits
from svc_runtime import db
from svc_runtime.errors import ResourceExhausted
from svc_runtime.messaging import Topology
from tests.orders.statements import Statements

MIGRATIONS = Path(__file__).parents[2] / "svc_orders" / "adapters" / "migrations"
NOW = datetime(2026, 1, 17, 10, 45, tzinfo=UTC)
LIMITS = RiskLimits(orders_per_second=Decimal(1), order_burst=2)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await db.migrate(database_url, SCHEMA, db.RUNTIME_MIGRATIONS, MIGRATIONS)
    opened = await db.create_pool(database_url, SCHEMA)
    yield opened
    await opened.close()


def new_order(n: int, user_id: str, key: str) -> Order:
    return Order(
        order_id=f"ord_{n:04d}",
        user_id=user_id,
        client_order_id=key,
        fingerprint="f",
        symbol="INFY",
        side=Side.BUY,
        type=OrderType.LIMIT,
        time_in_force=TimeInForce.DAY,
        product=Product.CNC,
        quantity=1,
        limit_price=Decimal("1500.00"),
        stop_price=None,
        protection_price=None,
        status=Status.FUNDS_PENDING,
        create_time=NOW,
        update_time=NOW,
    )


async def test_concurrent_reservations_share_a_commit_and_keep_their_own_outcomes(pool: asyncpg.Pool) -> None:
    store = PostgresOrderStore(pool, Topology("t"))
    # 16 users with one order each, one key sent twice, and a user past the order rate
    # (burst 2: the third of its orders is refused).
    orders = [new_order(n, f"u_{n:02d}", "k") for n in range(16)]
    orders.append(new_order(100, "u_00", "k"))  # a replay of u_00's key
    orders += [new_order(200 + n, "u_busy", f"b{n}") for n in range(3)]
    results = await asyncio.gather(*(store.reserve(o, LIMITS) for o in orders), return_exceptions=True)

    created = [r for r in results if isinstance(r, Reservation) and r.created]
    assert {f"ord_{n:04d}" for n in range(1, 16)} <= {r.order.order_id for r in created}
    # The two attempts with u_00's key may be written concurrently: either may win, the
    # other is told of the winner.
    first, replay = results[0], results[16]
    assert isinstance(first, Reservation) and isinstance(replay, Reservation)
    assert first.created != replay.created
    assert first.order.order_id == replay.order.order_id in ("ord_0000", "ord_0100")
    busy = results[-3:]
    assert sum(isinstance(r, Reservation) and r.created for r in busy) == 2
    refused = [r for r in busy if isinstance(r, ResourceExhausted)]
    assert len(refused) == 1 and refused[0].reason == "ORDER_RATE_LIMITED"

    rows = await pool.fetch("SELECT order_id, xmin::text AS xid FROM orders")
    assert len(rows) == len(created)
    # Fewer transactions than orders: those reserved together were committed together.
    assert len({r["xid"] for r in rows}) < len(rows)


async def test_a_reservation_alone_is_written_as_before(pool: asyncpg.Pool) -> None:
    store = PostgresOrderStore(pool, Topology("t"))
    reservation = await store.reserve(new_order(1, "u_alone", "k"), LIMITS)
    assert reservation.created
    again = await store.reserve(new_order(2, "u_alone", "k"), LIMITS)
    assert not again.created and again.order.order_id == "ord_0001"


async def test_reservations_made_together_are_one_statement_per_round_of_distinct_users(
    database_url: str,
) -> None:
    await db.migrate(database_url, SCHEMA, db.RUNTIME_MIGRATIONS, MIGRATIONS)
    statements = Statements()
    watched = await db.create_pool(database_url, SCHEMA, init=statements.watch)
    try:
        store = PostgresOrderStore(watched, Topology("t"))
        # The first two go alone (two batches in flight); the other twelve wait and go
        # together: eleven users in one statement, then u_twice's second order after its first.
        orders = [new_order(300 + n, f"w_{n:02d}", "k") for n in range(12)]
        orders += [new_order(400, "u_twice", "a"), new_order(401, "u_twice", "b")]
        results = await asyncio.gather(*(store.reserve(o, LIMITS) for o in orders))
    finally:
        await watched.close()
    assert all(r.created for r in results)
    assert len(statements.writes()) == 4, statements.writes()
