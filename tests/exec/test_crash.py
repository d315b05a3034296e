"""Failures that must lose nothing: kill -9 of svc_exec at every point between a command and
its reports, and a network cut of the FIX session while fills happen. Each ends with every
fill published exactly once, no order sent twice, and the OMS's view of every order equal
to the exchange's (invariant I5, docs/architecture.md §5)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from brokermesh.exec.v1 import execution_report_pb2 as er
from svc_runtime.stack import Stack
from tests.exec.acceptor import ExchangeProcess
from tests.exec.proxy import FixProxy
from tests.exec.support import (
    TRADE,
    Oms,
    eventually_async,
    exec_log,
    session_status,
    wait_logged_on,
)
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STATUS_OF = {
    er.ORD_STATUS_NEW: "0",
    er.ORD_STATUS_PARTIALLY_FILLED: "1",
    er.ORD_STATUS_FILLED: "2",
    er.ORD_STATUS_CANCELED: "4",
    er.ORD_STATUS_REJECTED: "8",
}


def assert_agreement(oms: Oms, exchange: ExchangeProcess, orders: list[str]) -> None:
    """I5: per order, the fills and final status the broker heard equal the exchange's."""
    snapshot = exchange.snapshot()
    for order_id in orders:
        status, filled = snapshot[order_id]
        assert oms.filled(order_id) == filled, order_id
        heard = [r for r in oms.of(order_id) if r.exec_type != er.EXEC_TYPE_ORDER_STATUS]
        assert STATUS_OF[max(heard, key=lambda r: r.cumulative_quantity).ord_status] == status, order_id
    assert not oms.duplicate_exec_ids()
    fills = Counter((r.order_id, r.cumulative_quantity) for r in oms.reports if r.exec_type == TRADE)
    assert all(n == 1 for n in fills.values())
    sent_twice = {cl: n for cl, n in exchange.new_orders_received().items() if n != 1}
    assert not sent_twice, f"orders sent more than once: {sent_twice}"


async def test_kill_between_sending_an_order_and_its_report(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    exchange.set_policy("rest")
    stack = await start_exec()
    oms = await oms_for(stack)
    orders = [await oms.new_order(quantity=10) for _ in range(30)]
    await eventually(lambda: len(exchange.new_orders_received()) == 30)
    await stack.kill("svc_exec")
    await eventually(lambda: not exchange.is_logged_on())
    # The exchange fills everything while svc_exec is dead; the reports wait in its store.
    assert exchange.fill_all(10) == 30
    await stack.start_service("svc_exec")
    await eventually(lambda: all(oms.filled(o) == 10 for o in orders))
    # Resent by the exchange (PossDupFlag=Y), not merely inferred from its order status.
    assert all(f.possible_duplicate for o in orders for f in oms.of(o, TRADE))
    assert not [r.exec_id for r in oms.reports if r.exec_id.startswith("inferred-")]
    assert_agreement(oms, exchange, orders)


async def test_kill_between_receiving_reports_and_publishing_them(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    delay = "BROKERMESH_EXEC_FAULT_PUBLISH_DELAY_MS"
    stack = await start_exec(**{delay: "5000"})
    oms = await oms_for(stack)
    orders = [await oms.new_order(quantity=10) for _ in range(20)]
    await eventually(lambda: all(c == 10 for _, c in exchange.snapshot().values()) and len(orders) == 20)
    # quickfix has accepted the reports (the exchange sees them delivered), none is published.
    await eventually(lambda: len(exchange.snapshot()) == 20)
    status = await session_status(stack)
    assert status.reports_pending > 0 and status.safe_next_target_seq_num < status.next_target_seq_num
    await stack.kill("svc_exec")
    assert not oms.reports
    stack.plan.extra_env.pop(delay)
    await stack.start_service("svc_exec")
    await eventually(lambda: all(oms.filled(o) == 10 for o in orders))
    # Recovered by the exchange's resend, report by report — not merely inferred afterwards.
    assert all(oms.of(o, er.EXEC_TYPE_NEW) for o in orders)
    assert not [r.exec_id for r in oms.reports if r.exec_id.startswith("inferred-")]
    assert "lowering the expected incoming sequence number" in exec_log(stack)
    assert_agreement(oms, exchange, orders)


async def test_crash_after_recording_before_sending(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    stack = await start_exec(BROKERMESH_EXEC_CRASH_AT="after_record")
    oms = await oms_for(stack)
    order_id = await oms.new_order()
    assert await stack.processes["svc_exec"].wait() == -9
    assert order_id not in exchange.new_orders_received()
    later = await oms.new_order()  # placed while svc_exec is down
    await stack.start_service("svc_exec")  # the crash point fires once per data directory

    def both_filled() -> bool:
        heard = {o: [(r.exec_type, r.exec_id, r.last_quantity) for r in oms.of(o)] for o in (order_id, later)}
        assert oms.filled(order_id) == 10 and oms.filled(later) == 10, heard
        return True

    await eventually(both_filled)
    assert 'in_store": false' in exec_log(stack)
    # The order the dead process held reaches the exchange first, not after its redelivery.
    assert list(exchange.new_orders_received()) == [order_id, later]
    assert "commands a predecessor held" in exec_log(stack)
    assert_agreement(oms, exchange, [order_id, later])


async def test_crash_after_sending_before_acknowledging(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    exchange.set_policy("rest")
    stack = await start_exec(BROKERMESH_EXEC_CRASH_AT="after_send")
    oms = await oms_for(stack)
    orders = [await oms.new_order() for _ in range(5)]
    assert await stack.processes["svc_exec"].wait() == -9
    sent_before_crash = set(exchange.new_orders_received())
    assert sent_before_crash
    exchange.fill_all(10)
    # The unacknowledged commands come back; the FIX store shows they went out: not resent.
    await stack.start_service("svc_exec")
    await eventually_async(oms.commands_pending, equals=0)
    exchange.fill_all(10)
    await eventually(lambda: all(oms.filled(o) == 10 for o in orders))
    assert_agreement(oms, exchange, orders)
    assert 'in_store": true' in exec_log(stack)


async def stream_orders(oms: Oms, count: int, sent: list[str]) -> None:
    for _ in range(count):
        sent.append(await oms.new_order(quantity=10))
        await asyncio.sleep(0.005)


async def test_network_cuts_while_filling(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    exchange.set_policy("rest")
    proxy = await FixProxy(exchange.port).start()
    try:
        stack = await start_exec(fix_port=proxy.port)
        oms = await oms_for(stack)
        orders = [await oms.new_order(quantity=10) for _ in range(60)]
        await eventually(lambda: all(oms.of(o, er.EXEC_TYPE_NEW) for o in orders))
        # The network fails; the exchange keeps filling. Its reports wait in its store.
        proxy.refuse = True
        proxy.cut()
        await eventually(lambda: not exchange.is_logged_on())
        assert exchange.fill_all(4) == 60
        proxy.refuse = False
        await wait_logged_on(stack)
        # And fails again in the middle of a burst of fills.
        exchange.fill_all(6)
        proxy.cut()
        await eventually(lambda: all(oms.filled(o) == 10 for o in orders), timeout=90)
        # Every fill came from the exchange itself (resent), none had to be inferred.
        assert not [r.exec_id for r in oms.reports if r.exec_id.startswith("inferred-")]
        assert_agreement(oms, exchange, orders)
    finally:
        await proxy.stop()


async def test_kill_under_load(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    stack = await start_exec()
    oms = await oms_for(stack)
    sent: list[str] = []
    streaming = asyncio.create_task(stream_orders(oms, 200, sent))
    await eventually(lambda: sum(1 for r in oms.reports if r.exec_type == TRADE) >= 60)
    await stack.kill("svc_exec")
    await stack.start_service("svc_exec")
    await streaming
    try:
        await eventually(lambda: all(oms.filled(o) == 10 for o in sent), timeout=90)
    except AssertionError:
        raise AssertionError(await _unfilled(stack, oms, exchange, sent)) from None
    assert_agreement(oms, exchange, sent)


async def _unfilled(stack: Stack, oms: Oms, exchange: ExchangeProcess, orders: list[str]) -> str:
    """What a failed wait for fills should say: the orders short of a fill as both sides see
    them, the session, and the end of svc_exec's log."""
    snapshot = exchange.snapshot()
    short = {o: (oms.filled(o), snapshot.get(o)) for o in orders if oms.filled(o) != 10}
    status = await session_status(stack)
    return (
        f"{len(short)} orders short of a fill (broker filled, exchange (status, filled)): "
        f"{dict(list(short.items())[:10])}\nsession: {status}\n"
        f"svc_exec log:\n{exec_log(stack)[-4000:]}"
    )
