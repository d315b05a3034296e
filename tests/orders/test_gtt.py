"""GTT orders on a real OMS process: a trigger kept by the broker that places its order once
the last price crosses it — once, across SIGKILLs and restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2

from brokermesh.orders.v1 import orders_pb2 as S
from brokermesh.type.v1 import trading_pb2
from svc_runtime import db
from svc_runtime.errors import details_of
from tests.orders.conftest import Oms, dec
from tests.support.infra import unique_name
from tests.support.polling import eventually


async def _create(oms: Oms, user: str, trigger: str, **gtt: object) -> S.Gtt:
    order = gtt.pop(
        "order",
        S.Order(
            symbol="INFY",
            side=trading_pb2.SIDE_BUY,
            type=trading_pb2.ORDER_TYPE_LIMIT,
            quantity=5,
            limit_price=dec("1560.00"),
        ),
    )
    return await oms.stub.CreateGtt(
        S.CreateGttRequest(
            parent=f"users/{user}",
            gtt=S.Gtt(trigger_price=dec(trigger), order=order, **gtt),
            request_id=unique_name("g"),
        ),
        timeout=10,
        wait_for_ready=True,
    )


async def _get(oms: Oms, gtt: S.Gtt) -> S.Gtt:
    return await oms.stub.GetGtt(S.GetGttRequest(name=gtt.name), timeout=10, wait_for_ready=True)


async def _orders(oms: Oms, user: str) -> list[S.Order]:
    listed = await oms.stub.ListOrders(
        S.ListOrdersRequest(parent=f"users/{user}"), timeout=10, wait_for_ready=True
    )
    return list(listed.orders)


async def _fired(oms: Oms, gtt: S.Gtt) -> S.Gtt:
    async def placed() -> S.Gtt | None:
        current = await _get(oms, gtt)
        return current if current.status == S.GTT_STATUS_TRIGGERED and current.order_id else None

    return await eventually(placed, timeout=20)


async def test_a_gtt_places_its_order_when_the_price_rises_to_it(oms: Oms) -> None:
    user = oms.new_user()
    await oms.tick("INFY", "1530.00")
    gtt = await _create(oms, user, "1550.00")
    assert (gtt.status, gtt.direction) == (S.GTT_STATUS_ACTIVE, S.GTT_DIRECTION_RISES_TO)
    assert gtt.expire_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) + timedelta(days=364)
    await oms.tick("INFY", "1549.95")
    fired = await _fired_after_ticks(oms, gtt, "1550.00")
    assert (
        fired.triggered_at_price.value in ("1550.00", "1549.95")
        and fired.triggered_at_price.value == "1550.00"
    )
    orders = await _orders(oms, user)
    assert [o.order_id for o in orders] == [fired.order_id]
    assert orders[0].client_order_id == f"gtt-{gtt.gtt_id}"
    assert (orders[0].quantity, orders[0].limit_price.value) == (5, "1560.00")
    await oms.tick("INFY", "1551.00")  # crossing again fires nothing more
    await oms.tick("INFY", "1552.00")
    assert len(await _orders(oms, user)) == 1


async def _fired_after_ticks(oms: Oms, gtt: S.Gtt, price: str) -> S.Gtt:
    # Not fired short of the trigger (the watcher looks four times a second).
    await asyncio.sleep(0.75)
    assert (await _get(oms, gtt)).status == S.GTT_STATUS_ACTIVE
    await oms.tick("INFY", price)
    return await _fired(oms, gtt)


async def test_a_gtt_survives_restarts_and_fires_once(oms: Oms) -> None:
    user = oms.new_user()
    await oms.tick("INFY", "1530.00")
    gtt = await _create(oms, user, "1500.00")
    assert gtt.direction == S.GTT_DIRECTION_FALLS_TO
    await oms.stack.kill("svc_orders")
    await oms.stack.start_service("svc_orders")
    assert (await _get(oms, gtt)).status == S.GTT_STATUS_ACTIVE
    fired = await _fired_after_ticks(oms, gtt, "1499.00")
    await oms.stack.kill("svc_orders")
    await oms.stack.start_service("svc_orders")
    for price in ("1498.00", "1490.00"):
        await oms.tick("INFY", price)
    again = await _get(oms, gtt)
    assert (again.status, again.order_id) == (S.GTT_STATUS_TRIGGERED, fired.order_id)
    assert [o.order_id for o in await _orders(oms, user)] == [fired.order_id]
    assert await oms.invariants() == []


async def test_a_gtt_that_fired_just_before_a_crash_places_its_order_once_after_it(oms: Oms) -> None:
    user = oms.new_user()
    await oms.tick("INFY", "1530.00")
    gtt = await _create(oms, user, "1520.00")
    await oms.stack.kill("svc_orders")
    # Fired, and the OMS died before placing the order.
    conn = await asyncpg.connect(db.asyncpg_dsn(oms.stack.plan.database_url))
    try:
        await conn.execute(
            "UPDATE orders.gtts SET status = 'TRIGGERED', trigger_time = now(), triggered_at_price = 1519 "
            "WHERE gtt_id = $1",
            gtt.gtt_id,
        )
    finally:
        await conn.close()
    await oms.stack.start_service("svc_orders")
    fired = await _fired(oms, gtt)
    orders = await _orders(oms, user)
    assert [(o.order_id, o.client_order_id) for o in orders] == [(fired.order_id, f"gtt-{gtt.gtt_id}")]


async def test_a_cancelled_gtt_never_fires(oms: Oms) -> None:
    user = oms.new_user()
    await oms.tick("INFY", "1530.00")
    gtt = await _create(oms, user, "1540.00")
    cancelled = await oms.stub.CancelGtt(S.CancelGttRequest(name=gtt.name), timeout=10)
    assert cancelled.status == S.GTT_STATUS_CANCELLED
    assert (
        await oms.stub.CancelGtt(S.CancelGttRequest(name=gtt.name), timeout=10)
    ).status == S.GTT_STATUS_CANCELLED
    await oms.tick("INFY", "1545.00")
    fired = await _create(oms, user, "1546.00")  # a later GTT that fires shows the tick was seen
    await oms.tick("INFY", "1547.00")
    await _fired(oms, fired)
    assert (await _get(oms, gtt)).status == S.GTT_STATUS_CANCELLED
    assert len(await _orders(oms, user)) == 1
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await oms.stub.CancelGtt(S.CancelGttRequest(name=fired.name), timeout=10)
    assert details_of(refused.value).reason == "GTT_NOT_ACTIVE"


def _in(days: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return stamp


@pytest.mark.parametrize(
    ("trigger", "gtt", "reason"),
    [
        ("1530.00", {}, "GTT_TRIGGER_AT_MARKET"),
        ("1540.00", {"expire_time": _in(400)}, "GTT_EXPIRY_INVALID"),
        (
            "1540.00",
            {
                "order": S.Order(
                    symbol="INFY",
                    side=trading_pb2.SIDE_BUY,
                    type=trading_pb2.ORDER_TYPE_STOP,
                    quantity=1,
                    stop_price=dec("1545.00"),
                )
            },
            "GTT_ORDER_TYPE",
        ),
        ("1540.03", {}, "PRICE_NOT_ON_TICK"),
    ],
)
async def test_gtt_terms_are_checked(oms: Oms, trigger: str, gtt: dict[str, object], reason: str) -> None:
    await oms.tick("INFY", "1530.00")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(oms, oms.new_user(), trigger, **gtt)
    details = details_of(refused.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
