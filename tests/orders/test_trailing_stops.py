"""Trailing stops: where the stop belongs (pure), and the OMS moving a waiting stop at the
exchange as the price rises, through ordinary modifications."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.orders.v1 import orders_pb2 as S
from brokermesh.type.v1 import trading_pb2
from svc_orders.domain import trailing
from svc_orders.domain.model import Order, OrderType, Product, Side, Status, TimeInForce, Trail
from svc_runtime.errors import details_of
from tests.orders.conftest import Oms, dec
from tests.support.polling import eventually

NOW = datetime(2026, 1, 17, 10, 45, tzinfo=UTC)
TICK = Decimal("0.05")
WAITING = Order(
    order_id="ord_1",
    user_id="u_1",
    client_order_id="k1",
    fingerprint="f",
    symbol="INFY",
    side=Side.SELL,
    type=OrderType.STOP,
    time_in_force=TimeInForce.DAY,
    product=Product.CNC,
    quantity=10,
    limit_price=None,
    stop_price=Decimal("1500.00"),
    protection_price=Decimal("1425.00"),
    status=Status.TRIGGER_PENDING,
    create_time=NOW,
    update_time=NOW,
    trail=Trail(amount=Decimal("30.00")),
)


def test_a_sell_stop_follows_the_price_up_and_never_down() -> None:
    assert trailing.new_stop(WAITING, Decimal("1540.00"), TICK) == Decimal("1510.00")
    assert trailing.new_stop(WAITING, Decimal("1525.00"), TICK) is None  # 1495 would move it away
    by_percent = replace(WAITING, trail=Trail(percent=Decimal("2")))
    assert trailing.new_stop(by_percent, Decimal("1540.00"), TICK) == Decimal("1509.20")
    # Rounded away from the market: 1533.33 × 0.98 = 1502.66… → 1502.65.
    assert trailing.new_stop(by_percent, Decimal("1533.33"), TICK) == Decimal("1502.65")


def test_a_buy_stop_follows_the_price_down_and_only_a_waiting_stop_moves() -> None:
    buy = replace(WAITING, side=Side.BUY, stop_price=Decimal("1560.00"))
    assert trailing.new_stop(buy, Decimal("1500.00"), TICK) == Decimal("1530.00")
    assert trailing.new_stop(buy, Decimal("1540.00"), TICK) is None
    for status in (Status.OPEN, Status.PENDING_REPLACE, Status.FILLED):
        assert trailing.new_stop(replace(WAITING, status=status), Decimal("1600.00"), TICK) is None


def _replaces(oms: Oms, order_id: str) -> list[object]:
    return [c for c in oms.fakes.command_log.of(order_id) if c.WhichOneof("command") == "replace_order"]


async def test_the_oms_moves_a_waiting_trailing_stop_as_the_price_rises(oms: Oms) -> None:
    user = oms.new_user()
    oms.fakes.funds.shares[(user, "INFY")] = 10
    order = await oms.place(
        user,
        side=trading_pb2.SIDE_SELL,
        type=trading_pb2.ORDER_TYPE_STOP,
        limit_price=None,
        stop_price=dec("1500.00"),
        trailing_stop=S.TrailingStop(amount=dec("30.00")),
    )
    assert order.trailing_stop.amount.value == "30.00"
    await oms.ack(order)
    await oms.wait_status(order, S.ORDER_STATUS_TRIGGER_PENDING)
    await oms.tick("INFY", "1540.00")
    replaces = await eventually(lambda: _replaces(oms, order.order_id), timeout=20)
    assert [r.replace_order.stop_price.value for r in replaces] == ["1510.00"]
    moving = await oms.wait_status(order, S.ORDER_STATUS_PENDING_REPLACE)
    audit = await oms.stub.ListAuditRecords(S.ListAuditRecordsRequest(parent=moving.name))
    assert audit.records[-1].actor == "system"
    await oms.report(order, er.EXEC_TYPE_REPLACED, ord_status=er.ORD_STATUS_NEW, leaves_quantity=10)
    moved = await oms.wait_status(order, S.ORDER_STATUS_TRIGGER_PENDING)
    assert moved.stop_price.value == "1510.00"
    await oms.tick("INFY", "1530.00")  # a fall leaves it
    await oms.tick("INFY", "1551.00")
    replaces = await eventually(
        lambda: len(_replaces(oms, order.order_id)) == 2 and _replaces(oms, order.order_id)
    )
    assert replaces[-1].replace_order.stop_price.value == "1521.00"


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        ({"trailing_stop": S.TrailingStop(amount=dec("30.00"))}, "TRAIL_NOT_ALLOWED"),
        (
            {
                "type": trading_pb2.ORDER_TYPE_STOP,
                "limit_price": None,
                "stop_price": dec("1500.00"),
                "trailing_stop": S.TrailingStop(amount=dec("30.00"), percent=dec("2")),
            },
            "TRAIL_AMBIGUOUS",
        ),
        (
            {
                "type": trading_pb2.ORDER_TYPE_STOP,
                "limit_price": None,
                "stop_price": dec("1500.00"),
                "trailing_stop": S.TrailingStop(percent=dec("60")),
            },
            "TRAIL_OUT_OF_RANGE",
        ),
    ],
)
async def test_trailing_terms_are_checked(oms: Oms, order: dict[str, object], reason: str) -> None:
    user = oms.new_user()
    oms.fakes.funds.shares[(user, "INFY")] = 10
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await oms.place(user, side=trading_pb2.SIDE_SELL, **order)
    assert details_of(refused.value).reason == reason
