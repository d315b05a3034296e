"""The OMS with every real neighbour: svc_funds, svc_marketdata, svc_exec and the exchange
simulator over FIX, each its own process. After each test the cross-service audit
(I1–I9, docs/architecture.md §5) must be clean."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import grpc
import pytest

from brokermesh.exchange.v1 import exchange_admin_pb2, exchange_admin_pb2_grpc
from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc
from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_runtime import admin, audit, db
from svc_runtime.errors import details_of
from svc_runtime.grpc_client import raw_channel, signing_interceptors
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.support.grpc import plain_channel
from tests.support.infra import SharedInfra, unique_name
from tests.support.polling import eventually

S = orders_pb2
SERVICES = ("exchange_sim", "svc_funds", "svc_marketdata", "svc_exec", "svc_orders")
ENV = {"BROKERMESH_ORDERS_SWEEP_AFTER_SECONDS": "3", "BROKERMESH_ORDERS_SWEEP_INTERVAL_SECONDS": "0.5"}


@pytest.fixture(scope="module")
async def stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    handle = await new_stack(infra, tmp_path_factory.mktemp("orders-stack"), SERVICES, ENV)
    yield handle
    await handle.stop()


@pytest.fixture
async def orders(stack: Stack) -> AsyncIterator[orders_pb2_grpc.OrdersServiceStub]:
    channel = plain_channel(
        stack.plan,
        "svc_orders",
        options=[("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 300)],
    )
    yield orders_pb2_grpc.OrdersServiceStub(channel)
    await channel.close()
    report = await audit.run(
        stack.plan.describe(), signer=stack.plan.operator_signer("auditor"), settle_seconds=30
    )
    assert report.complete, report.render()


async def open_account(stack: Stack, deposit: str) -> str:
    name = unique_name("u")
    created = await admin.create_user(
        stack.plan.target("svc_funds"), name, "pw-" + name, name, deposit, signer=stack.plan.operator_signer()
    )
    return str(created["account"]["user_id"])


async def last_price(stack: Stack, symbol: str) -> Decimal:
    async with plain_channel(stack.plan, "svc_marketdata") as channel:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)

        async def quoted() -> Decimal | None:
            reply = await stub.BatchGetQuotes(marketdata_pb2.BatchGetQuotesRequest(symbols=[symbol]))
            value = reply.quotes[0].last_price.value if reply.quotes else ""
            return Decimal(value) if value else None

        return await eventually(quoted, timeout=60)


def limit_order(symbol: str, side: int, quantity: int, price: Decimal) -> orders_pb2.Order:
    return S.Order(
        symbol=symbol,
        side=side,
        type=trading_pb2.ORDER_TYPE_LIMIT,
        quantity=quantity,
        limit_price=decimal_pb2.Decimal(value=str(price)),
    )


def on_tick(value: Decimal) -> Decimal:
    return (value / Decimal("0.05")).to_integral_value() * Decimal("0.05")


async def wait_status(
    orders: orders_pb2_grpc.OrdersServiceStub, name: str, statuses: set[int], timeout: float = 30
) -> orders_pb2.Order:
    async def reached() -> orders_pb2.Order | None:
        order = await orders.GetOrder(S.GetOrderRequest(name=name))
        return order if order.status in statuses else None

    return await eventually(reached, timeout=timeout)


async def test_market_buy_fills_at_the_exchange_and_settles(
    stack: Stack, orders: orders_pb2_grpc.OrdersServiceStub
) -> None:
    user = await open_account(stack, "200000.00")
    placed = await orders.PlaceOrder(
        S.PlaceOrderRequest(
            parent=f"users/{user}",
            order=S.Order(
                symbol="INFY", side=trading_pb2.SIDE_BUY, type=trading_pb2.ORDER_TYPE_MARKET, quantity=5
            ),
            request_id="mkt-1",
        ),
        metadata=(("x-client-ip", "198.51.100.4"),),
    )
    assert placed.status == S.ORDER_STATUS_PENDING_EXCHANGE and placed.protection_price.value
    filled = await wait_status(orders, placed.name, {S.ORDER_STATUS_FILLED})
    assert filled.filled_quantity == 5 and Decimal(filled.average_price.value) <= Decimal(
        placed.protection_price.value
    )
    trades = await orders.ListTrades(S.ListTradesRequest(parent=f"users/{user}", order_id=placed.order_id))
    assert sum(t.quantity for t in trades.trades) == 5
    records = (await orders.ListAuditRecords(S.ListAuditRecordsRequest(parent=placed.name))).records
    assert records[0].client_ip == "198.51.100.4" and records[0].last_price.value
    assert [r.order_version for r in records] == list(range(1, filled.version + 1))


async def test_a_resting_order_is_cancelled_by_the_exchange_and_its_block_released(
    stack: Stack, orders: orders_pb2_grpc.OrdersServiceStub
) -> None:
    user = await open_account(stack, "200000.00")
    price = on_tick(await last_price(stack, "TCS") * Decimal("0.93"))
    placed = await orders.PlaceOrder(
        S.PlaceOrderRequest(
            parent=f"users/{user}",
            order=limit_order("TCS", trading_pb2.SIDE_BUY, 3, price),
            request_id="rest-1",
        )
    )
    await wait_status(orders, placed.name, {S.ORDER_STATUS_OPEN})
    cancelling = await orders.CancelOrder(S.CancelOrderRequest(name=placed.name, request_id="cancel-1"))
    assert cancelling.status in (S.ORDER_STATUS_PENDING_CANCEL, S.ORDER_STATUS_CANCELLED)
    cancelled = await wait_status(orders, placed.name, {S.ORDER_STATUS_CANCELLED})
    assert cancelled.leaves_quantity == 0
    async with plain_channel(stack.plan, "svc_funds") as channel:
        funds = funds_pb2_grpc.FundsServiceStub(channel)

        async def released() -> funds_pb2.Funds | None:
            balance = await funds.GetFunds(funds_pb2.GetFundsRequest(name=f"users/{user}/funds"))
            return balance if Decimal(balance.blocked.value or "0") == 0 else None

        balance = await eventually(released)
    assert Decimal(balance.available.value) == Decimal("200000.00")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await orders.CancelOrder(S.CancelOrderRequest(name=placed.name, request_id="cancel-2"))
    assert details_of(err.value).reason == "ORDER_NOT_CANCELLABLE"


async def test_a_modified_order_is_replaced_at_the_exchange(
    stack: Stack, orders: orders_pb2_grpc.OrdersServiceStub
) -> None:
    user = await open_account(stack, "500000.00")
    price = on_tick(await last_price(stack, "HDFCBANK") * Decimal("0.94"))
    placed = await orders.PlaceOrder(
        S.PlaceOrderRequest(
            parent=f"users/{user}",
            order=limit_order("HDFCBANK", trading_pb2.SIDE_BUY, 4, price),
            request_id="mod-1",
        )
    )
    await wait_status(orders, placed.name, {S.ORDER_STATUS_OPEN})
    await orders.ModifyOrder(S.ModifyOrderRequest(name=placed.name, quantity=8, request_id="mod-up"))
    modified = await wait_status(orders, placed.name, {S.ORDER_STATUS_OPEN})
    assert modified.quantity == 8
    await orders.CancelOrder(S.CancelOrderRequest(name=placed.name))
    await wait_status(orders, placed.name, {S.ORDER_STATUS_CANCELLED})


async def test_sigkill_of_the_oms_while_orders_flow_loses_and_doubles_nothing(
    stack: Stack, orders: orders_pb2_grpc.OrdersServiceStub
) -> None:
    users = [await open_account(stack, "5000000.00") for _ in range(3)]
    keys = {user: [f"{user}-k{i}" for i in range(8)] for user in users}
    symbols = ["INFY", "TCS", "RELIANCE", "SBIN"]
    requests = {
        key: S.Order(
            symbol=random.choice(symbols),
            side=trading_pb2.SIDE_BUY,
            type=trading_pb2.ORDER_TYPE_MARKET,
            quantity=random.randint(1, 4),
        )
        for user in users
        for key in keys[user]
    }
    answers: dict[str, orders_pb2.Order] = {}
    refused: dict[str, str] = {}

    async def client(user: str) -> None:
        for key in keys[user]:
            while True:
                try:
                    answers[key] = await orders.PlaceOrder(
                        S.PlaceOrderRequest(parent=f"users/{user}", order=requests[key], request_id=key),
                        timeout=15,
                    )
                    break
                except grpc.aio.AioRpcError as error:
                    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        await asyncio.sleep(0.05)
                        continue
                    refused[key] = details_of(error).reason
                    break

    async def chaos() -> None:
        for _ in range(2):
            await asyncio.sleep(random.uniform(0.3, 0.8))
            await stack.kill("svc_orders")
            await asyncio.sleep(0.3)
            await stack.start_service("svc_orders")

    await asyncio.gather(*(client(u) for u in users), chaos())
    assert not refused, refused

    terminal = {S.ORDER_STATUS_FILLED, S.ORDER_STATUS_REJECTED}
    for key, order in answers.items():
        answers[key] = await wait_status(orders, order.name, terminal, timeout=60)
    for user in users:
        listed = await orders.ListOrders(S.ListOrdersRequest(parent=f"users/{user}", page_size=100))
        assert sorted(o.client_order_id for o in listed.orders) == sorted(keys[user])
        trades = await orders.ListTrades(S.ListTradesRequest(parent=f"users/{user}", page_size=500))
        filled = Counter()
        for trade in trades.trades:
            filled[trade.order_id] += trade.quantity
        for order in listed.orders:
            assert filled[order.order_id] == order.filled_quantity
    async with plain_channel(stack.plan, "exchange_sim") as channel:
        exchange = exchange_admin_pb2_grpc.ExchangeAdminServiceStub(channel)
        at_exchange = (
            await exchange.ListExchangeOrders(exchange_admin_pb2.ListExchangeOrdersRequest())
        ).orders
    ours = {o.exchange_order_id for o in answers.values() if o.exchange_order_id}
    # Every order the broker sent reached the exchange exactly once.
    assert len(ours) == len([o for o in answers.values() if o.status == S.ORDER_STATUS_FILLED])
    assert ours <= {o.exchange_order_id for o in at_exchange}


async def test_stop_and_stop_limit_orders_show_their_trigger(
    stack: Stack, orders: orders_pb2_grpc.OrdersServiceStub
) -> None:
    """The exchange reports a trigger as a FIX 4.4 restatement; the broker shows it as the
    order's own TRIGGERED step, TRIGGER_PENDING → OPEN, before the fills."""
    user = await open_account(stack, "500000.00")
    last = await last_price(stack, "SBIN")
    # BUY stops at the last price: the next trade at or above it triggers them.
    kinds = {
        "stop": S.Order(symbol="SBIN", side=trading_pb2.SIDE_BUY, type=trading_pb2.ORDER_TYPE_STOP,
                        quantity=2, stop_price=decimal_pb2.Decimal(value=str(last))),
        "stop-limit": S.Order(symbol="SBIN", side=trading_pb2.SIDE_BUY, type=trading_pb2.ORDER_TYPE_STOP_LIMIT,
                              quantity=2, stop_price=decimal_pb2.Decimal(value=str(last)),
                              limit_price=decimal_pb2.Decimal(value=str(on_tick(last * Decimal("1.03"))))),
    }  # fmt: skip
    placed = [
        await orders.PlaceOrder(
            S.PlaceOrderRequest(parent=f"users/{user}", order=order, request_id=f"{user}-{key}")
        )
        for key, order in kinds.items()
    ]
    async with raw_channel(
        stack.plan.target("exchange_sim"),
        interceptors=signing_interceptors(stack.plan.service_signer("gateway")),
    ) as channel:
        exchange = exchange_admin_pb2_grpc.ExchangeAdminServiceStub(channel)

        async def triggered() -> bool:
            now = [await orders.GetOrder(S.GetOrderRequest(name=p.name)) for p in placed]
            if all(o.status == S.ORDER_STATUS_FILLED for o in now):
                return True
            # Buy at the offer, which is above the last trade: a trade at or through the stops.
            await exchange.PlaceOrder(
                exchange_admin_pb2.PlaceOrderRequest(
                    participant="TAKER", symbol="SBIN", side=trading_pb2.SIDE_BUY, quantity=1,
                    order_type=trading_pb2.ORDER_TYPE_MARKET,
                )
            )  # fmt: skip
            return False

        await eventually(triggered, timeout=60, interval=1.0)
    for order in placed:
        records = (await orders.ListAuditRecords(S.ListAuditRecordsRequest(parent=order.name))).records
        steps = [(r.from_status, r.to_status) for r in records if r.action == "EXCHANGE_REPORT"]
        assert (S.ORDER_STATUS_TRIGGER_PENDING, S.ORDER_STATUS_OPEN) in steps, (order.type, steps)
    # Clients see the trigger as its own event on the order update stream.
    stream = orders.StreamOrderUpdates(
        S.StreamOrderUpdatesRequest(parent=f"users/{user}", after_event_id=await first_event_id(stack, user))
    )
    seen: set[tuple[str, int]] = set()
    while not all((o.order_id, S.ORDER_EVENT_TYPE_FILLED) in seen for o in placed):
        update = await asyncio.wait_for(stream.read(), 30)
        seen.add((update.event.order.order_id, update.event.type))
    stream.cancel()
    assert all((o.order_id, S.ORDER_EVENT_TYPE_TRIGGERED) in seen for o in placed), seen


async def first_event_id(stack: Stack, user: str) -> str:
    """The id of the user's first order event, as a client would have kept it."""
    conn = await asyncpg.connect(db.asyncpg_dsn(stack.plan.database_url))
    try:
        return str(
            await conn.fetchval(
                "SELECT event_id FROM orders.order_events WHERE user_id = $1 ORDER BY seq LIMIT 1", user
            )
        )
    finally:
        await conn.close()
