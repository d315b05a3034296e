"""Operators' per-user and per-segment risk limits, and the kill switch's cancel-all, on the
real OMS process (svc_funds' portfolio stood in by a fake whose positions a test sets)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest
from google.protobuf import field_mask_pb2

from brokermesh.orders.v1 import orders_pb2
from brokermesh.type.v1 import trading_pb2
from svc_runtime.errors import details_of
from tests.orders.conftest import Oms, dec
from tests.support.infra import unique_name

OPERATOR = (("x-actor", "admin:risk-desk"),)


async def set_limits(oms: Oms, name: str, **limits: object) -> orders_pb2.RiskLimits:
    return await oms.stub.UpdateRiskLimits(
        orders_pb2.UpdateRiskLimitsRequest(
            risk_limits=orders_pb2.RiskLimits(name=name, **limits),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=sorted(limits)),
            request_id=unique_name("lim"),
        ),
        metadata=OPERATOR,
        timeout=30,
    )


async def refused(oms: Oms, user: str, **order: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.place(user, **order)
    return err.value


def figures(error: grpc.aio.AioRpcError) -> dict[str, str]:
    metadata = details_of(error).metadata
    return {k: metadata[k] for k in ("rule", "scope", "limit", "observed")}


async def test_a_users_order_value_and_quantity_limits_refuse_with_their_figures(oms: Oms) -> None:
    user, other = oms.new_user(), oms.new_user()
    limits = await set_limits(
        oms, f"users/{user}/riskLimits", max_order_value=dec("20000.00"), max_order_quantity=15
    )
    assert limits.name == f"users/{user}/riskLimits" and limits.version == 1
    assert limits.max_order_value.value == "20000.00" and limits.max_order_quantity == 15

    error = await refused(oms, user, quantity=14)  # 14 × 1530.00 = 21420.00
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(error).reason == "ORDER_VALUE_LIMIT"
    assert figures(error) == {
        "rule": "ORDER_VALUE",
        "scope": f"users/{user}",
        "limit": "20000.00",
        "observed": "21420.00",
    }
    error = await refused(oms, user, quantity=16, limit_price=dec("1400.00"))
    assert details_of(error).reason == "QUANTITY_LIMIT"
    assert figures(error)["observed"] == "16" and figures(error)["limit"] == "15"
    # Within the limits it goes through, and other users are not bound by them.
    await oms.place(user, quantity=13)
    await oms.place(other, quantity=14)

    got = await oms.stub.GetRiskLimits(orders_pb2.GetRiskLimitsRequest(name=f"users/{user}/riskLimits"))
    assert got.max_order_quantity == 15 and not got.HasField("max_open_orders")
    # Clearing a limit: named in the mask, left unset.
    cleared = await set_limits(oms, f"users/{user}/riskLimits", max_order_quantity=None)
    assert not cleared.HasField("max_order_quantity") and cleared.max_order_value.value == "20000.00"
    error = await refused(oms, user, quantity=16, limit_price=dec("1400.00"))
    assert figures(error)["rule"] == "ORDER_VALUE" and figures(error)["observed"] == "22400.00"

    audit = await oms.stub.ListAuditRecords(
        orders_pb2.ListAuditRecordsRequest(parent="users/-", page_size=1000)
    )
    changes = [r for r in audit.records if r.action == "RISK_LIMITS" and f"users/{user}" in r.detail]
    assert [r.actor for r in changes] == ["admin:risk-desk", "admin:risk-desk"]


async def test_a_segment_limit_binds_every_user_in_that_product_and_the_tightest_wins(oms: Oms) -> None:
    user = oms.new_user()
    await set_limits(oms, "segments/INTRADAY/riskLimits", max_order_quantity=5)
    try:
        await set_limits(oms, f"users/{user}/riskLimits", max_order_quantity=3)
        error = await refused(oms, user, quantity=4, product=trading_pb2.PRODUCT_INTRADAY)
        assert figures(error)["scope"] == f"users/{user}"  # 3 is tighter than the segment's 5
        error = await refused(oms, oms.new_user(), quantity=6, product=trading_pb2.PRODUCT_INTRADAY)
        assert figures(error) | {"scope": "segments/INTRADAY"} == figures(error)
        # Delivery orders are another segment.
        await oms.place(oms.new_user(), quantity=6, product=trading_pb2.PRODUCT_CNC)
    finally:
        await set_limits(oms, "segments/INTRADAY/riskLimits", max_order_quantity=None)


async def test_open_orders_position_and_daily_loss_limits(oms: Oms) -> None:
    user = oms.new_user()
    await set_limits(oms, f"users/{user}/riskLimits", max_open_orders=2)
    await oms.place(user, quantity=1)
    await oms.place(user, quantity=1)
    error = await refused(oms, user, quantity=1)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(error).reason == "OPEN_ORDERS_LIMIT"
    assert figures(error) == {"rule": "OPEN_ORDERS", "scope": f"users/{user}", "limit": "2", "observed": "3"}

    trader = oms.new_user()
    oms.fakes.portfolio.shares[trader] = {"INFY": 40}
    await set_limits(oms, f"users/{trader}/riskLimits", max_position_quantity=50)
    await oms.place(trader, quantity=6)  # 40 held + 6 working
    error = await refused(oms, trader, quantity=5)
    assert details_of(error).reason == "POSITION_LIMIT"
    assert figures(error)["observed"] == "51" and figures(error)["limit"] == "50"

    loser = oms.new_user()
    oms.fakes.portfolio.shares[loser] = {"INFY": 10}
    oms.fakes.portfolio.day_pnl[loser] = Decimal("-5000.00")
    await set_limits(oms, f"users/{loser}/riskLimits", max_daily_loss=dec("5000.00"))
    error = await refused(oms, loser, quantity=1)
    assert details_of(error).reason == "DAILY_LOSS_LIMIT"
    assert figures(error) == {
        "rule": "DAILY_LOSS",
        "scope": f"users/{loser}",
        "limit": "5000.00",
        "observed": "5000.00",
    }
    # Closing what is held still goes through (the fake svc_funds holds no shares to
    # block, so the order reaches svc_funds and stops there, past the limits).
    error = await refused(oms, loser, side=trading_pb2.SIDE_SELL, quantity=10, limit_price=dec("1500.00"))
    assert details_of(error).reason == "INSUFFICIENT_HOLDINGS"


async def test_a_modification_meets_the_users_per_order_limits(oms: Oms) -> None:
    user = oms.new_user()
    order = await oms.place(user, quantity=3)
    await oms.ack(order)
    await oms.wait_status(order, orders_pb2.ORDER_STATUS_OPEN)
    await set_limits(oms, f"users/{user}/riskLimits", max_order_quantity=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.stub.ModifyOrder(
            orders_pb2.ModifyOrderRequest(name=order.name, quantity=8, request_id="m-1")
        )
    assert details_of(err.value).reason == "QUANTITY_LIMIT"
    assert figures(err.value) == {
        "rule": "ORDER_QUANTITY",
        "scope": f"users/{user}",
        "limit": "5",
        "observed": "8",
    }
    assert (await oms.get(order)).quantity == 3
    # Within the limit it goes through.
    modified = await oms.stub.ModifyOrder(
        orders_pb2.ModifyOrderRequest(name=order.name, quantity=5, request_id="m-2")
    )
    assert modified.status == orders_pb2.ORDER_STATUS_PENDING_REPLACE


async def test_risk_limit_names_and_masks_are_checked(oms: Oms) -> None:
    for name in ("users/x", "segments/FNO/riskLimits", "users//riskLimits", "riskLimits"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await oms.stub.GetRiskLimits(orders_pb2.GetRiskLimitsRequest(name=name))
        assert details_of(err.value).reason == "INVALID_NAME", name
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await oms.stub.UpdateRiskLimits(
            orders_pb2.UpdateRiskLimitsRequest(
                risk_limits=orders_pb2.RiskLimits(name="users/u_1/riskLimits"),
                update_mask=field_mask_pb2.FieldMask(paths=["version"]),
                request_id="mask-1",
            )
        )
    assert details_of(err.value).reason == "INVALID_UPDATE_MASK"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await set_limits(oms, "users/u_1/riskLimits", max_order_value=dec("-1.00"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_users_kill_switch_cancels_their_working_orders_and_names_them(oms: Oms) -> None:
    user, bystander = oms.new_user(), oms.new_user()
    mine = [await oms.place(user, quantity=1), await oms.place(user, quantity=2)]
    theirs = await oms.place(bystander, quantity=1)
    for order in (*mine, theirs):
        await oms.ack(order)
        await oms.wait_status(order, orders_pb2.ORDER_STATUS_OPEN)
    halted = await set_limits(oms, f"users/{user}/riskLimits", trading_halted=True)
    assert sorted(halted.cancelled_orders) == sorted(o.name for o in mine)
    for order in mine:
        assert (await oms.get(order)).status == orders_pb2.ORDER_STATUS_PENDING_CANCEL
        assert len([c for c in oms.fakes.command_log.of(order.order_id) if c.HasField("cancel_order")]) <= 1
    assert (await oms.get(theirs)).status == orders_pb2.ORDER_STATUS_OPEN
    error = await refused(oms, user, quantity=1)
    assert (
        details_of(error).reason == "TRADING_HALTED"
        and details_of(error).metadata["scope"] == f"users/{user}"
    )
    await set_limits(oms, f"users/{user}/riskLimits", trading_halted=False)
    await oms.place(user, quantity=1)


async def test_the_kill_switch_cancels_every_working_order_and_names_them(oms: Oms) -> None:
    users = [oms.new_user(), oms.new_user()]
    working = [await oms.place(u, quantity=1) for u in users]
    for order in working:
        await oms.ack(order)
        await oms.wait_status(order, orders_pb2.ORDER_STATUS_OPEN)
    controls = await oms.stub.UpdateTradingControls(
        orders_pb2.UpdateTradingControlsRequest(
            trading_controls=orders_pb2.TradingControls(trading_halted=True, halt_reason="drill"),
            update_mask=field_mask_pb2.FieldMask(paths=["trading_halted", "halt_reason"]),
            request_id=unique_name("halt"),
        ),
        metadata=OPERATOR,
        timeout=60,
    )
    try:
        assert {o.name for o in working} <= set(controls.cancelled_orders)
        for order in working:
            assert (await oms.get(order)).status == orders_pb2.ORDER_STATUS_PENDING_CANCEL
        # Reading the controls names no cancels: only the update that halted does.
        assert not (
            await oms.stub.GetTradingControls(orders_pb2.GetTradingControlsRequest())
        ).cancelled_orders
    finally:
        await oms.stub.UpdateTradingControls(
            orders_pb2.UpdateTradingControlsRequest(
                trading_controls=orders_pb2.TradingControls(trading_halted=False),
                update_mask=field_mask_pb2.FieldMask(paths=["trading_halted"]),
                request_id=unique_name("resume"),
            )
        )


async def placed_at_once(oms: Oms, user: str, count: int, **order: object) -> list[object]:
    """`count` placements for one user sent together: outcomes (an Order or the gRPC error)."""
    return await asyncio.gather(*(oms.place(user, **order) for _ in range(count)), return_exceptions=True)


def refusal_reasons(outcomes: list[object]) -> list[str]:
    return [details_of(o).reason for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]


async def test_concurrent_placements_meet_the_open_orders_limit_exactly(oms: Oms) -> None:
    user, bystander = oms.new_user(), oms.new_user()
    await set_limits(oms, f"users/{user}/riskLimits", max_open_orders=3)
    await set_limits(oms, f"users/{bystander}/riskLimits", max_open_orders=3)
    # Another user's placements at the same moment are neither held back nor counted.
    outcomes, theirs = await asyncio.gather(
        placed_at_once(oms, user, 10, quantity=1), placed_at_once(oms, bystander, 3, quantity=1)
    )
    accepted = [o for o in outcomes if isinstance(o, orders_pb2.Order)]
    assert len(accepted) == 3, refusal_reasons(outcomes)
    assert refusal_reasons(outcomes) == ["OPEN_ORDERS_LIMIT"] * 7
    errors = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert all(e.code() == grpc.StatusCode.FAILED_PRECONDITION for e in errors)
    assert {tuple(figures(e).items()) for e in errors} == {
        (("rule", "OPEN_ORDERS"), ("scope", f"users/{user}"), ("limit", "3"), ("observed", "4"))
    }
    assert all(isinstance(o, orders_pb2.Order) for o in theirs)
    listed = await oms.stub.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{user}", page_size=50))
    assert len(listed.orders) == 3


async def test_concurrent_placements_meet_the_position_limit_exactly(oms: Oms) -> None:
    user = oms.new_user()
    oms.fakes.portfolio.shares[user] = {"INFY": 40}
    await set_limits(oms, f"users/{user}/riskLimits", max_position_quantity=50)
    outcomes = await placed_at_once(oms, user, 8, quantity=3)  # room for 3 of them: 40 + 9
    assert len([o for o in outcomes if isinstance(o, orders_pb2.Order)]) == 3, refusal_reasons(outcomes)
    assert refusal_reasons(outcomes) == ["POSITION_LIMIT"] * 5
