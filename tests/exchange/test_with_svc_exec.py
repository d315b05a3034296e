"""The exchange simulator with the broker's real FIX initiator, svc_exec: sequence gaps after
a crash are filled by resends, reconnects after a dropped connection or an exchange restart
keep their sequence numbers (and an exchange restart its books), and every execution reaches
the broker exactly once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from brokermesh.exchange.v1 import exchange_admin_pb2 as pb
from brokermesh.exchange.v1 import exchange_admin_pb2_grpc
from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_runtime.stack import Stack
from tests.exchange.conftest import QUIET
from tests.exec.support import Oms, session_status, wait_logged_on
from tests.support.grpc import service_channel
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

# ExecIDs the exchange assigns: its boot id, "-E", a counter.
EXCHANGE_EXEC_ID = re.compile(r"^[0-9A-Z]{14}-E\d+$")


@pytest.fixture
async def broker(
    make_stack: Callable[..., Awaitable[Stack]], oms_for
) -> AsyncIterator[tuple[Stack, Oms, object]]:
    stack = await make_stack(["exchange_sim", "svc_exec"], extra_env=QUIET)
    await wait_logged_on(stack)
    oms = await oms_for(stack)
    async with service_channel(stack.plan, "exchange_sim") as ch:
        yield stack, oms, exchange_admin_pb2_grpc.ExchangeAdminServiceStub(ch)


@pytest.fixture
async def oms_for(infra) -> AsyncIterator[Callable[[Stack], Awaitable[Oms]]]:
    opened: list[Oms] = []

    async def open_for(stack: Stack) -> Oms:
        oms = await Oms(infra.nats_url, stack.plan.namespace).__aenter__()
        opened.append(oms)
        return oms

    yield open_for
    for oms in opened:
        await oms.__aexit__(None, None, None)


async def cross(admin, quantity: int, price: str, symbol: str = "INFY") -> pb.ExchangeOrder:
    return await admin.PlaceOrder(
        pb.PlaceOrderRequest(
            symbol=symbol,
            side=trading_pb2.SIDE_SELL,
            quantity=quantity,
            order_type=trading_pb2.ORDER_TYPE_LIMIT,
            price=decimal_pb2.Decimal(value=price),
        )
    )


async def exchange_view(admin) -> list[pb.ExchangeOrder]:
    orders = (await admin.ListExchangeOrders(pb.ListExchangeOrdersRequest(sender_comp_id="BROKER"))).orders
    return list(orders)


async def test_fill_made_while_svc_exec_is_dead_is_resent_and_published_once(broker):
    stack, oms, admin = broker
    order_id = await oms.new_order(quantity=10, price="1500.05")
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))

    await stack.kill("svc_exec")
    sold = await cross(admin, 10, "1500.05")
    assert sold.filled_quantity == 10
    away = next(
        s for s in (await admin.ListSessions(pb.ListSessionsRequest())).sessions if s.counterparty == "BROKER"
    )
    assert not away.logged_on

    await stack.start_service("svc_exec")
    await wait_logged_on(stack)
    await eventually(lambda: oms.filled(order_id) == 10, timeout=60)
    trades = oms.of(order_id, er.EXEC_TYPE_TRADE)
    assert len(trades) == 1 and trades[0].last_price.value == "1500.05"
    # The exchange's own execution, resent from its store (not one the broker inferred from a
    # status answer).
    assert EXCHANGE_EXEC_ID.match(trades[0].exec_id), trades[0].exec_id
    assert trades[0].ord_status == er.ORD_STATUS_FILLED
    assert not oms.duplicate_exec_ids()
    (theirs,) = await exchange_view(admin)
    assert (theirs.filled_quantity, theirs.ord_status) == (10, "2")
    assert theirs.exchange_order_id == trades[0].exchange_order_id


async def test_dropped_connection_loses_nothing(broker):
    stack, oms, admin = broker
    order_id = await oms.new_order(quantity=6, price="1500.05")
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    await admin.SetScenario(pb.SetScenarioRequest(drop_session="BROKER"))
    # Trades happen while the broker reconnects; each reaches it once.
    await cross(admin, 2, "1500.05")
    await cross(admin, 4, "1500.05")
    await eventually(lambda: oms.filled(order_id) == 6, timeout=60)
    trades = oms.of(order_id, er.EXEC_TYPE_TRADE)
    assert len(trades) == 2 and all(EXCHANGE_EXEC_ID.match(t.exec_id) for t in trades)
    assert not oms.duplicate_exec_ids()
    status = await wait_logged_on(stack)
    assert status.logged_on


async def test_exchange_restart_keeps_the_session_sequence(broker):
    stack, oms, admin = broker
    before = await session_status(stack)
    first = await oms.new_order(quantity=1, price="1500.05")
    await eventually(lambda: oms.of(first, er.EXEC_TYPE_NEW))

    await stack.kill("exchange_sim")
    await stack.start_service("exchange_sim")
    status = await wait_logged_on(stack, timeout=60)
    # Sequence numbers continued on both sides: no reset to 1.
    assert status.next_sender_seq_num > before.next_sender_seq_num
    assert status.next_target_seq_num > before.next_target_seq_num

    # The channel reconnects to the new exchange process on the same address, and the order
    # sent before the restart still rests there, ahead of the new one.
    second = await oms.new_order(quantity=2, price="1500.05")
    await eventually(lambda: oms.of(second, er.EXEC_TYPE_NEW), timeout=60)
    await cross(admin, 3, "1500.05")
    await eventually(lambda: oms.filled(first) == 1 and oms.filled(second) == 2, timeout=60)
    assert not oms.duplicate_exec_ids()
