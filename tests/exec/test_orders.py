"""Orders through svc_exec, a real process, against a FIX 4.4 acceptor configured by file:
new, fill, cancel, replace, rejections, and refused commands."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
import pytest

from brokermesh.exec.v1 import exec_pb2
from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.type.v1 import trading_pb2
from svc_runtime.errors import details_of
from svc_runtime.ids import new_id
from tests.exec.acceptor import ExchangeProcess
from tests.exec.support import TRADE, exec_stub
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


async def test_orders_are_filled_like_by_quickfix_executor(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    """The acceptor fills every order at once at its limit price (QuickFIX's executor)."""
    stack = await start_exec()
    oms = await oms_for(stack)
    orders = [await oms.new_order(quantity=10 + i, price=f"{1500 + i}.05") for i in range(20)]
    await eventually(lambda: all(oms.filled(o) == 10 + i for i, o in enumerate(orders)))
    for i, order_id in enumerate(orders):
        new, trade = oms.of(order_id)
        assert new.exec_type == er.EXEC_TYPE_NEW and new.ord_status == er.ORD_STATUS_NEW
        assert trade.exec_type == TRADE and trade.ord_status == er.ORD_STATUS_FILLED
        assert trade.last_price.value == f"{1500 + i}.05" and trade.leaves_quantity == 0
        assert trade.user_id == oms.user_id and trade.cl_ord_id == order_id and trade.exchange_order_id
    assert not oms.duplicate_exec_ids()
    # Every report's Nats-Msg-Id is its ExecID, and the order's request id travels with it.
    assert all(h["Nats-Msg-Id"] == r.exec_id for h, r in zip(oms.headers, oms.reports, strict=True))
    assert all(h["X-Request-Id"] == r.request_id for h, r in zip(oms.headers, oms.reports, strict=True))
    assert set(exchange.new_orders_received().values()) == {1}


async def test_cancel_and_replace_chain_clordids(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    exchange.set_policy("rest")
    stack = await start_exec()
    oms = await oms_for(stack)
    order_id = await oms.new_order(quantity=100, price="1500")
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    exchange.fill(order_id, 30, "1500")
    await oms.replace(order_id, quantity=80, price="1499.95")
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_REPLACED))
    replaced = oms.of(order_id, er.EXEC_TYPE_REPLACED)[0]
    assert (replaced.cl_ord_id, replaced.orig_cl_ord_id) == (f"{order_id}.1", order_id)
    assert replaced.order_quantity == 80 and replaced.cumulative_quantity == 30
    # A fill after the replace, then a cancel: the cancel chains from the replace.
    exchange.fill(f"{order_id}.1", 20, "1499.95")
    await oms.cancel(order_id, quantity=80)
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_CANCELED))
    cancelled = oms.of(order_id, er.EXEC_TYPE_CANCELED)[0]
    assert (cancelled.cl_ord_id, cancelled.orig_cl_ord_id) == (f"{order_id}.2", f"{order_id}.1")
    assert oms.filled(order_id) == 50 == exchange.order(order_id).cum_qty
    assert exchange.snapshot()[order_id] == ("4", 50)


async def test_refused_cancel_does_not_break_the_chain(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    exchange.set_policy("rest")
    stack = await start_exec()
    oms = await oms_for(stack)
    order_id = await oms.new_order(quantity=10, price="100")
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    # A replace below the filled quantity is refused by the exchange (OrderCancelReject).
    exchange.fill(order_id, 6, "100")
    await oms.replace(order_id, quantity=5, price="100")
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_CANCEL_REJECTED))
    reject = oms.of(order_id, er.EXEC_TYPE_CANCEL_REJECTED)[0]
    assert reject.exec_id == f"cxlrej-{order_id}.1" and reject.text
    # The next request names the last ClOrdID the exchange accepted, not the refused one.
    await oms.cancel(order_id)
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_CANCELED))
    assert oms.of(order_id, er.EXEC_TYPE_CANCELED)[0].orig_cl_ord_id == order_id


async def test_exchange_rejections_reach_the_oms_with_the_reason(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    exchange.add_unknown_symbol("NOSUCH")
    stack = await start_exec()
    oms = await oms_for(stack)
    unknown = await oms.new_order(symbol="NOSUCH")
    await eventually(lambda: oms.of(unknown, er.EXEC_TYPE_REJECTED))
    assert "unknown symbol" in oms.of(unknown)[0].text
    assert oms.of(unknown)[0].ord_status == er.ORD_STATUS_REJECTED
    exchange.halt(True)
    halted = await oms.new_order()
    await eventually(lambda: oms.of(halted, er.EXEC_TYPE_REJECTED))
    assert oms.of(halted)[0].text == "trading halted"
    # A cancel for an order that never existed at the exchange: cancel reject, not a crash.
    stray = new_id("ord")
    await oms.cancel(stray)
    await eventually(lambda: oms.of(stray, er.EXEC_TYPE_CANCEL_REJECTED))
    assert oms.of(stray)[0].text == "unknown order"


BAD_ORDERS = [
    ({"price": "1500.055"}, "more than 2 fraction digits"),
    ({"price": "1.5e3"}, "plain decimal"),
    ({"quantity": 0}, "positive number of shares"),
    ({"price": None}, "needs a limit price"),
    ({"side": trading_pb2.SIDE_UNSPECIFIED}, "side must be BUY or SELL"),
    ({"symbol": ""}, "not a valid instrument symbol"),
]


async def test_bad_commands_are_rejected_and_never_sent(
    start_exec, exchange: ExchangeProcess, oms_for
) -> None:
    stack = await start_exec()
    oms = await oms_for(stack)
    bad = [await oms.new_order(**fields) for fields, _ in BAD_ORDERS]  # type: ignore[arg-type]
    good = await oms.new_order()
    await eventually(lambda: all(oms.of(b) for b in bad) and oms.filled(good) == 10)
    for order_id, (_, reason) in zip(bad, BAD_ORDERS, strict=True):
        (rejection,) = oms.of(order_id)
        assert rejection.exec_type == er.EXEC_TYPE_REJECTED and reason in rejection.text
        assert rejection.exec_id.startswith("refused-")
        assert order_id not in exchange.new_orders_received()


async def test_order_status_for_the_sweeper(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    exchange.set_policy("rest")
    stack = await start_exec()
    oms = await oms_for(stack)
    order_id = await oms.new_order(quantity=10)
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    exchange.fill(order_id, 4, "1500.05")
    stub = exec_stub(stack)
    answer = await stub.GetExchangeOrderStatus(
        exec_pb2.GetExchangeOrderStatusRequest(order_id=order_id), timeout=10
    )
    assert answer.exec_type == er.EXEC_TYPE_ORDER_STATUS and answer.order_id == order_id
    assert (answer.ord_status, answer.cumulative_quantity) == (er.ORD_STATUS_PARTIALLY_FILLED, 4)

    # An order svc_exec never received: NOT_FOUND, and it can never be sent afterwards, so the
    # sweeper may release its funds without racing a late command.
    lost = new_id("ord")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetExchangeOrderStatus(exec_pb2.GetExchangeOrderStatusRequest(order_id=lost), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert details_of(caught.value).reason == "ORDER_NOT_RECEIVED"
    await oms.new_order(lost)
    await eventually(lambda: oms.of(lost, er.EXEC_TYPE_REJECTED))
    assert "abandoned" in oms.of(lost)[0].text
    assert lost not in exchange.new_orders_received()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetExchangeOrderStatus(exec_pb2.GetExchangeOrderStatusRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The status command (OMS → executor) gets its answer as a published report.
    await oms.send("order_status", order_id, symbol="INFY", side=trading_pb2.SIDE_BUY)
    await eventually(lambda: oms.of(order_id, er.EXEC_TYPE_ORDER_STATUS))
    kinds = Counter(r.exec_type for r in oms.of(order_id))
    assert kinds[TRADE] == 1  # the status answers inferred no extra fill


EXECUTOR_CFG = Path(__file__).with_name("executor_initiator.cfg")


async def test_interoperates_with_a_minimal_executor(start_exec, exchange: ExchangeProcess, oms_for) -> None:
    """An acceptor that implements nothing but NewOrderSingle → one fill ExecutionReport
    (QuickFIX's example executor): orders fill; a cancel it does not support comes back to
    the OMS as a cancel reject carrying the exchange's BusinessMessageReject; and after the
    executor restarts its id counters, new fills are not mistaken for old ones (the session
    file says ExecIDScope=ORDER)."""
    exchange.set_policy("executor")
    stack = await start_exec(BROKERMESH_EXEC_FIX_CONFIG=str(EXECUTOR_CFG))
    oms = await oms_for(stack)
    orders = [await oms.new_order(quantity=5) for _ in range(10)]
    await eventually(lambda: all(oms.filled(o) == 5 for o in orders))
    assert all(len(oms.of(o)) == 1 and oms.of(o)[0].ord_status == er.ORD_STATUS_FILLED for o in orders)
    await oms.cancel(orders[0], quantity=5)
    await eventually(lambda: oms.of(orders[0], er.EXEC_TYPE_CANCEL_REJECTED))
    reject = oms.of(orders[0], er.EXEC_TYPE_CANCEL_REJECTED)[0]
    assert "refused by the exchange" in reject.text

    exchange.restart(policy="executor")
    await eventually(exchange.is_logged_on, timeout=30)
    again = [await oms.new_order(quantity=5) for _ in range(10)]
    await eventually(lambda: all(oms.filled(o) == 5 for o in again))
    assert not oms.duplicate_exec_ids()
