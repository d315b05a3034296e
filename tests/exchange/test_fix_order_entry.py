"""Order entry over a real FIX session against the exchange_sim process."""

from __future__ import annotations

from decimal import Decimal

from brokermesh.exchange.v1 import exchange_admin_pb2 as pb
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from tests.exchange import fix_messages as fm
from tests.exchange.fix_client import FixClient


def reports_for(client: FixClient, cl_ord_id: str) -> list:
    return [r for r in client.messages("8") if r.get(11) == cl_ord_id]


async def test_limit_order_is_acknowledged_then_filled_by_another_participant(exchange, admin, fix_clients):
    client = await fix_clients(exchange)
    cl = fm.new_order(client, "INFY", "1", "10", price="1530.20", account="alice")
    new = await client.wait_for(lambda r: r.get(11) == cl and r[150] == "0", what="new ack")
    assert new[39] == "0" and new[151] == "10" and new[14] == "0" and new[1] == "alice"
    assert new[44] == "1530.20"

    placed = await admin.PlaceOrder(
        pb.PlaceOrderRequest(
            symbol="INFY",
            side=trading_pb2.SIDE_SELL,
            quantity=4,
            order_type=trading_pb2.ORDER_TYPE_LIMIT,
            price=decimal_pb2.Decimal(value="1530.00"),
        )
    )
    assert placed.filled_quantity == 4  # it crossed the resting buy
    fill = await client.wait_for(lambda r: r.get(11) == cl and r[150] == "F", what="fill")
    # Price-time priority: the resting order's price, not the aggressor's.
    assert (fill[32], fill[31], fill[14], fill[151], fill[39]) == ("4", "1530.20", "4", "6", "1")
    assert Decimal(fill[6]) == Decimal("1530.20")

    orders = (await admin.ListExchangeOrders(pb.ListExchangeOrdersRequest(sender_comp_id="BROKER"))).orders
    assert [(o.cl_ord_id, o.filled_quantity, o.ord_status) for o in orders] == [(cl, 4, "1")]
    assert orders[0].exchange_order_id == new[37] == fill[37]


async def test_business_rejects_carry_a_reason(exchange, admin, fix_clients):
    client = await fix_clients(exchange)
    unknown = fm.new_order(client, "NOSUCH", "1", "10", price="100.00")
    off_tick = fm.new_order(client, "INFY", "1", "10", price="1530.03")
    bad_qty = fm.new_order(client, "INFY", "1", "2.5", price="1530.00")
    outside = fm.new_order(client, "INFY", "1", "10", price="5000.00")
    gtc = fm.new_order(client, "INFY", "1", "10", price="1530.00", tif="1")
    expected = {
        unknown: ("1", "unknown symbol"),
        off_tick: ("99", "tick size"),
        bad_qty: ("13", "whole number"),
        outside: ("3", "price band"),
        gtc: ("11", "time in force"),
    }
    for cl, (reason, text) in expected.items():
        report = await client.wait_for(lambda r, cl=cl: r.get(11) == cl, what=f"reject of {cl}")
        assert (report[150], report[39], report[103]) == ("8", "8", reason), report
        assert text in report[58]
    orders = (await admin.ListExchangeOrders(pb.ListExchangeOrdersRequest())).orders
    assert sorted(o.cl_ord_id for o in orders) == sorted(expected)
    assert {o.ord_status for o in orders} == {"8"}


async def test_orders_while_halted_are_rejected_and_resting_orders_survive(exchange, admin, fix_clients):
    client = await fix_clients(exchange)
    resting = fm.new_order(client, "TCS", "2", "5", price="3900.00")
    await client.wait_for(lambda r: r.get(11) == resting and r[150] == "0")
    state = await admin.HaltTrading(pb.HaltTradingRequest(reason="market-wide circuit breaker level 1"))
    assert state.market_halted

    during = fm.new_order(client, "TCS", "1", "5", price="3900.00")
    report = await client.wait_for(lambda r: r.get(11) == during)
    assert (report[150], report[103]) == ("8", "2")
    assert "circuit breaker" in report[58]
    # Cancels still work during a halt.
    book = await admin.GetOrderBook(pb.GetOrderBookRequest(symbol="TCS"))
    assert [(lvl.price.value, lvl.quantity) for lvl in book.asks] == [("3900.00", 5)]

    await admin.ResumeTrading(pb.ResumeTradingRequest())
    after = fm.new_order(client, "TCS", "1", "5", price="3900.00", account="bob")
    fill = await client.wait_for(lambda r: r.get(11) == after and r[150] == "F")
    assert fill[39] == "2"
