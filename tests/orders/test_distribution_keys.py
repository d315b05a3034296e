"""The OMS's hot path against the distribution keys (docs/deployment.md, "Partitioning by
user"): every statement it issues while orders are placed, acknowledged, filled, cancelled
and listed is read back from pg_stat_statements, and any that reaches a user's rows without
naming the user must be one of the few written down as still to change."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from brokermesh.orders.v1 import orders_pb2
from svc_runtime import db
from tests.orders.conftest import start_oms
from tests.support.distribution import DISTRIBUTED, crossing_tables
from tests.support.infra import SharedInfra, unique_name
from tests.support.replica import Replicated

# Statements that reach every user's rows on purpose: the background workers' scans (the
# sweeper, the funds-action retries, the contingent-leg worker and the trailing stops) walk
# all users' orders; on a distributed schema each runs per shard. Everything else names the
# user. Matched on the start of the statement; docs/deployment.md lists the same.
STILL_CROSSING = {
    "SELECT * FROM orders WHERE status IN": {"orders"},
    "SELECT * FROM funds_actions WHERE next_attempt_at": {"funds_actions"},
    "SELECT DISTINCT oco_group FROM orders WHERE status =": {"orders"},
    "SELECT * FROM orders WHERE status = $2 AND (trail_amount IS NOT NULL": {"orders"},
}


def test_the_checker_tells_a_keyed_statement_from_a_crossing_one() -> None:
    keys = DISTRIBUTED["orders"]
    assert crossing_tables("SELECT * FROM orders WHERE user_id = $1 AND order_id = $2", keys) == set()
    assert crossing_tables("SELECT * FROM orders WHERE order_id = $1", keys) == {"orders"}
    assert crossing_tables("INSERT INTO trades (seq, user_id, order_id) VALUES ($1, $2, $3)", keys) == set()
    assert crossing_tables("INSERT INTO order_requests (order_id, kind) VALUES ($1, $2)", keys) == {
        "order_requests"
    }
    assert crossing_tables("SELECT * FROM trading_controls", keys) == set()
    # PostgreSQL's own foreign-key check, on a key that starts with the user.
    fk_check = (
        'SELECT $3 FROM ONLY "orders"."orders" x WHERE "user_id" OPERATOR(pg_catalog.=) $1 '
        'AND "order_id" OPERATOR(pg_catalog.=) $2 FOR KEY SHARE OF x'
    )
    assert crossing_tables(fk_check, keys) == set()
    assert crossing_tables('SELECT $2 FROM ONLY "orders"."orders" x WHERE "order_id" = $1', keys) == {
        "orders"
    }


# An OMS of its own on a server that records every statement (about 40 s on a busy machine).
@pytest.mark.slow
async def test_the_hot_path_names_the_user_of_every_row_it_reaches(
    infra: SharedInfra, replicated: Replicated, tmp_path: Path
) -> None:
    url, _ = await replicated.database()
    oms = await start_oms(SharedInfra(url, infra.nats_url, None), tmp_path, {}, database_url=url)
    try:
        user = oms.new_user()
        filled = await oms.place(user)
        await oms.ack(filled)
        await oms.fill(filled, 4, "1530.00", 4)
        await oms.fill(filled, 6, "1530.00", 10)
        await oms.wait_status(filled, orders_pb2.ORDER_STATUS_FILLED)
        cancelled = await oms.place(user)
        await oms.stub.CancelOrder(
            orders_pb2.CancelOrderRequest(name=cancelled.name, request_id=unique_name("c"))
        )
        await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{user}"))
        await oms.get(filled)
        conn = await asyncpg.connect(db.asyncpg_dsn(url))
        try:
            queries = [
                r["query"]
                for r in await conn.fetch(
                    "SELECT s.query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                    "WHERE d.datname = current_database()"
                )
            ]
        finally:
            await conn.close()
    finally:
        await oms.stop()

    crossing = {}
    for query in queries:
        tables = crossing_tables(query, DISTRIBUTED["orders"])
        if tables:
            crossing[" ".join(query.split())] = tables
    unexpected = {
        q: t for q, t in crossing.items() if not any(q.startswith(known) for known in STILL_CROSSING)
    }
    assert not unexpected, f"statements that cross the distribution key: {unexpected}"
    # The list stays true: each entry is still seen (drop it once its statement names the user).
    seen = {known for known in STILL_CROSSING for q in crossing if q.startswith(known)}
    assert seen == set(STILL_CROSSING), f"no longer crossing: {set(STILL_CROSSING) - seen}"
    for known, tables in STILL_CROSSING.items():
        assert any(crossing[q] == tables for q in crossing if q.startswith(known)), known
