"""Market data and the instrument master over the BROKER_MD session, and the live market the
agents make: MARKET orders fill, prices move, a crash trips the circuit breaker."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import quickfix as fix

from brokermesh.exchange.v1 import exchange_admin_pb2 as pb
from brokermesh.exchange.v1 import exchange_admin_pb2_grpc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from exchange_sim.adapters.instrument_file import load_instruments
from tests.exchange import fix_messages as fm
from tests.exchange.fix_client import FixClient, Received, wait_until
from tests.support.grpc import service_channel


def subscribe(
    client: FixClient, md_req_id: str, symbols: list[str], *, depth: int = 1, types: str = "0124578B"
) -> None:
    request = fix.Message()
    request.getHeader().setField(fix.MsgType("V"))
    for tag, value in ((262, md_req_id), (263, "1"), (264, str(depth)), (265, "1")):
        request.setField(fix.StringField(tag, value))
    for entry_type in types:
        group = fix.Group(267, 269)
        group.setField(fix.StringField(269, entry_type))
        request.addGroup(group)
    for symbol in symbols:
        group = fix.Group(146, 55)
        group.setField(fix.StringField(55, symbol))
        request.addGroup(group)
    client.send(request)


def entries(message: Received, first_tag: int) -> list[dict[int, str]]:
    """The repeating-group entries of a W (first_tag 269) or X (first_tag 279)."""
    out: list[dict[int, str]] = []
    inside = False
    for tag, value in message.fields:
        if tag == 268:
            inside = True
            continue
        if inside and tag == first_tag:
            out.append({})
        if inside and out and tag not in (10,):
            out[-1][tag] = value
    return out


async def test_instrument_master_arrives_in_fragments_with_the_documented_tags(exchange, fix_clients):
    client = await fix_clients(exchange, "BROKER_MD")
    client.send_raw([(320, "sec-1"), (559, "4")], "x")
    master = load_instruments()
    await wait_until(lambda: any(r.get(893) == "Y" for r in client.messages("y")), 20, "no last fragment")
    parts = client.messages("y")
    assert all(p[320] == "sec-1" and p[560] == "0" and int(p[393]) == len(master) for p in parts)
    symbols = [s for p in parts for s in p.all(55)]
    assert sorted(symbols) == sorted(master)
    raw = next(p for p in parts if "INFY" in p.all(55)).raw.split("\x01")
    infy = raw[raw.index("55=INFY") : raw.index("55=INFY") + 22]
    expected_infy = master["INFY"]
    for field in (
        "107=Infosys Ltd",
        "167=CS",
        "865=99",
        f"867={expected_infy.previous_close}",
        "868=PREVIOUS_CLOSE",
        "233=SECTOR",
        f"234={expected_infy.sector}",
        "233=MININCR",
        "234=0.05",
        "561=1",
        f"58={expected_infy.sector}",
    ):
        assert field in infy, (field, infy)

    client.send_raw([(320, "sec-2"), (559, "0"), (55, "NOSUCH")], "x")
    none = await client.wait_for(lambda r: r.msg_type == "y" and r[320] == "sec-2")
    assert none[560] == "2"


async def test_subscription_gets_a_snapshot_then_incremental_changes(exchange, admin, fix_clients):
    client = await fix_clients(exchange, "BROKER_MD")
    subscribe(client, "md-1", ["INFY", "TCS"], depth=5)
    snapshots = {}
    await wait_until(lambda: len(client.messages("W")) == 2, 20, "no snapshots")
    for message in client.messages("W"):
        snapshots[message[55]] = entries(message, 269)
    # An empty book: just the volume and the previous close (from the previous business day).
    assert [(e[269], e.get(270), e.get(286)) for e in snapshots["INFY"]] == [
        ("B", None, None),
        ("5", "1530.20", "4"),
    ]

    await admin.PlaceOrder(
        pb.PlaceOrderRequest(
            symbol="INFY",
            side=trading_pb2.SIDE_SELL,
            quantity=10,
            order_type=trading_pb2.ORDER_TYPE_LIMIT,
            price=decimal_pb2.Decimal(value="1531.00"),
        )
    )
    offer = await client.wait_for(lambda r: r.msg_type == "X", what="incremental")
    assert [(e[279], e[269], e[55], e[270], e[271], e[290]) for e in entries(offer, 279)] == [
        ("0", "1", "INFY", "1531.00", "10", "1")
    ]
    await admin.PlaceOrder(
        pb.PlaceOrderRequest(
            participant="OTHER",
            symbol="INFY",
            side=trading_pb2.SIDE_BUY,
            quantity=4,
            order_type=trading_pb2.ORDER_TYPE_MARKET,
        )
    )
    await wait_until(lambda: len(client.messages("X")) >= 2, 20, "no trade update")
    trade = {(e[269], e[279]): e for e in entries(client.messages("X")[1], 279)}
    assert (trade[("2", "0")][270], trade[("2", "0")][271]) == ("1531.00", "4")
    assert trade[("B", "1")][271] == "4"
    assert trade[("1", "1")][271] == "6"
    assert trade[("2", "0")].get(273)  # the exchange's time of the trade

    # A request for unknown symbols is refused as a whole.
    subscribe(client, "md-2", ["INFY", "NOSUCH"])
    reject = await client.wait_for(lambda r: r.msg_type == "Y")
    assert (reject[262], reject[281]) == ("md-2", "0") and "NOSUCH" in reject[58]


async def test_live_market_fills_market_orders_and_moves_prices(make_stack, fix_clients):
    stack = await make_stack(
        ["exchange_sim"],
        extra_env={
            "BROKERMESH_EXCHANGE_SYMBOL_PERIOD_MS": "200",
            "BROKERMESH_EXCHANGE_TRADES_PER_MINUTE": "120",
            "BROKERMESH_EXCHANGE_SEED": "7",
        },
    )
    broker = await fix_clients(stack)
    market = await fix_clients(stack, "BROKER_MD")
    cl = fm.new_order(broker, "RELIANCE", "1", "25")  # MARKET
    done = await broker.wait_for(lambda r: r.get(11) == cl and r[39] in ("2", "4"), what="market order done")
    assert done[39] == "2" and done[14] == "25"
    subscribe(market, "live", ["RELIANCE", "TCS", "INFY", "HDFCBANK"])
    # Quotes and trades keep coming, several symbols in one message.
    await wait_until(lambda: len(market.messages("X")) >= 5, 30, "the market is not moving")
    symbols_per_message = [len({e[55] for e in entries(x, 279)}) for x in market.messages("X")]
    assert max(symbols_per_message) > 1
    traded = {e[55] for x in market.messages("X") for e in entries(x, 279) if e[269] == "2"}
    assert traded


async def trading_state_when(admin, condition, timeout: float = 30.0) -> pb.TradingState:
    """Poll the trading state until `condition` holds (the exchange checks once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        state = await admin.GetTradingState(pb.GetTradingStateRequest())
        if condition(state) or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.1)


async def test_a_crash_trips_the_market_wide_circuit_breaker_and_trading_resumes(make_stack, fix_clients):
    stack = await make_stack(
        ["exchange_sim"],
        extra_env={
            "BROKERMESH_EXCHANGE_SYMBOL_PERIOD_MS": "200",
            "BROKERMESH_EXCHANGE_TRADES_PER_MINUTE": "600",
            "BROKERMESH_EXCHANGE_CIRCUIT_BREAKERS": "10:3,15:3600,20:day",
        },
    )
    broker = await fix_clients(stack)
    async with service_channel(stack.plan, "exchange_sim") as ch:
        admin = exchange_admin_pb2_grpc.ExchangeAdminServiceStub(ch)
        state = await admin.GetTradingState(pb.GetTradingStateRequest())
        assert state.session_open and not state.market_halted and state.circuit_breaker_level == 0
        await admin.SetScenario(pb.SetScenarioRequest(shock_market_percent=decimal_pb2.Decimal(value="-12")))

        state = await trading_state_when(admin, lambda s: s.market_halted)
        assert state.market_halted and state.circuit_breaker_level == 1, state
        assert Decimal(state.index_change_percent.value) <= Decimal(-10)
        assert "circuit breaker level 1" in state.market_halt_reason
        assert state.HasField("halt_end_time")

        cl = fm.new_order(broker, "INFY", "1", "1")
        rejected = await broker.wait_for(lambda r: r.get(11) == cl)
        assert (rejected[150], rejected[103]) == ("8", "2") and "circuit breaker" in rejected[58]

        state = await trading_state_when(admin, lambda s: not s.market_halted)
        assert not state.market_halted and state.circuit_breaker_level == 1
        cl = fm.new_order(broker, "INFY", "1", "1")
        assert (await broker.wait_for(lambda r: r.get(11) == cl))[150] == "0"
