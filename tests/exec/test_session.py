"""The FIX session: logon and health, sequence numbers kept across restarts, a message lost
on the wire (gap → ResendRequest → PossDup resend), a report lost for good (gap fill →
reconciliation infers it), reconnects after the exchange goes away."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc
from brokermesh.exec.v1 import execution_report_pb2 as er
from svc_runtime import config, db
from svc_runtime.grpc_client import channel, wait_healthy
from svc_runtime.infra.processes import free_port
from tests.exec.acceptor import ExchangeProcess
from tests.exec.proxy import FixProxy
from tests.exec.support import (
    TRADE,
    data_dir,
    eventually_async,
    exec_log,
    exec_stub,
    session_status,
    wait_logged_on,
)
from tests.support.grpc import as_service
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

SERVICE = "brokermesh.exec.v1.ExecutionService"


async def health(stack) -> int:  # type: ignore[no-untyped-def]
    async with channel(stack.plan.target("svc_exec")) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
        )
        return reply.status


def event_log(stack) -> str:  # type: ignore[no-untyped-def]
    return "".join(p.read_text(errors="replace") for p in (data_dir(stack) / "log").glob("*.event*.log"))


async def test_logon_health_and_reconnect(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    proxy = await FixProxy(exchange.port).start()
    try:
        stack = await start_exec(fix_port=proxy.port)
        status = await session_status(stack)
        assert status.session_id == "FIX.4.4:BROKER->EXCHANGE"
        assert status.logged_on and status.active
        assert status.next_sender_seq_num >= 2 and status.next_target_seq_num >= 2
        assert status.last_receive_time.seconds > 0
        assert await health(stack) == health_pb2.HealthCheckResponse.SERVING

        # The exchange becomes unreachable: the session is down and health says so.
        proxy.refuse = True
        proxy.cut()
        await eventually(lambda: not exchange.is_logged_on(), timeout=30)
        assert not (await session_status(stack)).logged_on
        assert await health(stack) == health_pb2.HealthCheckResponse.NOT_SERVING
        # Tries back off (1, 2, 4 … s between them) instead of coming every second.
        tries_before = proxy.attempts
        await asyncio.sleep(10)
        assert 1 <= proxy.attempts - tries_before <= 6
        assert "FIX reconnect paused" in exec_log(stack)
        # Commands wait for the session instead of failing.
        oms = await oms_for(stack)
        order_id = await oms.new_order()
        proxy.refuse = False
        await wait_logged_on(stack)
        await eventually(lambda: oms.filled(order_id) == 10)
        assert await health(stack) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await proxy.stop()


async def test_restart_keeps_sequence_numbers(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    stack = await start_exec()
    oms = await oms_for(stack)
    first = [await oms.new_order() for _ in range(5)]
    await eventually(lambda: all(oms.filled(o) == 10 for o in first))
    before = await session_status(stack)
    await stack.restart("svc_exec")
    after = await wait_logged_on(stack)
    # No reset: both sides continue where they were (the logon itself takes one number each).
    assert after.next_sender_seq_num > before.next_sender_seq_num
    assert after.next_target_seq_num > before.next_target_seq_num
    assert exchange.next_sender_seq() == after.next_target_seq_num
    second = [await oms.new_order() for _ in range(5)]
    await eventually(lambda: all(oms.filled(o) == 10 for o in second))
    assert not oms.duplicate_exec_ids()


async def test_message_lost_on_the_wire_is_resent(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    """The exchange's fill for one order never reaches svc_exec; the next message shows the
    gap, svc_exec asks for a resend, and the fill arrives again with PossDupFlag=Y."""
    proxy = await FixProxy(exchange.port).start()
    try:
        stack = await start_exec(fix_port=proxy.port)
        oms = await oms_for(stack)
        proxy.drop_next_to_client(lambda m: b"\x0135=8\x01" in m and b"\x01150=F\x01" in m)
        lost = await oms.new_order()
        await eventually(lambda: proxy.dropped)
        assert not oms.filled(lost)
        later = await oms.new_order()
        await eventually(lambda: oms.filled(lost) == 10 and oms.filled(later) == 10)
        (fill,) = oms.of(lost, TRADE)
        assert fill.possible_duplicate
        assert "Sent ResendRequest" in event_log(stack)
        assert not oms.duplicate_exec_ids()
    finally:
        await proxy.stop()


async def test_report_lost_for_good_is_inferred_by_reconciliation(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    """A venue that gap-fills instead of resending: the fill is gone from the session. The
    exchange's order status reveals it, and svc_exec publishes it as an inferred fill."""
    exchange.set_policy("rest")
    stack = await start_exec()
    oms = await oms_for(stack)
    order_id = await oms.new_order(quantity=10, price="1500")
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    exchange.lose_next_fill()
    exchange.fill(order_id, 6, "1500")
    exchange.fill(order_id, 1, "1500.5")  # shows the gap; its figures include the lost fill
    await eventually(lambda: oms.filled(order_id) == 7)
    fills = oms.of(order_id, TRADE)
    assert [f.exec_id.startswith("inferred-") for f in fills] == [True, False]
    assert fills[0].last_quantity == 6 and fills[0].last_price.value == "1500"

    # Now a fill vanishes with nothing after it: only asking the exchange reveals it.
    exchange.lose_next_fill()
    exchange.fill(order_id, 3, "1501")
    stub = exec_stub(stack)
    await eventually(lambda: exchange.order(order_id).cum_qty == 10)
    result = await stub.ReconcileOrders(exec_pb2.ReconcileOrdersRequest(), timeout=30)
    assert result.orders_reported == 1 and result.reports_published >= 2
    await eventually(lambda: oms.filled(order_id) == 10)
    inferred = oms.of(order_id, TRADE)[-1]
    assert inferred.exec_id == f"inferred-{order_id}-10" and inferred.last_price.value == "1501"
    # Reconciling again publishes no fill twice.
    await stub.ReconcileOrders(exec_pb2.ReconcileOrdersRequest(), timeout=30)
    assert oms.filled(order_id) == 10 == exchange.order(order_id).cum_qty
    assert not oms.duplicate_exec_ids()


async def test_status_rpc_needs_the_session(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    proxy = await FixProxy(exchange.port).start()
    try:
        exchange.set_policy("rest")
        stack = await start_exec(fix_port=proxy.port)
        oms = await oms_for(stack)
        order_id = await oms.new_order()
        await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
        proxy.refuse = True
        proxy.cut()
        await eventually(lambda: not exchange.is_logged_on(), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await exec_stub(stack).GetExchangeOrderStatus(
                exec_pb2.GetExchangeOrderStatusRequest(order_id=order_id), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await proxy.stop()


async def test_rewound_session_replays_nothing_twice(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    """An operator rewinds the session (say, after restoring a backup): the exchange resends
    every report from the start, PossDupFlag=Y, and none is published a second time."""
    stack = await start_exec()
    oms = await oms_for(stack)
    orders = [await oms.new_order() for _ in range(10)]
    await eventually(lambda: all(oms.filled(o) == 10 for o in orders))
    published = len(oms.reports)
    await stack.stop_service("svc_exec")
    conn = await asyncpg.connect(db.asyncpg_dsn(stack.plan.database_url))
    try:
        await conn.execute("UPDATE exec.fix_sessions SET next_target_seq = 1")
    finally:
        await conn.close()
    await stack.start_service("svc_exec")
    await wait_logged_on(stack)

    async def replayed() -> bool:
        status = await session_status(stack)
        return status.next_target_seq_num >= exchange.next_sender_seq() and not status.reports_pending

    await eventually_async(replayed, equals=True)
    assert "lowering the expected incoming sequence number" in exec_log(stack)
    await asyncio.sleep(1.0)  # time for a duplicate, were there one, to reach the OMS
    assert len(oms.reports) == published
    assert not oms.duplicate_exec_ids()


async def test_malformed_report_is_refused_at_the_session_level(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    exchange.set_policy("rest")
    stack = await start_exec()
    oms = await oms_for(stack)
    order_id = await oms.new_order(quantity=10)
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    # Half a share: valid FIX Qty syntax, impossible for a share count.
    exchange.send_report(order_id, {14: "0.5", 17: "E-bad"})
    await eventually(exchange.session_rejects)
    assert exchange.session_rejects()[0][0] == "14"
    # The session goes on; nothing was published for the bad report.
    exchange.fill(order_id, 10, "1500.05")
    await eventually(lambda: oms.filled(order_id) == 10)
    assert "E-bad" not in {r.exec_id for r in oms.reports}
    assert (await session_status(stack)).logged_on


async def test_a_standby_replica_takes_over_the_session(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    """Two replicas, one FIX session: the second waits; when the first dies it takes over
    with the same store, and the sequence continues."""
    stack = await start_exec()
    oms = await oms_for(stack)
    first = [await oms.new_order() for _ in range(5)]
    await eventually(lambda: all(oms.filled(o) == 10 for o in first))
    port = free_port()
    env = {
        **os.environ,
        **stack.plan.env_for("svc_exec"),
        config.GRPC_LISTEN: f"127.0.0.1:{port}",
        config.METRICS_PORT: str(free_port()),
    }
    with (stack.log_dir / "svc_exec-standby.log").open("ab") as log:
        standby = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "svc_exec", env=env, stdout=log, stderr=log
        )
    try:
        await wait_healthy(f"127.0.0.1:{port}", timeout=60)
        async with channel(f"127.0.0.1:{port}", signer=as_service(stack.plan)) as ch:
            stub = exec_pb2_grpc.ExecutionServiceStub(ch)
            status = await stub.GetSessionStatus(exec_pb2.GetSessionStatusRequest(), timeout=5)
            assert not status.active and not status.logged_on
            before = await session_status(stack)
            await stack.kill("svc_exec")

            async def standby_logged_on() -> bool:
                status = await stub.GetSessionStatus(exec_pb2.GetSessionStatusRequest(), timeout=5)
                return status.active and status.logged_on

            await eventually_async(standby_logged_on, equals=True)
            second = [await oms.new_order() for _ in range(5)]
            await eventually(lambda: all(oms.filled(o) == 10 for o in second))
            after = await stub.GetSessionStatus(exec_pb2.GetSessionStatusRequest(), timeout=5)
            assert after.next_sender_seq_num > before.next_sender_seq_num + 5
            assert not oms.duplicate_exec_ids()
    finally:
        standby.terminate()
        await standby.wait()
