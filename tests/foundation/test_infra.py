"""The infrastructure launchers and shared plumbing against real servers."""

from __future__ import annotations

import asyncio

import asyncpg
import nats
import pytest

from brokermesh.orders.v1 import orders_pb2
from svc_runtime import db, messaging, outbox
from svc_runtime.messaging import DurableConsumer, Topology
from tests.support.infra import SharedInfra


async def test_postgres_is_real_and_migrations_apply_once(database_url: str, tmp_path) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "001_things.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    first = await db.migrate(database_url, "demo", db.RUNTIME_MIGRATIONS, migrations)
    again = await db.migrate(database_url, "demo", db.RUNTIME_MIGRATIONS, migrations)
    assert first == ["000_outbox", "001_things"]
    assert again == []
    conn = await asyncpg.connect(db.asyncpg_dsn(database_url))
    try:
        version = await conn.fetchval("SHOW server_version")
        tables = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'demo'"
            )
        }
    finally:
        await conn.close()
    assert int(version.split(".")[0]) >= 15
    assert {"things", "outbox", "schema_migrations"} <= tables


async def test_outbox_relay_publishes_each_row_once_in_order(
    infra: SharedInfra, database_url: str, namespace: str
) -> None:
    await db.migrate(database_url, "relaytest", db.RUNTIME_MIGRATIONS)
    topology = Topology(namespace)
    nc = await messaging.connect(infra.nats_url, "test")
    js = nc.jetstream()
    await messaging.ensure_streams(js, topology)
    pool = await db.create_pool(database_url, "relaytest")
    try:
        async with pool.acquire() as conn, conn.transaction():
            for i in range(50):
                event = orders_pb2.OrderEvent(event_id=f"ev{i}", type=orders_pb2.ORDER_EVENT_TYPE_ACCEPTED)
                await outbox.add(conn, topology.exec_report_subject("u_1"), event, f"ev{i}")
        # A rolled-back transaction must publish nothing.
        with pytest.raises(RuntimeError):
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add(
                    conn, topology.exec_report_subject("u_1"), orders_pb2.OrderEvent(event_id="x"), "x"
                )
                raise RuntimeError("rollback")
        relay = outbox.OutboxRelay(pool, js, schema="relaytest", batch_size=20)
        runner = asyncio.create_task(relay.run())
        received: list[str] = []

        async def handle(msgs):  # type: ignore[no-untyped-def]
            received.extend(messaging.decode(m, orders_pb2.OrderEvent).event_id for m in msgs)

        consumer = DurableConsumer(
            js,
            stream=topology.exec_reports_stream,
            durable="relaytest",
            filter_subject=topology.wildcard(topology.exec_report_subject("x")),
            handler=handle,
        )
        consuming = asyncio.create_task(consumer.run())
        for _ in range(100):
            if len(received) >= 50:
                break
            await asyncio.sleep(0.05)
        # Republishing the same rows (a relay crash before delete) is deduplicated.
        for i in range(5):
            await messaging.publish(
                js, topology.exec_report_subject("u_1"), orders_pb2.OrderEvent(event_id=f"ev{i}"), f"ev{i}"
            )
        await asyncio.sleep(0.3)
        relay.stop()
        consumer.stop()
        await asyncio.gather(runner, consuming)
        assert received == [f"ev{i}" for i in range(50)]
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await pool.close()
        await nc.close()


async def test_durable_consumer_redelivers_until_the_handler_commits(
    infra: SharedInfra, namespace: str
) -> None:
    topology = Topology(namespace)
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    await messaging.ensure_streams(js, topology)
    for i in range(3):
        await messaging.publish(
            js, topology.exec_report_subject("u_1"), orders_pb2.OrderEvent(event_id=str(i)), f"m{i}"
        )
    attempts: dict[str, int] = {}
    committed: list[str] = []

    async def flaky(msgs):  # type: ignore[no-untyped-def]
        for m in msgs:
            event_id = messaging.decode(m, orders_pb2.OrderEvent).event_id
            attempts[event_id] = attempts.get(event_id, 0) + 1
            if event_id == "1" and attempts[event_id] < 3:
                raise RuntimeError("transient")
        committed.extend(messaging.decode(m, orders_pb2.OrderEvent).event_id for m in msgs)

    consumer = DurableConsumer(
        js,
        stream=topology.exec_reports_stream,
        durable="flaky",
        filter_subject=topology.wildcard(topology.exec_report_subject("x")),
        handler=flaky,
        fetch_timeout=0.2,
    )
    task = asyncio.create_task(consumer.run())
    for _ in range(100):
        if "1" in committed:
            break
        await asyncio.sleep(0.1)
    consumer.stop()
    await task
    await nc.close()
    assert sorted(set(committed)) == ["0", "1", "2"]
    assert attempts["1"] == 3


async def test_outbox_relay_sends_what_no_stream_keeps_on_core_nats(
    infra: SharedInfra, database_url: str, namespace: str
) -> None:
    await db.migrate(database_url, "relaylive", db.RUNTIME_MIGRATIONS)
    topology = Topology(namespace)
    nc = await messaging.connect(infra.nats_url, "test")
    js = nc.jetstream()
    await messaging.ensure_streams(js, topology)
    pool = await db.create_pool(database_url, "relaylive")
    live: list[str] = []

    async def on_live(msg):  # type: ignore[no-untyped-def]
        live.append(messaging.decode(msg, orders_pb2.OrderEvent).event_id)

    await nc.subscribe(topology.wildcard(topology.order_event_subject("x")), cb=on_live)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for i in range(6):
                subject = (
                    topology.order_event_subject("u_1") if i % 2 else topology.exec_report_subject("u_1")
                )
                await outbox.add(conn, subject, orders_pb2.OrderEvent(event_id=f"ev{i}"), f"ev{i}")
        relay = outbox.OutboxRelay(pool, js, schema="relaylive", nc=nc, stored=topology.stored)
        assert await relay.relay_once() == 6
        await nc.flush()
        assert live == ["ev1", "ev3", "ev5"]
        stored = await js.stream_info(topology.exec_reports_stream)
        assert stored.state.messages == 3, "only the rows on a stream's subjects are stored"
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await pool.close()
        await nc.close()


async def test_a_batch_is_handled_as_the_messages_it_carries_and_acknowledged_once(
    infra: SharedInfra, namespace: str
) -> None:
    topology = Topology(namespace)
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    await messaging.ensure_streams(js, topology)
    items = [
        (
            topology.exec_report_subject(f"u_{i}"),
            orders_pb2.OrderEvent(event_id=str(i)).SerializeToString(),
            {messaging.MSG_ID_HEADER: f"m{i}", "Bm-Request-Id": f"req_{i}"},
        )
        for i in range(3)
    ]
    payload, headers = messaging.batch_of(items)
    # The same batch published again (an unknown outcome retried) is stored once.
    for _ in range(2):
        await js.publish(topology.exec_report_batch_subject, payload, headers=headers)
    await messaging.publish(
        js, topology.exec_report_subject("u_3"), orders_pb2.OrderEvent(event_id="3"), "m3"
    )
    attempts: dict[str, int] = {}
    seen: list[tuple[str, str]] = []

    async def flaky(msgs):  # type: ignore[no-untyped-def]
        for m in msgs:
            event_id = messaging.decode(m, orders_pb2.OrderEvent).event_id
            attempts[event_id] = attempts.get(event_id, 0) + 1
            if event_id == "1" and attempts[event_id] < 3:
                raise RuntimeError("transient")
        seen.extend((m.subject, m.headers[messaging.MSG_ID_HEADER]) for m in msgs)

    consumer = DurableConsumer(
        js,
        stream=topology.exec_reports_stream,
        durable="batches",
        filter_subject=topology.wildcard(topology.exec_report_subject("x")),
        handler=flaky,
        fetch_timeout=0.2,
    )
    task = asyncio.create_task(consumer.run())
    for _ in range(100):
        if attempts.get("1", 0) >= 3 and len({s[1] for s in seen}) == 4:
            break
        await asyncio.sleep(0.1)
    consumer.stop()
    await task
    info = await js.consumer_info(topology.exec_reports_stream, "batches")
    stored = await js.stream_info(topology.exec_reports_stream)
    await nc.close()
    assert stored.state.messages == 2
    assert set(seen) == {(topology.exec_report_subject(f"u_{i}"), f"m{i}") for i in range(4)}
    assert info.num_ack_pending == 0, "the batch is acknowledged once all it carries is handled"
    assert attempts["1"] == 3
