"""An order's life after placement: execution reports (in order, repeated, reordered),
cancels, modifications, trades and the update stream — all through the real OMS process,
with reports published to JetStream as svc_exec publishes them."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.orders.v1 import orders_pb2
from svc_runtime.errors import details_of
from tests.orders.conftest import Oms, dec, price
from tests.support.polling import eventually

S = orders_pb2


async def test_new_partial_and_full_fills_make_a_filled_order_with_its_trades(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, quantity=10, limit_price=dec("1530.00"))
    await oms.ack(order)
    opened = await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    assert opened.exchange_order_id == f"X-{order.order_id}" and opened.version == 2
    await oms.fill(order, 4, "1529.50", 4)
    partial = await oms.wait_status(order, S.ORDER_STATUS_PARTIALLY_FILLED)
    assert (partial.filled_quantity, partial.leaves_quantity, price(partial.average_price)) == (
        4,
        6,
        Decimal("1529.50"),
    )
    await oms.fill(order, 6, "1530.00", 10)
    filled = await oms.wait_status(order, S.ORDER_STATUS_FILLED)
    # (4 × 1529.50 + 6 × 1530.00) / 10 = 1529.80
    assert (filled.filled_quantity, filled.leaves_quantity, price(filled.average_price)) == (
        10,
        0,
        Decimal("1529.80"),
    )
    assert filled.version == 4
    trades = await oms.stub.ListTrades(S.ListTradesRequest(parent=f"users/{user}", order_id=order.order_id))
    assert [t.quantity for t in trades.trades] == [6, 4]
    assert trades.trades[0].name == f"users/{user}/trades/{trades.trades[0].exec_id}"
    assert await oms.invariants() == []


async def test_repeated_and_reordered_reports_record_each_fill_once(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, quantity=10)
    # The second fill arrives first, then the first, then both again, then the first
    # again under a new exec id (same cumulative quantity), then a late acknowledgement.
    second = await oms.fill(order, 6, "1530.00", 10)
    await oms.wait_status(order, S.ORDER_STATUS_PARTIALLY_FILLED)
    first = await oms.fill(order, 4, "1529.00", 4)
    await oms.wait_status(order, S.ORDER_STATUS_FILLED)
    await oms.fill(order, 6, "1530.00", 10, exec_id=second)
    await oms.fill(order, 4, "1529.00", 4, exec_id=first)
    await oms.fill(order, 4, "1529.00", 4)  # same fill, another id
    await oms.ack(order)

    async def all_consumed() -> bool:
        audit = await oms.stub.ListAuditRecords(S.ListAuditRecordsRequest(parent=order.name))
        return len(audit.records) >= 3 and (await _reports_done(oms, order))

    await eventually(all_consumed)
    final = await oms.get(order)
    assert (final.status, final.filled_quantity, final.version) == (S.ORDER_STATUS_FILLED, 10, 3)
    trades = await oms.stub.ListTrades(S.ListTradesRequest(parent=f"users/{user}", order_id=order.order_id))
    assert sorted(t.quantity for t in trades.trades) == [4, 6]
    assert await oms.invariants() == []


async def _reports_done(oms: Oms, order: orders_pb2.Order) -> bool:
    """Every report published so far has been consumed: the consumer has no backlog."""
    info = await oms.js.consumer_info(oms.topology.exec_reports_stream, "svc_orders_exec_reports")
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_cancel_is_pending_until_the_exchange_confirms_and_fills_in_between_count(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, quantity=10)
    await oms.ack(order)
    await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    cancelling = await oms.stub.CancelOrder(S.CancelOrderRequest(name=order.name, request_id="c-1"))
    assert cancelling.status == S.ORDER_STATUS_PENDING_CANCEL
    again = await oms.stub.CancelOrder(S.CancelOrderRequest(name=order.name, request_id="c-1"))
    assert again.version == cancelling.version
    cancels = await eventually(lambda: _of_kind(oms, order.order_id, "cancel_order"))
    assert len(cancels) == 1 and cancels[0].cancel_order.quantity == 10
    # A fill that raced the cancel is real.
    await oms.fill(order, 3, "1530.00", 3)
    racing = await eventually(lambda: _filled(oms, order, 3))
    assert racing.status == S.ORDER_STATUS_PENDING_CANCEL
    await oms.report(
        order,
        er.EXEC_TYPE_CANCELED,
        ord_status=er.ORD_STATUS_CANCELED,
        cumulative_quantity=3,
        text="cancelled by user",
    )
    done = await oms.wait_status(order, S.ORDER_STATUS_CANCELLED)
    assert (done.filled_quantity, done.leaves_quantity, done.status_reason) == (3, 0, "cancelled by user")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.stub.CancelOrder(S.CancelOrderRequest(name=order.name, request_id="c-2"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(err.value).reason == "ORDER_NOT_CANCELLABLE"
    assert await oms.invariants() == []


async def _of_kind(oms: Oms, order_id: str, kind: str) -> list:  # type: ignore[type-arg]
    return [c for c in oms.fakes.command_log.of(order_id) if c.WhichOneof("command") == kind]


async def _filled(oms: Oms, order: orders_pb2.Order, quantity: int) -> orders_pb2.Order | None:
    current = await oms.get(order)
    return current if current.filled_quantity == quantity else None


async def test_a_refused_cancel_returns_the_order_to_work(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, quantity=10)
    await oms.ack(order)
    await oms.fill(order, 2, "1530.00", 2)
    await oms.wait_status(order, S.ORDER_STATUS_PARTIALLY_FILLED)
    await oms.stub.CancelOrder(S.CancelOrderRequest(name=order.name))
    await oms.report(order, er.EXEC_TYPE_CANCEL_REJECTED, text="too late to cancel")
    back = await oms.wait_status(order, S.ORDER_STATUS_PARTIALLY_FILLED)
    assert back.filled_quantity == 2


async def test_a_cancel_the_exchange_answers_with_unknown_order_keeps_the_order_and_its_block(
    oms: Oms,
) -> None:
    """ "Unknown order" in a cancel reject (OrdStatus 8) says nothing about the order: it stays
    working, and its block with it (svc_funds reads the same report the same way)."""
    user = oms.new_user()
    order = await oms.place(user, quantity=10)
    await oms.ack(order)
    await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    await oms.stub.CancelOrder(S.CancelOrderRequest(name=order.name))
    await oms.report(
        order, er.EXEC_TYPE_CANCEL_REJECTED, ord_status=er.ORD_STATUS_REJECTED, text="unknown order"
    )
    back = await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    assert back.leaves_quantity == 10
    assert await eventually(lambda: _reports_done(oms, order))
    assert oms.fakes.funds.blocks[order.order_id].active
    assert await oms.invariants() == []


async def test_modify_up_blocks_more_first_and_modify_down_releases_after_confirmation(oms: Oms) -> None:
    user = oms.new_user("40000.00")
    order = await oms.place(user, quantity=10, limit_price=dec("1530.00"))
    funds = oms.fakes.funds
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.stub.ModifyOrder(S.ModifyOrderRequest(name=order.name, quantity=20))
    assert details_of(err.value).reason == "ORDER_NOT_MODIFIABLE"  # not acknowledged yet
    await oms.ack(order)
    await oms.wait_status(order, S.ORDER_STATUS_OPEN)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.stub.ModifyOrder(S.ModifyOrderRequest(name=order.name, quantity=30, request_id="m-0"))
    assert details_of(err.value).reason == "INSUFFICIENT_FUNDS"
    assert (await oms.get(order)).status == S.ORDER_STATUS_OPEN
    assert funds.blocks[order.order_id].amount == Decimal("15300.00")

    up = await oms.stub.ModifyOrder(S.ModifyOrderRequest(name=order.name, quantity=20, request_id="m-1"))
    assert up.status == S.ORDER_STATUS_PENDING_REPLACE and up.quantity == 10
    assert funds.blocks[order.order_id].amount == Decimal("30600.00")
    replace = (await eventually(lambda: _of_kind(oms, order.order_id, "replace_order")))[0].replace_order
    assert (replace.quantity, replace.limit_price.value) == (20, "1530.00")
    await oms.report(order, er.EXEC_TYPE_REPLACED, ord_status=er.ORD_STATUS_NEW, order_quantity=20)
    modified = await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    assert modified.quantity == 20

    down = await oms.stub.ModifyOrder(
        S.ModifyOrderRequest(name=order.name, quantity=10, limit_price=dec("1525.00"), request_id="m-2")
    )
    assert down.status == S.ORDER_STATUS_PENDING_REPLACE
    assert funds.blocks[order.order_id].amount == Decimal("30600.00")  # lowered only once confirmed
    await oms.report(order, er.EXEC_TYPE_REPLACED, ord_status=er.ORD_STATUS_NEW, order_quantity=10)
    modified = await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    assert (modified.quantity, price(modified.limit_price)) == (10, Decimal("1525.00"))

    async def lowered() -> bool:
        return funds.blocks[order.order_id].amount == Decimal("15250.00")

    await eventually(lowered)
    assert await oms.invariants() == []


async def test_a_refused_modification_lowers_the_raised_block_again(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, quantity=10, limit_price=dec("1530.00"))
    await oms.ack(order)
    await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    await oms.stub.ModifyOrder(S.ModifyOrderRequest(name=order.name, quantity=15, request_id="m-up"))
    assert oms.fakes.funds.blocks[order.order_id].amount == Decimal("22950.00")
    await oms.report(order, er.EXEC_TYPE_CANCEL_REJECTED, text="price band")
    back = await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    assert back.quantity == 10

    async def restored() -> bool:
        return oms.fakes.funds.blocks[order.order_id].amount == Decimal("15300.00")

    await eventually(restored)


async def test_update_stream_replays_after_an_event_then_follows_live(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, quantity=10)
    await oms.ack(order)
    await oms.wait_status(order, S.ORDER_STATUS_OPEN)

    first = oms.stub.StreamOrderUpdates(S.StreamOrderUpdatesRequest(parent=f"users/{user}"))
    second_order = await oms.place(user)
    # A live-only stream gets what is published from now on (the first order's last event
    # may still be on its way from the outbox), and nothing of other users.
    while True:
        update = await asyncio.wait_for(first.read(), 10)
        assert update.event.order.user_id == user
        if update.event.order.order_id == second_order.order_id:
            break
    assert update.event.type == S.ORDER_EVENT_TYPE_ACCEPTED
    first.cancel()

    # Resume from the very first event: replay the rest, then live ones, each once.
    history = await oms.stub.ListAuditRecords(S.ListAuditRecordsRequest(parent=f"users/{user}"))
    assert len(history.records) == 3
    resume_from = await _first_event_id(oms, user)
    stream = oms.stub.StreamOrderUpdates(
        S.StreamOrderUpdatesRequest(parent=f"users/{user}", after_event_id=resume_from)
    )
    replayed = [await asyncio.wait_for(stream.read(), 10) for _ in range(2)]
    assert [(u.event.order.order_id, u.event.order.version) for u in replayed] == [
        (order.order_id, 2),
        (second_order.order_id, 1),
    ]
    await oms.fill(order, 10, "1530.00", 10)
    live = await asyncio.wait_for(stream.read(), 10)
    assert live.event.type == S.ORDER_EVENT_TYPE_FILLED and live.event.trade.quantity == 10
    assert live.event.order.status == S.ORDER_STATUS_FILLED
    stream.cancel()

    with pytest.raises(grpc.aio.AioRpcError) as err:
        call = oms.stub.StreamOrderUpdates(
            S.StreamOrderUpdatesRequest(parent=f"users/{user}", after_event_id="evt_nope")
        )
        await call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _first_event_id(oms: Oms, user: str) -> str:
    """The id of the user's first event, as a client would have kept it from its stream."""
    import asyncpg

    from svc_runtime import db

    conn = await asyncpg.connect(db.asyncpg_dsn(oms.stack.plan.database_url))
    try:
        return await conn.fetchval(
            "SELECT event_id FROM orders.order_events WHERE user_id = $1 ORDER BY seq LIMIT 1", user
        )
    finally:
        await conn.close()


async def test_a_report_for_an_unknown_order_is_kept_aside_and_blocks_nothing(oms: Oms) -> None:
    user = oms.new_user()
    ghost = orders_pb2.Order(order_id="ord_GHOST", user_id=user, symbol="INFY", quantity=5)
    await oms.fill(ghost, 5, "1530.00", 5)
    order = await oms.place(user)
    await oms.ack(order)
    await oms.wait_status(order, S.ORDER_STATUS_OPEN)  # the consumer went past the ghost
    trades = await oms.stub.ListTrades(S.ListTradesRequest(parent=f"users/{user}"))
    assert list(trades.trades) == []
    assert await oms.invariants() == []


async def test_a_fill_that_can_never_apply_is_parked_not_retried_forever(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, quantity=10)
    await oms.fill(order, 10, "1530.00", 10)
    await oms.wait_status(order, S.ORDER_STATUS_FILLED)
    # An 11th share on a 10-share order: it cannot apply now and never will.
    await oms.fill(order, 1, "1530.00", 11)
    await eventually(lambda: _reports_done(oms, order), timeout=60)
    final = await oms.get(order)
    assert (final.status, final.filled_quantity) == (S.ORDER_STATUS_FILLED, 10)
    assert await oms.invariants() == []


async def test_a_burst_of_reports_for_many_orders_applies_each_once_despite_one_that_cannot(oms: Oms) -> None:
    # Reports of one batch are applied in lanes by order, side by side: a lane that fails
    # (the over-fill below) must neither lose nor double another order's reports.
    users = [oms.new_user() for _ in range(8)]
    orders = [order for user in users for order in [await oms.place(user, quantity=10) for _ in range(5)]]
    blocked = orders[17]
    await oms.fill(blocked, 10, "1530.00", 10)
    await oms.wait_status(blocked, S.ORDER_STATUS_FILLED)

    burst = [oms.ack(order) for order in orders if order is not blocked]
    burst += [oms.fill(order, 4, "1529.50", 4) for order in orders if order is not blocked]
    burst.insert(len(burst) // 2, oms.fill(blocked, 1, "1530.00", 11))  # can never apply
    burst += [oms.fill(order, 6, "1529.00", 10) for order in orders if order is not blocked]
    for publish in burst:  # in this order on the stream, as fast as the client can
        await publish

    for order in orders:
        final = await oms.wait_status(order, S.ORDER_STATUS_FILLED, timeout=60)
        assert final.filled_quantity == 10
    for user in users:
        trades = await oms.stub.ListTrades(S.ListTradesRequest(parent=f"users/{user}", page_size=100))
        per_order: dict[str, int] = {}
        for trade in trades.trades:
            per_order[trade.order_id] = per_order.get(trade.order_id, 0) + trade.quantity
        assert sorted(per_order.values()) == [10] * 5
    assert await oms.invariants() == []
