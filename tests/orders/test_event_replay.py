"""Replaying a user's order events after a given event, against real PostgreSQL: events of
one user are numbered when written but may commit in another order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from svc_orders.adapters.postgres import SCHEMA, PostgresOrderStore
from svc_orders.app.queries import OrderQueries
from svc_runtime import db
from svc_runtime.messaging import Topology

MIGRATIONS = Path(__file__).parents[2] / "svc_orders" / "adapters" / "migrations"
USER = "usr_replay"
ORDER = "ord_replay"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await db.migrate(database_url, SCHEMA, db.RUNTIME_MIGRATIONS, MIGRATIONS)
    opened = await db.create_pool(database_url, SCHEMA)
    now = datetime.now(UTC)
    await opened.execute(
        "INSERT INTO orders (order_id, user_id, client_order_id, fingerprint, symbol, side, order_type, "
        "time_in_force, product, quantity, status, request_id, create_time, update_time) "
        "VALUES ($1, $2, 'k', 'f', 'INFY', 'BUY', 'MARKET', 'DAY', 'CNC', 1, 'OPEN', 'r', $3, $3)",
        ORDER,
        USER,
        now,
    )
    yield opened
    await opened.close()


async def _write_event(conn: asyncpg.Connection, version: int) -> str:
    event_id = f"evt_v{version}"
    await conn.execute(
        "INSERT INTO order_events (event_id, order_id, user_id, version, event_type, payload, event_time) "
        "VALUES ($1, $2, $3, $4, 'UPDATED', $5, now())",
        event_id,
        ORDER,
        USER,
        version,
        event_id.encode(),
    )
    return event_id


async def _replay(pool: asyncpg.Pool, after: str) -> list[str]:
    queries = OrderQueries(PostgresOrderStore(pool, Topology("t")))
    return [record.event_id async for record in queries.replay(USER, after)]


async def test_an_event_numbered_earlier_but_committed_later_is_replayed(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as seen, pool.acquire() as slow, pool.acquire() as fast:
        await _write_event(seen, 1)
        slow_tx = slow.transaction()
        await slow_tx.start()
        committed = False
        try:
            late = await _write_event(slow, 2)  # numbered first, still running
            resume_from = await _write_event(fast, 3)  # numbered after it, commits first
            # A client sees event 3 and disconnects; event 2 commits while it is away.
            await slow_tx.commit()
            committed = True
        finally:
            if not committed:
                with contextlib.suppress(Exception):
                    await slow_tx.rollback()
        after_reconnect = await _write_event(fast, 4)
    assert await _replay(pool, resume_from) == [late, after_reconnect]


async def test_a_replay_repeats_nothing_that_committed_before_the_event(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first = await _write_event(conn, 1)
        async with conn.transaction():  # two events in one transaction commit together
            await _write_event(conn, 2)
            second_of_pair = await _write_event(conn, 3)
        last = await _write_event(conn, 4)
    assert await _replay(pool, first) == ["evt_v2", second_of_pair, last]
    assert await _replay(pool, second_of_pair) == [last]
    assert await _replay(pool, last) == []
