"""Iceberg orders (a display quantity) by the order-type table: which orders may show part
of themselves, how much, what a modification must keep, and that risk, the fingerprint and
the executor's commands see it. Pure and fast."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from svc_orders.app.ports import CommandKind
from svc_orders.domain import gtt, risk, validation
from svc_orders.domain.model import (
    ORDER_TYPES,
    Contingency,
    Instrument,
    MarketSnapshot,
    Order,
    OrderType,
    PendingChange,
    Side,
    Status,
    TimeInForce,
)
from svc_orders.domain.validation import ModificationDraft, OrderDraft
from svc_orders.transport import wire
from svc_runtime.errors import InvalidArgument

INFY = Instrument("INFY", Decimal("0.05"), 1, previous_close=Decimal("1500.00"))
LOTS = Instrument("LOTS", Decimal("0.05"), 25, previous_close=Decimal("1500.00"))
NOW = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)


def iceberg(display: int, **changes: object) -> OrderDraft:
    fields: dict[str, object] = {
        "symbol": "INFY",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "time_in_force": None,
        "product": None,
        "quantity": 100,
        "limit_price": "1500.00",
        "display_quantity": display,
    }
    fields.update(changes)
    return OrderDraft(**fields)  # type: ignore[arg-type]


def refusal(draft: OrderDraft, instrument: Instrument = INFY) -> tuple[str, str]:
    with pytest.raises(InvalidArgument) as refused:
        validation.new_order(draft, instrument)
    return refused.value.reason, refused.value.violations[0].field


def test_only_the_limit_row_may_show_part_of_an_order() -> None:
    assert {t for t, rules in ORDER_TYPES.items() if rules.min_display_percent is not None} == {
        OrderType.LIMIT
    }
    assert ORDER_TYPES[OrderType.LIMIT].min_display_percent == 10


@pytest.mark.parametrize("tif", [None, TimeInForce.DAY, TimeInForce.GTC, TimeInForce.GTD])
def test_a_resting_limit_order_may_show_10_to_99_percent(tif: TimeInForce | None) -> None:
    expire = "2026-12-31" if tif is TimeInForce.GTD else ""
    for display in (10, 55, 99):
        spec = validation.new_order(iceberg(display, time_in_force=tif, expire_date=expire), INFY)
        assert (spec.quantity, spec.display_quantity) == (100, display)
    assert validation.new_order(iceberg(0), INFY).display_quantity == 0  # shows in full


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"type": OrderType.MARKET, "limit_price": ""}, "DISPLAY_QUANTITY_NOT_ALLOWED"),
        (
            {"type": OrderType.STOP, "limit_price": "", "stop_price": "1490.00", "side": Side.SELL},
            "DISPLAY_QUANTITY_NOT_ALLOWED",
        ),
        ({"type": OrderType.STOP_LIMIT, "stop_price": "1495.00"}, "DISPLAY_QUANTITY_NOT_ALLOWED"),
        ({"time_in_force": TimeInForce.IOC}, "DISPLAY_QUANTITY_NOT_ALLOWED"),
        ({"time_in_force": TimeInForce.FOK}, "DISPLAY_QUANTITY_NOT_ALLOWED"),
        (
            {
                "contingency": Contingency.BRACKET,
                "exit_target_price": "1600.00",
                "exit_stop_price": "1400.00",
            },
            "DISPLAY_QUANTITY_NOT_ALLOWED",
        ),
        (
            {"side": Side.SELL, "contingency": Contingency.OCO, "exit_stop_price": "1400.00"},
            "DISPLAY_QUANTITY_NOT_ALLOWED",
        ),
    ],
)
def test_orders_that_cannot_hide_are_refused(changes: dict[str, object], reason: str) -> None:
    assert refusal(iceberg(10, **changes)) == (reason, "order.display_quantity")


@pytest.mark.parametrize("display", [9, 100, 150, -10])
def test_a_display_below_10_percent_or_not_below_the_quantity_is_out_of_range(display: int) -> None:
    assert refusal(iceberg(display)) == ("DISPLAY_QUANTITY_OUT_OF_RANGE", "order.display_quantity")


def test_a_display_quantity_is_in_lots() -> None:
    assert validation.new_order(iceberg(50, symbol="LOTS", quantity=250), LOTS).display_quantity == 50
    assert refusal(iceberg(30, symbol="LOTS", quantity=250), LOTS) == (
        "DISPLAY_QUANTITY_OUT_OF_RANGE",
        "order.display_quantity",
    )


def test_the_display_quantity_is_part_of_the_terms_a_key_stands_for() -> None:
    fingerprint = validation.fingerprint
    shown = validation.new_order(iceberg(0), INFY)
    assert fingerprint(validation.new_order(iceberg(10), INFY)) != fingerprint(shown)
    assert fingerprint(validation.new_order(iceberg(10), INFY)) != fingerprint(
        validation.new_order(iceberg(20), INFY)
    )


def test_risk_and_the_block_see_the_whole_quantity() -> None:
    spec = validation.new_order(iceberg(10), INFY)
    decision = risk.pre_trade(spec, INFY, MarketSnapshot(last_price=Decimal("1500.00")), risk.RiskLimits())
    assert decision.block_price == Decimal("1500.00")
    assert decision.order_value == Decimal("150000.00")  # 100 shares, not the 10 shown


def test_a_gtt_places_orders_in_full_view() -> None:
    with pytest.raises(InvalidArgument) as refused:
        gtt.check_order(validation.new_order(iceberg(10), INFY))
    assert refused.value.reason == "DISPLAY_QUANTITY_NOT_ALLOWED"


def resting_iceberg(display: int = 10, quantity: int = 100, filled: int = 0) -> Order:
    return Order(
        order_id="ord_1",
        user_id="u1",
        client_order_id="k1",
        fingerprint="f",
        symbol="INFY",
        side=Side.SELL,
        type=OrderType.LIMIT,
        time_in_force=TimeInForce.DAY,
        product=validation.new_order(iceberg(0), INFY).product,
        quantity=quantity,
        limit_price=Decimal("1500.00"),
        stop_price=None,
        protection_price=None,
        status=Status.OPEN,
        create_time=NOW,
        update_time=NOW,
        filled_quantity=filled,
        display_quantity=display,
    )


def test_a_modification_keeps_the_display_quantity_in_range() -> None:
    order = resting_iceberg()
    assert validation.modification(order, ModificationDraft(quantity=60), INFY).quantity == 60
    assert validation.modification(order, ModificationDraft(limit_price="1501.00"), INFY).quantity == 100
    for quantity in (10, 101):  # the display would be all of it, or under 10 %
        with pytest.raises(InvalidArgument) as refused:
            validation.modification(order, ModificationDraft(quantity=quantity), INFY)
        assert (refused.value.reason, refused.value.violations[0].field) == (
            "DISPLAY_QUANTITY_OUT_OF_RANGE",
            "quantity",
        )


def test_the_executor_is_sent_the_display_quantity_on_new_and_replace() -> None:
    order = resting_iceberg()
    assert wire.command_for(order, CommandKind.NEW, NOW, "r1").new_order.display_quantity == 10
    replacing = replace(
        order,
        status=Status.PENDING_REPLACE,
        pending=PendingChange(kind="REPLACE", request_id="r2", quantity=60, limit_price=Decimal("1500.00")),
    )
    command = wire.command_for(replacing, CommandKind.REPLACE, NOW, "r2").replace_order
    assert (command.quantity, command.display_quantity) == (60, 10)
    plain = wire.command_for(resting_iceberg(display=0), CommandKind.NEW, NOW, "r3").new_order
    assert plain.display_quantity == 0
    assert wire.order_to_proto(order).display_quantity == 10
