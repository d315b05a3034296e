"""svc_exec against the exchange simulator: its rejections reach the OMS with their reasons,
and a stream of orders matched at the exchange survives session drops and a kill -9 of
svc_exec with the OMS agreeing with the exchange on every order (invariant I5, checked
through ExchangeAdminService.ListExchangeOrders)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from brokermesh.exchange.v1 import exchange_admin_pb2 as pb
from brokermesh.exchange.v1 import exchange_admin_pb2_grpc
from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.type.v1 import trading_pb2
from svc_runtime.stack import Stack
from tests.exec.support import TRADE, Oms, exec_log, fix_message_log, wait_logged_on
from tests.support.grpc import service_channel
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A quiet book: every fill comes from the broker's own orders crossing each other.
QUIET = {"BROKERMESH_EXCHANGE_AGENTS": "off"}
STATUS_OF = {
    er.ORD_STATUS_NEW: "0",
    er.ORD_STATUS_PARTIALLY_FILLED: "1",
    er.ORD_STATUS_FILLED: "2",
    er.ORD_STATUS_CANCELED: "4",
    er.ORD_STATUS_REJECTED: "8",
}


@pytest.fixture
async def broker(
    make_stack: Callable[..., Awaitable[Stack]], oms_for
) -> AsyncIterator[tuple[Stack, Oms, exchange_admin_pb2_grpc.ExchangeAdminServiceStub]]:
    stack = await make_stack(["exchange_sim", "svc_exec"], extra_env=QUIET)
    await wait_logged_on(stack)
    oms = await oms_for(stack)
    async with service_channel(stack.plan, "exchange_sim") as ch:
        yield stack, oms, exchange_admin_pb2_grpc.ExchangeAdminServiceStub(ch)
    await stack.stop()


async def assert_exchange_agrees(oms: Oms, admin: exchange_admin_pb2_grpc.ExchangeAdminServiceStub) -> int:
    """I5 for every order svc_exec sent: filled quantity and final status agree."""
    listed = (await admin.ListExchangeOrders(pb.ListExchangeOrdersRequest(sender_comp_id="BROKER"))).orders
    by_order = {o.cl_ord_id.split(".")[0]: o for o in listed}
    heard = {r.order_id for r in oms.reports}
    assert set(by_order) <= heard, f"orders the broker never heard of: {set(by_order) - heard}"
    for order_id in heard:
        theirs = by_order.get(order_id)
        if theirs is None:  # refused before reaching the exchange's book
            assert all(r.exec_type == er.EXEC_TYPE_REJECTED for r in oms.of(order_id))
            continue
        assert oms.filled(order_id) == theirs.filled_quantity, order_id
        reports = [r for r in oms.of(order_id) if r.exec_type != er.EXEC_TYPE_ORDER_STATUS]
        last = max(reports, key=lambda r: (r.cumulative_quantity, r.ord_status == er.ORD_STATUS_FILLED))
        assert STATUS_OF[last.ord_status] == theirs.ord_status, order_id
    assert not oms.duplicate_exec_ids()
    return len(by_order)


async def test_exchange_rejections_carry_their_reason(broker) -> None:
    _stack, oms, admin = broker
    unknown = await oms.new_order(symbol="NOSUCH", price="100")
    off_tick = await oms.new_order(symbol="INFY", price="1500.03")
    outside_band = await oms.new_order(symbol="INFY", price="9000")
    await admin.HaltTrading(pb.HaltTradingRequest(symbol="TCS", reason="news pending"))
    halted = await oms.new_order(symbol="TCS", price="3890")
    orders = [unknown, off_tick, outside_band, halted]
    await eventually(lambda: all(oms.of(o, er.EXEC_TYPE_REJECTED) for o in orders))
    texts = {o: oms.of(o, er.EXEC_TYPE_REJECTED)[0].text.lower() for o in orders}
    assert "symbol" in texts[unknown]
    assert "tick" in texts[off_tick]
    assert "band" in texts[outside_band]
    assert "halt" in texts[halted]
    await assert_exchange_agrees(oms, admin)


async def stream_pairs(oms: Oms, pairs: int, sent: list[str]) -> None:
    """A resting sell then a crossing buy from another client: both fill completely."""
    for i in range(pairs):
        price = f"{1500 + (i % 20) * 0.05:.2f}"
        sent.append(
            await oms.new_order(side=trading_pb2.SIDE_SELL, quantity=5, price=price, user_id="u_seller")
        )
        sent.append(
            await oms.new_order(side=trading_pb2.SIDE_BUY, quantity=5, price=price, user_id="u_buyer")
        )
        await asyncio.sleep(0.005)


async def test_streamed_orders_agree_through_session_drops_and_a_kill(broker) -> None:
    stack, oms, admin = broker
    sent: list[str] = []
    streaming = asyncio.create_task(stream_pairs(oms, 150, sent))

    def fills() -> int:
        return sum(1 for r in oms.reports if r.exec_type == TRADE)

    await eventually(lambda: fills() >= 40)
    await admin.SetScenario(pb.SetScenarioRequest(drop_session="BROKER"))
    await eventually(lambda: fills() >= 120)
    await stack.kill("svc_exec")
    await stack.start_service("svc_exec")
    await eventually(lambda: fills() >= 200)
    await admin.SetScenario(pb.SetScenarioRequest(drop_session="BROKER"))
    await streaming
    await wait_logged_on(stack)

    def all_filled() -> bool:
        short = {o: oms.filled(o) for o in sent if oms.filled(o) != 5}
        # Named on failure: which orders, and how much of each the OMS heard was filled.
        assert not short, f"{len(short)} of {len(sent)} orders not filled 5: {dict(list(short.items())[:10])}"
        return True

    try:
        await eventually(all_filled, timeout=90)
    except AssertionError as error:
        short = [o for o in sent if oms.filled(o) != 5]
        raise AssertionError(f"{error}\n{await where_orders_went(stack, oms, admin, short)}") from None
    assert await assert_exchange_agrees(oms, admin) == 300


async def where_orders_went(
    stack: Stack, oms: Oms, admin: exchange_admin_pb2_grpc.ExchangeAdminServiceStub, order_ids: list[str]
) -> str:
    """For orders that did not fill: what the exchange holds, what the OMS heard, what
    crossed the FIX session and what svc_exec logged about them."""
    listed = (await admin.ListExchangeOrders(pb.ListExchangeOrdersRequest(sender_comp_id="BROKER"))).orders
    at_exchange = {o.cl_ord_id.split(".")[0]: o for o in listed}
    messages = fix_message_log(stack)
    log_lines = exec_log(stack).splitlines()
    lines = []
    for order_id in order_ids[:4]:
        theirs = at_exchange.get(order_id)
        held = (
            f"status {theirs.ord_status}, filled {theirs.filled_quantity}, price {theirs.price.value}"
            if theirs
            else "not held"
        )
        heard = [er.ExecType.Name(r.exec_type) for r in oms.of(order_id)]
        fix = [m[:30] + " " + _fix_summary(m) for m in messages if f"\x0111={order_id}" in m]
        logged = [line[:400] for line in log_lines if order_id in line][:5]
        lines.append(f"{order_id}: exchange {held}; OMS heard {heard}")
        lines.extend(f"  FIX {m}" for m in fix[:8])
        lines.extend(f"  log {m}" for m in logged)
    return "\n".join(lines)


def _fix_summary(message: str) -> str:
    fields = dict(f.split("=", 1) for f in message.split("\x01") if "=" in f)
    keep = ("35", "34", "43", "11", "150", "39", "14", "54", "44")
    return " ".join(f"{tag}={fields[tag]}" for tag in keep if tag in fields)
