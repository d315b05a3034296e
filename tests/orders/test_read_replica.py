"""Order history from a streaming replica, with read-your-writes: a user who has just placed
or changed an order sees it in their order list even while the replica lags, and everyone
else's pages come from the replica. The replica is a real hot standby (pg_basebackup), made
to lag by pausing its WAL replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from brokermesh.orders.v1 import orders_pb2
from svc_runtime import db
from svc_runtime.replica import ReplicaReads
from tests.orders.conftest import Oms, start_oms
from tests.support.infra import SharedInfra
from tests.support.polling import eventually
from tests.support.replica import Replicated, calls, replay

LIST_ORDERS = "SELECT * FROM orders WHERE ($1::text IS NULL OR user_id = $1)%"


async def _listed(oms: Oms, user: str) -> dict[str, int]:
    reply = await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{user}"), timeout=10)
    return {order.order_id: order.status for order in reply.orders}


@pytest.fixture
async def oms_on_replica(
    infra: SharedInfra, replicated: Replicated, tmp_path: Path
) -> AsyncIterator[tuple[Oms, str]]:
    primary_url, replica_url = await replicated.database()
    env = {
        "BROKERMESH_DATABASE_REPLICA_URL": replica_url,
        # Generous: the machine is shared, and the test decides when the replica lags.
        "BROKERMESH_DATABASE_REPLICA_MAX_LAG_SECONDS": "120",
    }
    oms = await start_oms(
        SharedInfra(primary_url, infra.nats_url, None), tmp_path, env, database_url=primary_url
    )
    yield oms, replica_url
    await replay(replica_url, paused=False)
    await oms.stop()


# An OMS of its own over a primary and its replica.
@pytest.mark.slow
async def test_a_user_sees_their_own_orders_while_the_replica_lags(oms_on_replica: tuple[Oms, str]) -> None:
    oms, replica_url = oms_on_replica
    asha, ravi = oms.new_user(), oms.new_user()
    first = await oms.place(asha)
    assert first.order_id in await _listed(oms, asha)
    ravi_order = await oms.place(ravi)

    # Once the replica has replayed both users' writes, their pages come from it.
    async def from_the_replica() -> bool:
        before = await calls(replica_url, LIST_ORDERS)
        listed = await _listed(oms, ravi)
        return ravi_order.order_id in listed and await calls(replica_url, LIST_ORDERS) > before

    assert await eventually(from_the_replica, timeout=30)

    await replay(replica_url, paused=True)
    second = await oms.place(asha)
    await oms.ack(second)
    await oms.fill(second, 10, "1530.00", 10)
    await oms.wait_status(second, orders_pb2.ORDER_STATUS_FILLED)
    # The replica really lags: it has not got the new order.
    replica = await asyncpg.connect(db.asyncpg_dsn(replica_url))
    try:
        assert (
            await replica.fetchval("SELECT count(*) FROM orders.orders WHERE order_id = $1", second.order_id)
            == 0
        )
    finally:
        await replica.close()

    # asha sees her new order, filled, straight after each write: her reads went to the primary.
    on_replica = await calls(replica_url, LIST_ORDERS)
    assert (await _listed(oms, asha))[second.order_id] == orders_pb2.ORDER_STATUS_FILLED
    assert await calls(replica_url, LIST_ORDERS) == on_replica
    # ravi wrote nothing since: his page still comes from the (lagging) replica.
    assert ravi_order.order_id in await _listed(oms, ravi)
    assert await calls(replica_url, LIST_ORDERS) == on_replica + 1

    # Replay resumes; once the replica has asha's writes, her pages come from it again.
    await replay(replica_url, paused=False)

    async def asha_from_the_replica() -> bool:
        before = await calls(replica_url, LIST_ORDERS)
        listed = await _listed(oms, asha)
        return listed.get(second.order_id) == orders_pb2.ORDER_STATUS_FILLED and (
            await calls(replica_url, LIST_ORDERS) > before
        )

    assert await eventually(asha_from_the_replica, timeout=30)


async def test_a_replica_too_far_behind_serves_nobody(replicated: Replicated) -> None:
    primary_url, replica_url = await replicated.database()
    primary = await db.create_pool(primary_url, "public", min_size=1, max_size=2)
    replica = await db.create_pool(replica_url, "public", min_size=1, max_size=2)
    now = [1000.0]
    reads = ReplicaReads(primary, replica, max_lag=5.0, clock=lambda: now[0])
    try:
        assert reads.pool_for("ravi") is primary  # nothing known about the replica yet
        await eventually(lambda: _sampled(reads), timeout=30)
        assert reads.pool_for("ravi") is replica
        reads.wrote("asha")
        assert reads.pool_for("asha") is primary
        now[0] += 5.5  # no round has caught up since: the replica is over 5 s behind
        assert reads.pool_for("ravi") is primary
        assert reads.pool_for(None) is primary
    finally:
        await primary.close()
        await replica.close()


async def _sampled(reads: ReplicaReads) -> bool:
    await reads.sample()
    return reads.pool_for("ravi") is reads.replica
