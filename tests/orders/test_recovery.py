"""Failures: lost replies, a neighbour down, orders stuck before the exchange, and the OMS
killed with SIGKILL in the middle of placing and filling orders. Nothing may be lost or
doubled: one order per key, one block per working order and none for anything else, one
command per order, one trade per fill, and an audit row for every version."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest

from brokermesh.orders.v1 import orders_pb2
from brokermesh.type.v1 import trading_pb2
from svc_runtime.errors import details_of
from tests.orders.conftest import Oms, dec, start_oms
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

S = orders_pb2
# The OMS's gRPC channel retries UNAVAILABLE itself; losing every try's reply surfaces it.
LOSE_EVERY_TRY = 4
SWEEPING = {
    "BROKERMESH_ORDERS_SWEEP_AFTER_SECONDS": "1",
    "BROKERMESH_ORDERS_SWEEP_INTERVAL_SECONDS": "0.3",
    "BROKERMESH_ORDERS_RATE_BURST": "100",
}


@pytest.fixture(scope="module")
async def oms(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Oms]:
    """An OMS whose sweeper acts after one second."""
    handle = await start_oms(infra, tmp_path_factory.mktemp("oms"), SWEEPING)
    yield handle
    await handle.stop()


async def _only_order(oms: Oms, user: str) -> orders_pb2.Order:
    listed = await oms.stub.ListOrders(S.ListOrdersRequest(parent=f"users/{user}"))
    (order,) = listed.orders
    return order


async def _audit(oms: Oms, order: orders_pb2.Order) -> list[orders_pb2.AuditRecord]:
    return list((await oms.stub.ListAuditRecords(S.ListAuditRecordsRequest(parent=order.name))).records)


async def test_a_retry_after_a_lost_reply_finishes_the_same_order_with_one_block(oms: Oms) -> None:
    user = oms.new_user("100000.00")
    oms.fakes.funds.lose_next_replies = LOSE_EVERY_TRY
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.place(user, "lost-reply")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # The outcome was unknown, so the order was kept; clients see it as pending.
    pending = await _only_order(oms, user)
    assert (pending.status, pending.version) == (S.ORDER_STATUS_PENDING_EXCHANGE, 0)
    retried = await oms.place(user, "lost-reply")
    assert retried.order_id == pending.order_id and retried.version == 1
    assert [b.order_id for b in oms.fakes.funds.blocks.values() if b.user_id == user] == [retried.order_id]
    assert oms.fakes.funds.cash[user] == Decimal("100000.00") - Decimal("15300.00")
    commands = await eventually(lambda: _commands(oms, retried.order_id))
    assert len(commands) == 1


async def _commands(oms: Oms, order_id: str) -> list:  # type: ignore[type-arg]
    return oms.fakes.command_log.of(order_id)


async def test_the_sweeper_sends_on_an_order_whose_funds_were_blocked(oms: Oms) -> None:
    user = oms.new_user()
    oms.fakes.funds.lose_next_replies = LOSE_EVERY_TRY
    with pytest.raises(grpc.aio.AioRpcError):
        await oms.place(user, "abandoned-after-block")
    pending = await _only_order(oms, user)
    accepted = await oms.wait_status(pending, S.ORDER_STATUS_PENDING_EXCHANGE)
    accepted = await eventually(lambda: _at_version(oms, pending, 1))
    assert accepted.status in (S.ORDER_STATUS_PENDING_EXCHANGE, S.ORDER_STATUS_OPEN)
    (record, *_) = await _audit(oms, accepted)
    assert (record.action, record.actor, record.order_version) == ("SWEEP", "system", 1)
    assert len(await eventually(lambda: _commands(oms, pending.order_id))) == 1


async def test_the_sweeper_sends_on_an_oco_target_with_its_stop_loss(oms: Oms) -> None:
    user = oms.new_user()
    oms.fakes.funds.shares[(user, "INFY")] = 10
    oms.fakes.funds.lose_next_replies = LOSE_EVERY_TRY
    with pytest.raises(grpc.aio.AioRpcError):
        await oms.place(
            user,
            "abandoned-oco",
            side=trading_pb2.SIDE_SELL,
            limit_price=dec("1600.00"),
            contingent=S.ContingentTerms(kind=S.CONTINGENCY_KIND_OCO, stop_loss_price=dec("1500.00")),
        )
    target = await _only_order(oms, user)

    async def both_sent() -> dict[int, orders_pb2.Order] | None:
        listed = (await oms.stub.ListOrders(S.ListOrdersRequest(parent=f"users/{user}"))).orders
        legs = {o.leg: o for o in listed}
        return legs if len(legs) == 2 and all(o.version >= 1 for o in legs.values()) else None

    legs = await eventually(both_sent, timeout=30)
    assert legs[S.LEG_TARGET].order_id == target.order_id
    assert legs[S.LEG_STOP_LOSS].oco_group_id == target.order_id
    assert len(await eventually(lambda: _commands(oms, legs[S.LEG_STOP_LOSS].order_id))) == 1
    assert await oms.invariants() == []


async def _at_version(oms: Oms, order: orders_pb2.Order, version: int) -> orders_pb2.Order | None:
    current = await oms.get(order)
    return current if current.version >= version else None


async def test_the_sweeper_rejects_an_order_whose_funds_were_never_blocked(oms: Oms) -> None:
    user = oms.new_user("100000.00")
    oms.fakes.funds.down = True
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await oms.place(user, "funds-down")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        pending = await _only_order(oms, user)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await oms.stub.CancelOrder(S.CancelOrderRequest(name=pending.name))
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert details_of(err.value).reason == "ORDER_BEING_ACCEPTED"
        await asyncio.sleep(1.5)  # the sweeper cannot ask svc_funds either: it waits
        assert (await oms.get(pending)).version == 0
    finally:
        oms.fakes.funds.down = False
    rejected = await oms.wait_status(pending, S.ORDER_STATUS_REJECTED)
    assert rejected.leaves_quantity == 0 and "funds" in rejected.status_reason
    assert pending.order_id not in oms.fakes.funds.blocks
    assert oms.fakes.funds.cash[user] == Decimal("100000.00")
    assert _commands_now(oms, pending.order_id) == []
    # The client's retry learns the outcome instead of placing a second order.
    assert (await oms.place(user, "funds-down")).order_id == pending.order_id
    assert await oms.invariants() == []


def _commands_now(oms: Oms, order_id: str) -> list:  # type: ignore[type-arg]
    return oms.fakes.command_log.of(order_id)


async def test_the_sweeper_rejects_and_releases_an_order_the_executor_never_received(oms: Oms) -> None:
    user = oms.new_user("100000.00")
    oms.fakes.command_log.lose_commands = True
    try:
        order = await oms.place(user, "lost-command")
        rejected = await oms.wait_status(order, S.ORDER_STATUS_REJECTED)
    finally:
        oms.fakes.command_log.lose_commands = False
    assert "never received" in rejected.status_reason
    assert order.order_id in oms.fakes.executor.abandoned

    async def released() -> bool:
        return not oms.fakes.funds.blocks[order.order_id].active

    await eventually(released)
    assert oms.fakes.funds.cash[user] == Decimal("100000.00")
    assert [r.action for r in await _audit(oms, order)] == ["PLACE", "SWEEP"]


async def test_the_sweeper_applies_what_the_exchange_knows_and_asks_for_missed_reports(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, "unacknowledged")
    # No acknowledgement is ever published: the sweeper asks and learns the order is open.
    opened = await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    assert opened.exchange_order_id == f"X-{order.order_id}"
    assert oms.fakes.executor.calls["ReconcileOrders"] >= 1
    assert oms.fakes.funds.blocks[order.order_id].active


async def test_sigkill_in_the_middle_loses_and_doubles_nothing(oms: Oms) -> None:
    """Clients keep placing (and retrying on errors, as they must) while fills stream in;
    the OMS is killed twice with SIGKILL and restarted."""
    users = [oms.new_user("10000000.00") for _ in range(3)]
    keys = {user: [f"{user}-k{i}" for i in range(12)] for user in users}
    placed: dict[str, orders_pb2.Order] = {}
    refused: dict[str, str] = {}

    async def place_until_answered(user: str, key: str) -> None:
        quantity = random.randint(1, 5)  # a retry repeats the request exactly
        while True:
            try:
                order = await oms.place(user, key, quantity=quantity)
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    await asyncio.sleep(0.05)
                    continue
                refused[key] = details_of(error).reason
                return
            placed[key] = order
            return

    async def client(user: str) -> None:
        for key in keys[user]:
            await place_until_answered(user, key)

    async def fills() -> None:
        """Fill every order that reached the (fake) exchange, sometimes twice (a
        redelivery), while the OMS dies and comes back."""
        done: set[str] = set()
        while not stop_filling.is_set():
            for order_id, command in list(_sent(oms).items()):
                if order_id in done:
                    continue
                done.add(order_id)
                order = orders_pb2.Order(
                    order_id=order_id,
                    user_id=command.user_id,
                    symbol=command.new_order.symbol,
                    side=command.new_order.side,
                    quantity=command.new_order.quantity,
                )
                exec_id = await oms.fill(order, order.quantity, "1530.00", order.quantity)
                if random.random() < 0.5:
                    await oms.fill(order, order.quantity, "1530.00", order.quantity, exec_id=exec_id)
            await asyncio.sleep(0.05)

    async def chaos() -> None:
        for _ in range(2):
            await asyncio.sleep(0.4)
            await oms.stack.kill("svc_orders")
            await asyncio.sleep(0.2)
            await oms.stack.start_service("svc_orders")

    stop_filling = asyncio.Event()
    filler = asyncio.create_task(fills())
    await asyncio.gather(*(client(u) for u in users), chaos())
    assert not refused, refused

    # Every key answered once more must give the same order.
    for user in users:
        for key in keys[user]:
            assert (await oms.place(user, key, quantity=placed[key].quantity)).order_id == placed[
                key
            ].order_id

    # Orders whose placement died before svc_funds answered were rejected by the sweeper
    # (no block, never sent); every other order was sent once, filled once, and blocked.
    async def settled() -> bool:
        for order in placed.values():
            status = (await oms.get(order)).status
            if status not in (S.ORDER_STATUS_FILLED, S.ORDER_STATUS_REJECTED):
                return False
        return True

    try:
        await eventually(settled, timeout=60)
    finally:
        stop_filling.set()
        await filler
    new_commands = Counter(
        c.order_id for c in oms.fakes.command_log.commands if c.WhichOneof("command") == "new_order"
    )
    funds = oms.fakes.funds
    for user in users:
        listed = await oms.stub.ListOrders(S.ListOrdersRequest(parent=f"users/{user}", page_size=100))
        assert sorted(o.client_order_id for o in listed.orders) == sorted(keys[user])
        filled = {o.order_id for o in listed.orders if o.status == S.ORDER_STATUS_FILLED}
        rejected = {o.order_id for o in listed.orders if o.status == S.ORDER_STATUS_REJECTED}
        assert filled | rejected == {o.order_id for o in listed.orders}
        # Every block belongs to a filled order and every filled order has one: no block
        # was made for an order that was then forgotten or rejected.
        assert {b.order_id for b in funds.blocks.values() if b.user_id == user} == filled
        assert {o: new_commands[o] for o in filled} == dict.fromkeys(filled, 1)
        assert not [o for o in rejected if new_commands[o]]
        trades = await oms.stub.ListTrades(S.ListTradesRequest(parent=f"users/{user}", page_size=500))
        assert Counter(t.order_id for t in trades.trades) == Counter(dict.fromkeys(filled, 1))
    assert await oms.invariants() == []
    with contextlib.suppress(Exception):
        await oms.stack.wait_ready("svc_orders")


def _sent(oms: Oms) -> dict[str, object]:
    """NEW commands the fake executor has taken, by order id."""
    return {c.order_id: c for c in oms.fakes.command_log.commands if c.WhichOneof("command") == "new_order"}


async def _resume_funds(oms: Oms) -> None:
    oms.fakes.funds.resume.set()
    oms.fakes.funds.holding.clear()
    oms.fakes.funds.hold = oms.fakes.funds.hold_before_block = False


@pytest.mark.parametrize("blocked", [True, False], ids=["after-the-block", "before-the-block"])
async def test_sigkill_while_svc_funds_is_blocking_leaves_no_orphan_block(oms: Oms, blocked: bool) -> None:
    """Killed while svc_funds works on the block: once the OMS is back, an order whose
    block was made is sent on, one whose block was not is rejected; never a block without
    an order or an order without a block, and the client's retry learns which."""
    user = oms.new_user("100000.00")
    funds = oms.fakes.funds
    funds.resume.clear()
    funds.abandoned.clear()
    funds.hold, funds.hold_before_block = True, not blocked
    attempt = asyncio.create_task(oms.place(user, "killed-mid-block"))
    try:
        await asyncio.wait_for(funds.holding.wait(), 20)
        await oms.stack.kill("svc_orders")
        with pytest.raises(grpc.aio.AioRpcError):
            await attempt
        # svc_funds learns of the dead caller when gRPC cancels its call; only then has
        # the block surely not been made (a call that outlives its caller may finish).
        await asyncio.wait_for(funds.abandoned.wait(), 20)
    finally:
        await _resume_funds(oms)
    await oms.stack.start_service("svc_orders")
    pending = await _only_order(oms, user)
    expected = S.ORDER_STATUS_PENDING_EXCHANGE if blocked else S.ORDER_STATUS_REJECTED
    settled = await eventually(lambda: _at_version(oms, pending, 1))
    if blocked:
        assert settled.status in (S.ORDER_STATUS_PENDING_EXCHANGE, S.ORDER_STATUS_OPEN)
        assert funds.blocks[pending.order_id].active
        assert len(await eventually(lambda: _commands(oms, pending.order_id))) == 1
    else:
        assert settled.status == expected
        assert pending.order_id not in funds.blocks
        assert funds.cash[user] == Decimal("100000.00")
    assert (await oms.place(user, "killed-mid-block")).order_id == pending.order_id
    assert await oms.invariants() == []


async def test_sigkill_while_a_fill_is_being_applied_loses_nothing(oms: Oms) -> None:
    """A report taken off JetStream but not yet committed when the OMS dies is delivered
    again and applied once: the consumer acknowledges only after its commit."""
    import asyncpg

    from svc_runtime import db

    user = oms.new_user()
    order = await oms.place(user, "fill-during-kill")
    await oms.ack(order)
    await oms.wait_status(order, S.ORDER_STATUS_OPEN)
    # Hold the order's row so that the consumer's transaction stalls inside the fill.
    conn = await asyncpg.connect(db.asyncpg_dsn(oms.stack.plan.database_url))
    try:
        lock = conn.transaction()
        await lock.start()
        await conn.execute("SELECT 1 FROM orders.orders WHERE order_id = $1 FOR UPDATE", order.order_id)
        await oms.fill(order, 10, "1530.00", 10)

        async def stalled_on_the_order() -> bool:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return waiting > 0

        await eventually(stalled_on_the_order)
        await oms.stack.kill("svc_orders")
        await lock.rollback()
    finally:
        await conn.close()
    await oms.stack.start_service("svc_orders")
    filled = await oms.wait_status(order, S.ORDER_STATUS_FILLED)
    assert filled.filled_quantity == 10
    trades = await oms.stub.ListTrades(S.ListTradesRequest(parent=f"users/{user}"))
    assert [t.quantity for t in trades.trades] == [10]
    assert await oms.invariants() == []
