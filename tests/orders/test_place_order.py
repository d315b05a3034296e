"""PlaceOrder through gRPC against the real OMS process: validation, idempotency, funds,
pre-trade risk, the command it sends and what it records."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal

import grpc
import pytest

from brokermesh.orders.v1 import orders_pb2
from brokermesh.type.v1 import trading_pb2
from svc_runtime.errors import details_of
from tests.orders.conftest import Oms, dec, price
from tests.support.polling import eventually


async def test_a_limit_buy_blocks_funds_once_and_sends_one_new_order_command(oms: Oms) -> None:
    user = oms.new_user("100000.00")
    order = await oms.place(user, quantity=10, limit_price=dec("1530.00"))
    assert order.status == orders_pb2.ORDER_STATUS_PENDING_EXCHANGE
    assert order.version == 1 and order.leaves_quantity == 10 and order.filled_quantity == 0
    assert order.name == f"users/{user}/orders/{order.order_id}"
    assert order.time_in_force == trading_pb2.TIME_IN_FORCE_DAY and order.product == trading_pb2.PRODUCT_CNC
    block = oms.fakes.funds.blocks[order.order_id]
    assert (block.quantity, block.price, block.amount) == (10, Decimal("1530.00"), Decimal("15300.00"))
    assert oms.fakes.funds.cash[user] == Decimal("84700.00")

    commands = await eventually(lambda: _commands(oms, order.order_id))
    assert len(commands) == 1
    new = commands[0].new_order
    assert (new.symbol, new.side, new.type, new.quantity, new.limit_price.value) == (
        "INFY",
        trading_pb2.SIDE_BUY,
        trading_pb2.ORDER_TYPE_LIMIT,
        10,
        "1530.00",
    )
    assert commands[0].order_version == 1 and commands[0].user_id == user
    assert await oms.get(order) == order


async def _commands(oms: Oms, order_id: str) -> list:  # type: ignore[type-arg]
    return oms.fakes.command_log.of(order_id)


async def test_same_key_same_order_returns_the_original_and_blocks_once(oms: Oms) -> None:
    user = oms.new_user()
    first = await oms.place(user, "key-1")
    again = await oms.place(user, "key-1", limit_price=dec("1530"))  # same price, other spelling
    assert again.order_id == first.order_id
    # Many concurrent retries of a new key still make one order and one block.
    results = await asyncio.gather(*(oms.place(user, "key-2") for _ in range(8)))
    assert len({r.order_id for r in results}) == 1
    listed = await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{user}"))
    assert len(listed.orders) == 2
    assert sum(1 for b in oms.fakes.funds.blocks.values() if b.user_id == user) == 2


async def test_same_key_with_another_order_is_already_exists_and_changes_nothing(oms: Oms) -> None:
    user = oms.new_user()
    first = await oms.place(user, "key-x", quantity=10)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.place(user, "key-x", quantity=11)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details_of(err.value).reason == "REQUEST_ID_REUSED"
    assert (await oms.get(first)).quantity == 10
    # Keys are per user: another user may use the same one.
    other = await oms.place(oms.new_user(), "key-x", quantity=11)
    assert other.order_id != first.order_id


async def test_insufficient_funds_passes_through_and_nothing_is_written(oms: Oms) -> None:
    user = oms.new_user("1000.00")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.place(user, "poor", quantity=10, limit_price=dec("1530.00"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = details_of(err.value)
    assert details.reason == "INSUFFICIENT_FUNDS" and details.metadata["available"] == "1000.00"
    listed = await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{user}"))
    assert list(listed.orders) == []
    assert oms.fakes.funds.cash[user] == Decimal("1000.00")
    assert not [b for b in oms.fakes.funds.blocks.values() if b.user_id == user]
    # The key is free again: with money, the same request now goes through.
    oms.fakes.funds.deposit(user, "20000.00")
    placed = await oms.place(user, "poor", quantity=10, limit_price=dec("1530.00"))
    assert placed.status == orders_pb2.ORDER_STATUS_PENDING_EXCHANGE


async def test_a_sell_blocks_holdings(oms: Oms) -> None:
    user = oms.new_user()
    oms.fakes.funds.shares[(user, "INFY")] = 5
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.place(user, side=trading_pb2.SIDE_SELL, quantity=6)
    assert details_of(err.value).reason == "INSUFFICIENT_HOLDINGS"
    sold = await oms.place(user, side=trading_pb2.SIDE_SELL, quantity=5)
    assert oms.fakes.funds.blocks[sold.order_id].kind == "SHARES"
    assert oms.fakes.funds.shares[(user, "INFY")] == 0


@pytest.mark.parametrize(
    ("order", "field", "reason"),
    [
        ({"symbol": "NOPE"}, "order.symbol", "UNKNOWN_SYMBOL"),
        ({"quantity": 0}, "order.quantity", "NOT_POSITIVE"),
        (
            {"symbol": "LOTS", "quantity": 30, "limit_price": dec("100.00")},
            "order.quantity",
            "QUANTITY_NOT_IN_LOTS",
        ),
        ({"limit_price": dec("1530.03")}, "order.limit_price", "PRICE_NOT_ON_TICK"),
        ({"limit_price": dec("1530.005")}, "order.limit_price", "TOO_PRECISE"),
        ({"limit_price": None}, "order.limit_price", "MISSING_LIMIT_PRICE"),
        ({"side": trading_pb2.SIDE_UNSPECIFIED}, "order.side", "MISSING_SIDE"),
        ({"type": 42}, "order.type", "INVALID_ENUM"),
        ({"limit_price": dec("2000.00")}, "order.limit_price", "PRICE_OUTSIDE_COLLAR"),
    ],
)
async def test_bad_orders_are_invalid_argument_naming_the_field(
    oms: Oms, order: dict[str, object], field: str, reason: str
) -> None:
    user = oms.new_user()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.place(user, **order)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = details_of(err.value)
    assert details.reason == reason and [v.field for v in details.violations] == [field]
    listed = await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{user}"))
    assert list(listed.orders) == []


async def test_missing_request_id_and_bad_parent_are_refused(oms: Oms) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.stub.PlaceOrder(orders_pb2.PlaceOrderRequest(parent="users/u_1", order=orders_pb2.Order()))
    assert details_of(err.value).reason == "MISSING_REQUEST_ID"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.stub.PlaceOrder(orders_pb2.PlaceOrderRequest(parent="users/-", request_id="k"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_another_users_order_is_not_found(oms: Oms) -> None:
    owner, stranger = oms.new_user(), oms.new_user()
    order = await oms.place(owner)
    for call in (
        oms.stub.GetOrder(orders_pb2.GetOrderRequest(name=f"users/{stranger}/orders/{order.order_id}")),
        oms.stub.CancelOrder(orders_pb2.CancelOrderRequest(name=f"users/{stranger}/orders/{order.order_id}")),
        oms.stub.ModifyOrder(
            orders_pb2.ModifyOrderRequest(name=f"users/{stranger}/orders/{order.order_id}", quantity=20)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await oms.get(order)).status == orders_pb2.ORDER_STATUS_PENDING_EXCHANGE


async def test_order_rate_limit_is_resource_exhausted_with_a_retry_delay_and_writes_nothing(oms: Oms) -> None:
    user = oms.new_user()
    # The module's OMS allows a burst of 10 and refills one order every 20 s.
    for i in range(10):
        await oms.place(user, f"burst-{i}")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.place(user, "burst-10")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = details_of(err.value)
    assert details.reason == "ORDER_RATE_LIMITED"
    assert details.retry_after_seconds is not None and 0 < details.retry_after_seconds <= 20
    listed = await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{user}", page_size=100))
    assert len(listed.orders) == 10
    # A retry of an order already placed is not a new order: it is answered, not limited.
    assert (await oms.place(user, "burst-3")).client_order_id == "burst-3"
    # Other users are not affected.
    await oms.place(oms.new_user())


async def test_market_orders_are_protected_at_the_collar_and_sent_as_limits(oms: Oms) -> None:
    user = oms.new_user()
    await oms.tick("TCS", "3900.00", bid="3899.95", ask="3900.05")

    async def placed() -> orders_pb2.Order | None:
        order = await oms.place(
            user, symbol="TCS", type=trading_pb2.ORDER_TYPE_MARKET, limit_price=None, quantity=2
        )
        return order if order.protection_price.value == "4095.00" else None

    # The tick reaches the OMS asynchronously; until it does the previous close is used.
    order = await eventually(placed)
    assert order.type == trading_pb2.ORDER_TYPE_MARKET and not order.HasField("limit_price")
    assert oms.fakes.funds.blocks[order.order_id].price == Decimal("4095.00")
    command = (await eventually(lambda: _commands(oms, order.order_id)))[0].new_order
    assert command.type == trading_pb2.ORDER_TYPE_LIMIT and command.limit_price.value == "4095.00"

    audit = await oms.stub.ListAuditRecords(orders_pb2.ListAuditRecordsRequest(parent=order.name))
    assert price(audit.records[0].last_price) == Decimal("3900.00")
    assert price(audit.records[0].bid_price) == Decimal("3899.95")


async def test_market_orders_without_any_reference_price_are_refused(oms: Oms) -> None:
    user = oms.new_user()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.place(user, symbol="NOREF", type=trading_pb2.ORDER_TYPE_MARKET, limit_price=None)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(err.value).reason == "NO_REFERENCE_PRICE"
    # A limit order needs no reference price.
    await oms.place(user, symbol="NOREF", limit_price=dec("10.00"))


async def test_kill_switch_and_symbol_halts_stop_new_orders_but_not_retries(oms: Oms) -> None:
    user = oms.new_user()
    before = await oms.place(user, "before-halt")
    controls = await oms.stub.UpdateTradingControls(
        orders_pb2.UpdateTradingControlsRequest(
            trading_controls=orders_pb2.TradingControls(trading_halted=True, halt_reason="risk drill"),
            request_id="halt-1",
        ),
        metadata=(("x-actor", "admin:risk-desk"),),
    )
    assert controls.trading_halted and controls.version >= 1
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await oms.place(user, "during-halt")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details_of(err.value).reason == "TRADING_HALTED" and "risk drill" in err.value.details()
        assert (await oms.place(user, "before-halt")).order_id == before.order_id
    finally:
        await oms.stub.UpdateTradingControls(
            orders_pb2.UpdateTradingControlsRequest(
                trading_controls=orders_pb2.TradingControls(trading_halted=False, halted_symbols=["TCS"]),
                request_id="halt-2",
            )
        )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.place(user, symbol="TCS", limit_price=dec("3890.00"))
    assert details_of(err.value).reason == "SYMBOL_HALTED"
    await oms.place(user, "after-halt")
    await oms.stub.UpdateTradingControls(
        orders_pb2.UpdateTradingControlsRequest(
            trading_controls=orders_pb2.TradingControls(halted_symbols=[]), request_id="halt-3"
        )
    )
    audit = await oms.stub.ListAuditRecords(
        orders_pb2.ListAuditRecordsRequest(parent="users/-", page_size=1000)
    )
    changes = [r for r in audit.records if r.action == "TRADING_CONTROLS"]
    assert [r.actor for r in changes][:1] == ["admin:risk-desk"] and len(changes) == 3


async def test_every_placement_is_audited_with_who_where_and_the_market(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, metadata=(("x-client-ip", "203.0.113.7"), ("x-request-id", "req-audit-1")))
    audit = await oms.stub.ListAuditRecords(orders_pb2.ListAuditRecordsRequest(parent=order.name))
    (record,) = audit.records
    assert (record.action, record.actor, record.client_ip, record.request_id) == (
        "PLACE",
        f"user:{user}",
        "203.0.113.7",
        "req-audit-1",
    )
    assert (record.order_version, record.to_status) == (1, orders_pb2.ORDER_STATUS_PENDING_EXCHANGE)
    assert record.record_time.seconds > 0


async def test_list_orders_pages_newest_first_and_filters(oms: Oms) -> None:
    user = oms.new_user()
    placed = [await oms.place(user, f"page-{i}") for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await oms.stub.ListOrders(
            orders_pb2.ListOrdersRequest(parent=f"users/{user}", page_size=2, page_token=token)
        )
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == [o.order_id for o in reversed(placed)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.stub.ListOrders(
            orders_pb2.ListOrdersRequest(
                parent=f"users/{oms.new_user()}", page_size=2, page_token=page_token(oms, user)
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    filled = await oms.stub.ListOrders(
        orders_pb2.ListOrdersRequest(parent=f"users/{user}", statuses=[orders_pb2.ORDER_STATUS_FILLED])
    )
    assert list(filled.orders) == []
    everyone = await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent="users/-", page_size=500))
    assert {o.order_id for o in placed} <= {o.order_id for o in everyone.orders}


def page_token(oms: Oms, user: str) -> str:
    # A token made for one user's listing must not be accepted for another's.
    from svc_runtime.pagination import encode_token

    return encode_token("ord_ZZZ", "orders", user, [])


async def test_placements_past_capacity_are_refused_at_once_and_write_nothing(
    start_own_oms: Callable[..., Awaitable[Oms]],
) -> None:
    oms = await start_own_oms({"BROKERMESH_ORDERS_MAX_PLACING": "2"})
    users = [oms.new_user() for _ in range(6)]
    # 30 placements at once against room for 2: some are refused, the rest are placed.
    results = await asyncio.gather(
        *(oms.place(users[i % len(users)], f"rush-{i}") for i in range(30)), return_exceptions=True
    )
    placed = [r for r in results if isinstance(r, orders_pb2.Order)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(placed) + len(refused) == 30
    assert placed and refused
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = details_of(error)
        assert details.reason == "SERVER_BUSY"
        assert details.retry_after_seconds is not None and details.retry_after_seconds > 0
    listed = 0
    for user in users:
        page = await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{user}", page_size=100))
        listed += len(page.orders)
    assert listed == len(placed)
    # Once the rush is over, a refused order goes through on retry.
    index = next(i for i, r in enumerate(results) if isinstance(r, grpc.aio.AioRpcError))
    retried = await oms.place(users[index % len(users)], f"rush-{index}")
    assert retried.client_order_id == f"rush-{index}"
    assert await oms.invariants() == []


async def test_concurrent_placements_are_accepted_together_each_with_its_own_outcome(oms: Oms) -> None:
    # Every third user cannot pay: refused alone, while the others' orders are accepted.
    users = [oms.new_user("100000.00" if i % 3 else "1000.00") for i in range(24)]
    results = await asyncio.gather(*(oms.place(user, "together") for user in users), return_exceptions=True)
    placed = [r for r in results if isinstance(r, orders_pb2.Order)]
    for i, result in enumerate(results):
        if i % 3:
            assert isinstance(result, orders_pb2.Order), result
            assert result.status == orders_pb2.ORDER_STATUS_PENDING_EXCHANGE
            assert oms.fakes.funds.blocks[result.order_id].user_id == users[i]
        else:
            assert isinstance(result, grpc.aio.AioRpcError)
            assert details_of(result).reason == "INSUFFICIENT_FUNDS"
            listed = await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{users[i]}"))
            assert list(listed.orders) == []
    # Group commit: acceptances that arrived together share a transaction (their events
    # carry its id), and each order still has its own event, audit row and command.
    xids, audited = await _acceptance_records(oms, [o.order_id for o in placed])
    assert len(xids) == len(placed) and len(set(xids.values())) < len(placed)
    assert audited == {o.order_id: 1 for o in placed}
    for order in placed:
        assert len(await eventually(lambda order=order: _commands(oms, order.order_id))) == 1
    assert await oms.invariants() == []


async def _acceptance_records(oms: Oms, order_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Each order's ACCEPTED event's transaction id, and its number of PLACE audit rows."""
    import asyncpg

    from svc_runtime import db

    conn = await asyncpg.connect(db.asyncpg_dsn(oms.stack.plan.database_url))
    try:
        events = await conn.fetch(
            "SELECT order_id, xid FROM orders.order_events WHERE order_id = ANY($1::text[]) "
            "AND event_type = 'ACCEPTED'",
            order_ids,
        )
        audits = await conn.fetch(
            "SELECT order_id, count(*) AS n FROM orders.audit_log WHERE order_id = ANY($1::text[]) "
            "AND action = 'PLACE' GROUP BY order_id",
            order_ids,
        )
    finally:
        await conn.close()
    return {r["order_id"]: r["xid"] for r in events}, {r["order_id"]: r["n"] for r in audits}
