"""Order entry over a real FIX session against the exchange_sim process."""

from __future__ import annotations

import asyncio
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
    at_open = fm.new_order(client, "INFY", "1", "10", price="1530.00", tif="2")
    expected = {
        unknown: ("1", "unknown symbol"),
        off_tick: ("99", "tick size"),
        bad_qty: ("13", "whole number"),
        outside: ("3", "price band"),
        at_open: ("11", "time in force"),
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


async def test_cancel_and_replace_and_their_rejects(exchange, admin, fix_clients):
    client = await fix_clients(exchange)
    cl = fm.new_order(client, "INFY", "1", "10", price="1500.00")
    await client.wait_for(lambda r: r.get(11) == cl and r[150] == "0")

    r1 = fm.replace(client, cl, "INFY", "1", "12", "1500.05")
    replaced = await client.wait_for(lambda r: r.get(11) == r1)
    assert (replaced[150], replaced[39], replaced[41], replaced[38], replaced[44], replaced[151]) == (
        "5",
        "0",
        cl,
        "12",
        "1500.05",
        "12",
    )
    # A cancel may name any ClOrdID the order has had (a broker racing its own replace).
    x1 = fm.cancel(client, cl, "INFY", "1")
    cancelled = await client.wait_for(lambda r: r.get(11) == x1 and r.msg_type == "8")
    assert (cancelled[150], cancelled[39], cancelled[41], cancelled[151]) == ("4", "4", r1, "0")

    too_late = fm.cancel(client, x1, "INFY", "1")
    late = await client.wait_for(lambda r: r.msg_type == "9" and r[11] == too_late)
    assert (late[102], late[39], late[434]) == ("0", "4", "1")
    unknown = fm.cancel(client, "never-sent", "INFY", "1")
    nobody = await client.wait_for(lambda r: r.msg_type == "9" and r[11] == unknown)
    assert (nobody[102], nobody[37]) == ("1", "NONE")
    bad_replace = fm.replace(client, "never-sent", "INFY", "1", "5", "1500.00")
    assert (await client.wait_for(lambda r: r.msg_type == "9" and r[11] == bad_replace))[434] == "2"

    book = await admin.GetOrderBook(pb.GetOrderBookRequest(symbol="INFY"))
    assert not book.bids


async def test_status_and_mass_status(exchange, admin, fix_clients):
    client = await fix_clients(exchange)
    client.send_raw([(584, "empty"), (585, "7")], "AF")
    none = await client.wait_for(lambda r: r.get(584) == "empty")
    assert (none[150], none[911], none[912]) == ("I", "0", "Y") and none.get(11) is None
    working = fm.new_order(client, "INFY", "1", "10", price="1500.00", account="alice")
    done = fm.new_order(client, "TCS", "2", "5", price="3900.00", account="bob")
    await client.wait_for(lambda r: r.get(11) == done and r[150] == "0")
    placed = await admin.PlaceOrder(
        pb.PlaceOrderRequest(
            symbol="TCS", side=trading_pb2.SIDE_BUY, quantity=5, order_type=trading_pb2.ORDER_TYPE_MARKET
        )
    )
    assert placed.filled_quantity == 5
    await client.wait_for(lambda r: r.get(11) == done and r[39] == "2")

    client.send_raw([(11, working), (55, "INFY"), (54, "1"), (790, "q1")], "H")
    status = await client.wait_for(lambda r: r.get(790) == "q1")
    assert (status[150], status[39], status[151], status[11]) == ("I", "0", "10", working)

    client.send_raw([(584, "all"), (585, "7")], "AF")
    await client.wait_for(lambda r: r.get(584) == "all" and r.get(912) == "Y")
    reports = [r for r in client.messages("8") if r.get(584) == "all"]
    assert {(r[11], r[39]) for r in reports} == {(working, "0"), (done, "2")}
    assert all(r[911] == "2" and r[150] == "I" for r in reports)
    client.send_raw([(584, "tcs"), (585, "1"), (55, "TCS")], "AF")
    only = await client.wait_for(lambda r: r.get(584) == "tcs")
    assert (only[11], only[911]) == (done, "1")


async def test_scenarios_reject_the_next_orders_and_delay_reports_in_order(exchange, admin, fix_clients):
    client = await fix_clients(exchange)
    await admin.SetScenario(pb.SetScenarioRequest(reject_next_orders=2, reject_text="exchange is testing"))
    first = fm.new_order(client, "INFY", "1", "1", price="1500.00")
    second = fm.new_order(client, "INFY", "1", "1", price="1500.00")
    third = fm.new_order(client, "INFY", "1", "1", price="1500.00")
    for cl in (first, second):
        report = await client.wait_for(lambda r, cl=cl: r.get(11) == cl)
        assert (report[150], report[103], report[58]) == ("8", "0", "exchange is testing")
    assert (await client.wait_for(lambda r: r.get(11) == third))[150] == "0"

    await admin.SetScenario(pb.SetScenarioRequest(delay_reports_ms=1500))
    delayed = [fm.new_order(client, "TCS", "1", "1", price="3900.00", account=f"a{i}") for i in range(3)]
    await asyncio.sleep(0.7)
    assert not [r for r in client.messages("8") if r.get(11) in delayed]
    await client.wait_for(lambda r: r.get(11) == delayed[-1], timeout=30)
    arrived = [r[11] for r in client.messages("8") if r.get(11) in delayed]
    assert arrived == delayed
    await admin.SetScenario(pb.SetScenarioRequest())
    quick = fm.new_order(client, "TCS", "1", "1", price="3900.00")
    await client.wait_for(lambda r: r.get(11) == quick, timeout=5)


async def test_an_iceberg_shows_its_max_floor_in_the_book_and_a_replace_restates_it(
    exchange, admin, fix_clients
):
    client = await fix_clients(exchange)

    async def bids() -> list[tuple[str, int, int]]:
        book = await admin.GetOrderBook(pb.GetOrderBookRequest(symbol="INFY"))
        return [(b.price.value, b.quantity, b.order_count) for b in book.bids]

    cl = fm.new_order(client, "INFY", "1", "100", price="1500.00", max_floor="10")
    new = await client.wait_for(lambda r: r.get(11) == cl and r[150] == "0", what="new ack")
    assert (new[38], new[151], new[111]) == ("100", "100", "10")
    assert await bids() == [("1500.00", 10, 1)]

    placed = await admin.PlaceOrder(
        pb.PlaceOrderRequest(
            symbol="INFY",
            side=trading_pb2.SIDE_SELL,
            quantity=25,
            order_type=trading_pb2.ORDER_TYPE_LIMIT,
            price=decimal_pb2.Decimal(value="1500.00"),
        )
    )
    assert placed.filled_quantity == 25
    await client.wait_for(lambda r: r.get(11) == cl and r[150] == "F" and r[14] == "25", what="third fill")
    fills = [r for r in reports_for(client, cl) if r[150] == "F"]
    assert [(f[32], f[14], f[151]) for f in fills] == [
        ("10", "10", "90"),
        ("10", "20", "80"),
        ("5", "25", "75"),
    ]
    assert await bids() == [("1500.00", 5, 1)]

    more = fm.replace(client, cl, "INFY", "1", "100", "1500.00", max_floor="20")
    replaced = await client.wait_for(lambda r: r.get(11) == more and r.msg_type == "8")
    assert (replaced[150], replaced[111], replaced[151]) == ("5", "20", "75")
    assert await bids() == [("1500.00", 20, 1)]
    client.send_raw([(11, more), (55, "INFY"), (54, "1"), (790, "ice-q")], "H")
    status = await client.wait_for(lambda r: r.get(790) == "ice-q", what="status")
    assert (status[111], status[14], status[151]) == ("20", "25", "75")
    # A replace without MaxFloor shows the whole order.
    full = fm.replace(client, more, "INFY", "1", "100", "1500.00")
    replaced = await client.wait_for(lambda r: r.get(11) == full and r.msg_type == "8")
    assert replaced[150] == "5" and replaced.get(111) is None
    assert await bids() == [("1500.00", 75, 1)]

    bad = fm.new_order(client, "INFY", "1", "10", price="1500.00", max_floor="0.5")
    rejected = await client.wait_for(lambda r: r.get(11) == bad, what="reject")
    assert (rejected[150], rejected[103]) == ("8", "13")
