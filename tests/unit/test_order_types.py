"""The order-type table (ORDER_TYPES in svc_orders/domain/model.py) is what validation,
risk, the block price and the executor command follow: each row is checked against them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from svc_orders.app.ports import CommandKind
from svc_orders.domain import risk, validation
from svc_orders.domain.model import (
    ORDER_TYPES,
    Instrument,
    MarketSnapshot,
    Order,
    OrderType,
    Protection,
    Side,
    Status,
    TimeInForce,
)
from svc_orders.domain.validation import OrderDraft
from svc_orders.transport import wire
from svc_runtime.errors import InvalidArgument

INFY = Instrument("INFY", Decimal("0.05"), 1, previous_close=Decimal("1500.00"))
MARKET = MarketSnapshot(last_price=Decimal("1500.00"))
NOW = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)


def draft(
    order_type: OrderType, *, limit: str = "", stop: str = "", tif: TimeInForce | None = None
) -> OrderDraft:
    expire = "2026-12-31" if tif is TimeInForce.GTD else ""
    return OrderDraft(
        "INFY", Side.BUY, order_type, tif, None, 10, limit_price=limit, stop_price=stop, expire_date=expire
    )


def well_formed(order_type: OrderType, tif: TimeInForce | None = None) -> OrderDraft:
    rules = ORDER_TYPES[order_type]
    return draft(
        order_type,
        limit="1505.00" if rules.takes_limit_price else "",
        stop="1502.00" if rules.takes_stop_price else "",
        tif=tif,
    )


def test_every_order_type_has_a_row() -> None:
    assert set(ORDER_TYPES) == set(OrderType)


@pytest.mark.parametrize("order_type", list(OrderType))
def test_validation_asks_for_exactly_the_prices_of_the_row(order_type: OrderType) -> None:
    rules = ORDER_TYPES[order_type]
    spec = validation.new_order(well_formed(order_type), INFY)
    assert (spec.limit_price is not None, spec.stop_price is not None) == (
        rules.takes_limit_price,
        rules.takes_stop_price,
    )
    with pytest.raises(InvalidArgument) as wrong:
        validation.new_order(draft(order_type, limit="" if rules.takes_limit_price else "1505.00"), INFY)
    expected = "MISSING_LIMIT_PRICE" if rules.takes_limit_price else "UNEXPECTED_LIMIT_PRICE"
    assert wrong.value.reason == expected


@pytest.mark.parametrize("order_type", list(OrderType))
@pytest.mark.parametrize("tif", list(TimeInForce))
def test_validation_takes_the_validities_of_the_row(order_type: OrderType, tif: TimeInForce) -> None:
    rules = ORDER_TYPES[order_type]
    if tif in rules.validities:
        assert validation.new_order(well_formed(order_type, tif), INFY).time_in_force is tif
        return
    with pytest.raises(InvalidArgument) as refused:
        validation.new_order(well_formed(order_type, tif), INFY)
    assert refused.value.reason == "UNSUPPORTED_TIME_IN_FORCE"
    assert str(refused.value) == rules.validity_rule


@pytest.mark.parametrize("order_type", list(OrderType))
def test_risk_protects_and_blocks_as_the_row_says(order_type: OrderType) -> None:
    rules = ORDER_TYPES[order_type]
    spec = validation.new_order(well_formed(order_type), INFY)
    decision = risk.pre_trade(spec, INFY, MARKET, risk.RiskLimits())
    if rules.protection is Protection.NONE:
        assert decision.protection_price is None and decision.block_price == spec.limit_price
    elif rules.protection is Protection.AT_REFERENCE:
        assert decision.protection_price == Decimal("1575.00")  # last price + 5 %
    else:
        assert decision.protection_price == Decimal("1577.10")  # stop price + 5 %, on the tick
    if rules.protection is not Protection.NONE:
        assert decision.block_price == decision.protection_price


@pytest.mark.parametrize("order_type", list(OrderType))
def test_the_executor_is_sent_the_type_and_limit_of_the_row(order_type: OrderType) -> None:
    rules = ORDER_TYPES[order_type]
    spec = validation.new_order(well_formed(order_type), INFY)
    decision = risk.pre_trade(spec, INFY, MARKET, risk.RiskLimits())
    order = Order(
        order_id="ord_1",
        user_id="u1",
        client_order_id="k1",
        fingerprint="f",
        symbol="INFY",
        side=Side.BUY,
        type=order_type,
        time_in_force=spec.time_in_force,
        product=spec.product,
        quantity=10,
        limit_price=spec.limit_price,
        stop_price=spec.stop_price,
        protection_price=decision.protection_price,
        status=Status.PENDING_EXCHANGE,
        create_time=NOW,
        update_time=NOW,
    )
    command = wire.command_for(order, CommandKind.NEW, NOW, "r1").new_order
    assert command.type == wire.type_to(rules.sent_as)
    assert Decimal(command.limit_price.value) == decision.block_price == order.exchange_limit_price
