"""Brackets and OCO groups on a real OMS process (real PostgreSQL and NATS, neighbours faked):
the exits a bracket's fill creates, one block for both exits, the sibling a fill cancels, and
a SIGKILL between a leg's fill and its sibling's cancel."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.orders.v1 import orders_pb2 as S
from brokermesh.type.v1 import trading_pb2
from svc_runtime import db
from svc_runtime.errors import details_of
from tests.orders.conftest import Oms, dec
from tests.support.polling import eventually

BRACKET = S.ContingentTerms(
    kind=S.CONTINGENCY_KIND_BRACKET, target_price=dec("1600.00"), stop_loss_price=dec("1500.00")
)


async def _family(oms: Oms, user: str) -> dict[int, S.Order]:
    """The user's orders by leg."""
    listed = await oms.stub.ListOrders(S.ListOrdersRequest(parent=f"users/{user}"), timeout=10)
    return {o.leg: o for o in listed.orders}


async def _legs_sent(oms: Oms, user: str) -> dict[int, S.Order]:
    async def sent() -> dict[int, S.Order] | None:
        family = await _family(oms, user)
        legs = [family.get(S.LEG_TARGET), family.get(S.LEG_STOP_LOSS)]
        # Version 1: accepted (a leg waiting for its block also reads PENDING_EXCHANGE).
        if all(leg is not None and leg.version == 1 for leg in legs):
            return family
        return None

    return await eventually(sent, timeout=20)


async def _oco(oms: Oms, user: str, shares: int = 10) -> tuple[S.Order, S.Order]:
    """A SELL LIMIT target at 1600 with a stop-loss at 1500, both sent."""
    oms.fakes.funds.shares[(user, "INFY")] = shares
    await oms.place(
        user,
        side=trading_pb2.SIDE_SELL,
        limit_price=dec("1600.00"),
        quantity=shares,
        contingent=S.ContingentTerms(kind=S.CONTINGENCY_KIND_OCO, stop_loss_price=dec("1500.00")),
    )
    family = await _legs_sent(oms, user)
    return family[S.LEG_TARGET], family[S.LEG_STOP_LOSS]


async def _trigger_and_fill(oms: Oms, stop: S.Order, quantity: int) -> None:
    await oms.ack(stop)
    await oms.report(stop, er.EXEC_TYPE_TRIGGERED, ord_status=er.ORD_STATUS_NEW, leaves_quantity=quantity)
    await oms.fill(stop, quantity, "1499.00", quantity)


def _cancels(oms: Oms, order_id: str) -> list[object]:
    return [c for c in oms.fakes.command_log.of(order_id) if c.WhichOneof("command") == "cancel_order"]


async def test_a_bracket_entry_fill_sends_both_exits_with_one_share_block(oms: Oms) -> None:
    user = oms.new_user()
    entry = await oms.place(user, contingent=BRACKET)
    assert entry.leg == S.LEG_ENTRY
    assert entry.contingent.target_price.value == "1600.00"
    oms.fakes.funds.shares[(user, "INFY")] = 10  # what the entry's fill will deliver
    await oms.ack(entry)
    await oms.fill(entry, 10, "1530.00", 10)
    family = await _legs_sent(oms, user)
    target, stop = family[S.LEG_TARGET], family[S.LEG_STOP_LOSS]
    assert (target.parent_order_id, stop.parent_order_id) == (entry.order_id, entry.order_id)
    assert target.oco_group_id == stop.oco_group_id == target.order_id
    assert (target.type, target.side, target.quantity) == (
        trading_pb2.ORDER_TYPE_LIMIT,
        trading_pb2.SIDE_SELL,
        10,
    )
    assert (stop.type, stop.stop_price.value, stop.quantity) == (trading_pb2.ORDER_TYPE_STOP, "1500.00", 10)
    # The entry blocked cash, the target the shares; the stop-loss nothing: no double block.
    blocks = oms.fakes.funds.blocks
    assert stop.order_id not in blocks
    assert oms.fakes.funds.shares[(user, "INFY")] == 0
    # Accepted legs reach the executor through the outbox: each is sent once.
    for leg in (target, stop):
        commands = lambda leg=leg: [c.WhichOneof("command") for c in oms.fakes.command_log.of(leg.order_id)]  # noqa: E731
        await eventually(commands, timeout=20)
        assert commands() == ["new_order"]
    assert await oms.invariants() == []


async def test_a_brackets_exits_wait_for_the_entrys_shares_to_settle(oms: Oms) -> None:
    """svc_funds settles the entry's fill from the same report on its own time: exits that
    find no shares yet try again rather than fail."""
    user = oms.new_user()
    entry = await oms.place(user, contingent=BRACKET)
    asked = oms.fakes.funds.calls["BatchBlockHoldings"]
    await oms.ack(entry)
    await oms.fill(entry, 10, "1530.00", 10)

    async def exits_waiting() -> bool:
        family = await _family(oms, user)
        return S.LEG_TARGET in family and oms.fakes.funds.calls["BatchBlockHoldings"] > asked

    await eventually(exits_waiting, timeout=20)
    await asyncio.sleep(1.5)  # another round of the worker, still without the shares
    oms.fakes.funds.shares[(user, "INFY")] = 10
    family = await _legs_sent(oms, user)
    assert family[S.LEG_TARGET].status == S.ORDER_STATUS_PENDING_EXCHANGE
    assert oms.fakes.funds.blocks[family[S.LEG_TARGET].order_id].quantity == 10


async def test_the_target_filling_cancels_the_stop_loss(oms: Oms) -> None:
    user = oms.new_user()
    target, stop = await _oco(oms, user)
    assert target.contingent.kind == S.CONTINGENCY_KIND_OCO and not target.parent_order_id
    await oms.ack(target)
    await oms.ack(stop)
    await oms.fill(target, 4, "1600.00", 4)  # a first partial fill is enough
    withdrawn = await oms.wait_status(stop, S.ORDER_STATUS_PENDING_CANCEL)
    assert withdrawn.status_reason == "OCO: a sibling leg filled"
    assert len(await eventually(lambda: _cancels(oms, stop.order_id))) == 1
    await oms.report(stop, er.EXEC_TYPE_CANCELED, ord_status=er.ORD_STATUS_CANCELED)
    await oms.wait_status(stop, S.ORDER_STATUS_CANCELLED)
    assert (await oms.get(target)).status == S.ORDER_STATUS_PARTIALLY_FILLED  # the target keeps working
    assert await oms.invariants() == []


async def test_the_stop_loss_filling_cancels_the_target(oms: Oms) -> None:
    user = oms.new_user()
    target, stop = await _oco(oms, user)
    await oms.ack(target)
    await _trigger_and_fill(oms, stop, 10)
    await oms.wait_status(stop, S.ORDER_STATUS_FILLED)
    await oms.wait_status(target, S.ORDER_STATUS_PENDING_CANCEL)
    assert len(await eventually(lambda: _cancels(oms, target.order_id))) == 1
    assert await oms.invariants() == []


async def test_the_target_ending_unfilled_withdraws_the_stop_loss_it_blocked_for(oms: Oms) -> None:
    user = oms.new_user()
    target, stop = await _oco(oms, user)
    await oms.ack(target)
    await oms.ack(stop)
    await oms.wait_status(target, S.ORDER_STATUS_OPEN)
    await oms.stub.CancelOrder(S.CancelOrderRequest(name=target.name, request_id="c1"), timeout=10)
    await oms.report(target, er.EXEC_TYPE_CANCELED, ord_status=er.ORD_STATUS_CANCELED)
    withdrawn = await oms.wait_status(stop, S.ORDER_STATUS_PENDING_CANCEL)
    assert withdrawn.status_reason.startswith("OCO: the target leg ended unfilled")
    assert len(await eventually(lambda: _cancels(oms, stop.order_id))) == 1
    assert await oms.invariants() == []


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        ({"side": trading_pb2.SIDE_SELL, "contingent": BRACKET}, "CONTINGENT_TERMS_INVALID"),
        (
            {
                "contingent": S.ContingentTerms(
                    kind=S.CONTINGENCY_KIND_BRACKET,
                    target_price=dec("1520.00"),
                    stop_loss_price=dec("1500.00"),
                )
            },
            "EXIT_PRICES_OUT_OF_ORDER",
        ),
        (
            {
                "contingent": S.ContingentTerms(
                    kind=S.CONTINGENCY_KIND_BRACKET, stop_loss_price=dec("1500.00")
                )
            },
            "MISSING_EXIT_PRICE",
        ),
        (
            {
                "side": trading_pb2.SIDE_SELL,
                "contingent": S.ContingentTerms(
                    kind=S.CONTINGENCY_KIND_OCO, target_price=dec("1600.00"), stop_loss_price=dec("1500.00")
                ),
            },
            "UNEXPECTED_EXIT_PRICE",
        ),
    ],
)
async def test_contingent_terms_are_checked(oms: Oms, order: dict[str, object], reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await oms.place(oms.new_user(), **order)
    details = details_of(refused.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


async def test_a_legs_quantity_cannot_change(oms: Oms) -> None:
    user = oms.new_user()
    target, _stop = await _oco(oms, user)
    await oms.ack(target)
    await oms.wait_status(target, S.ORDER_STATUS_OPEN)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await oms.stub.ModifyOrder(
            S.ModifyOrderRequest(name=target.name, request_id="m1", quantity=5), timeout=10
        )
    assert details_of(refused.value).reason == "CONTINGENT_QUANTITY_FIXED"


async def test_sigkill_between_a_legs_fill_and_its_siblings_cancel_leaves_one_leg_live(oms: Oms) -> None:
    """The fill and the sibling's cancel commit together. With the sibling's row held, the
    OMS records the target's fill, then waits for the sibling; killed there, nothing of the
    fill is kept, and after the restart the fill and the cancel are applied together."""
    user = oms.new_user()
    target, stop = await _oco(oms, user)
    await oms.ack(target)
    await oms.ack(stop)
    await oms.wait_status(stop, S.ORDER_STATUS_TRIGGER_PENDING)
    conn = await asyncpg.connect(db.asyncpg_dsn(oms.stack.plan.database_url))
    try:
        lock = conn.transaction()
        await lock.start()
        await conn.execute("SELECT 1 FROM orders.orders WHERE order_id = $1 FOR UPDATE", stop.order_id)
        await oms.fill(target, 10, "1600.00", 10)

        async def stalled_on_the_sibling() -> bool:
            # Blocked by this connection, which holds nothing but the sibling's row.
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
            return waiting > 0

        await eventually(stalled_on_the_sibling, timeout=20)
        await oms.stack.kill("svc_orders")
        await lock.rollback()
    finally:
        await conn.close()
    await oms.stack.start_service("svc_orders")
    filled = await oms.wait_status(target, S.ORDER_STATUS_FILLED)
    assert filled.filled_quantity == 10
    withdrawn = await oms.wait_status(stop, S.ORDER_STATUS_PENDING_CANCEL)
    assert withdrawn.filled_quantity == 0
    assert len(await eventually(lambda: _cancels(oms, stop.order_id))) == 1
    assert await oms.invariants() == []
