"""Order validation and pre-trade risk, pure."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from svc_orders.domain import risk, validation
from svc_orders.domain.model import Instrument, MarketSnapshot, OrderType, Product, Side, TimeInForce
from svc_orders.domain.validation import OrderDraft
from svc_runtime.errors import FailedPrecondition, InvalidArgument

INFY = Instrument(symbol="INFY", tick_size=Decimal("0.05"), lot_size=1, previous_close=Decimal("1500.00"))
LOTS = Instrument(symbol="LOTS", tick_size=Decimal("0.05"), lot_size=25, previous_close=None)
LIMITS = risk.RiskLimits()


def draft(**changes: object) -> OrderDraft:
    fields: dict[str, object] = {
        "symbol": "INFY",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "time_in_force": None,
        "product": None,
        "quantity": 10,
        "limit_price": "1500.05",
        "stop_price": "",
    }
    fields.update(changes)
    return OrderDraft(**fields)  # type: ignore[arg-type]


def reason_of(exc: pytest.ExceptionInfo[InvalidArgument]) -> tuple[str, str]:
    return exc.value.reason, exc.value.violations[0].field if exc.value.violations else ""


def test_a_valid_limit_order_gets_day_and_cnc_defaults() -> None:
    spec = validation.new_order(draft(), INFY)
    assert (spec.time_in_force, spec.product, spec.limit_price) == (
        TimeInForce.DAY,
        Product.CNC,
        Decimal("1500.05"),
    )


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"side": None}, "MISSING_SIDE", "order.side"),
        ({"type": None}, "MISSING_TYPE", "order.type"),
        ({"quantity": 0}, "NOT_POSITIVE", "order.quantity"),
        ({"quantity": -5}, "NOT_POSITIVE", "order.quantity"),
        ({"limit_price": ""}, "MISSING_LIMIT_PRICE", "order.limit_price"),
        ({"limit_price": "1500.03"}, "PRICE_NOT_ON_TICK", "order.limit_price"),
        ({"limit_price": "1500.055"}, "TOO_PRECISE", "order.limit_price"),
        ({"limit_price": "1e3"}, "INVALID_DECIMAL", "order.limit_price"),
        ({"limit_price": "-10"}, "NOT_POSITIVE", "order.limit_price"),
        ({"type": OrderType.MARKET}, "UNEXPECTED_LIMIT_PRICE", "order.limit_price"),
        ({"stop_price": "1490"}, "UNEXPECTED_STOP_PRICE", "order.stop_price"),
        ({"type": OrderType.STOP, "limit_price": ""}, "MISSING_STOP_PRICE", "order.stop_price"),
        (
            {
                "type": OrderType.STOP,
                "limit_price": "",
                "stop_price": "1510",
                "time_in_force": TimeInForce.IOC,
            },
            "UNSUPPORTED_TIME_IN_FORCE",
            "order.time_in_force",
        ),
        (
            {"type": OrderType.STOP_LIMIT, "stop_price": "1510", "limit_price": "1505"},
            "LIMIT_BELOW_STOP",
            "order.limit_price",
        ),
    ],
)
def test_invalid_orders_name_the_field(changes: dict[str, object], reason: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.new_order(draft(**changes), INFY)
    assert reason_of(err) == (reason, field)


def test_quantity_must_be_in_lots() -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.new_order(draft(symbol="LOTS", quantity=30), LOTS)
    assert reason_of(err) == ("QUANTITY_NOT_IN_LOTS", "order.quantity")
    assert validation.new_order(draft(symbol="LOTS", quantity=50), LOTS).quantity == 50


def test_symbol_and_ids_are_checked() -> None:
    assert validation.symbol(" infy ") == "INFY"
    assert validation.symbol("M&M") == "M&M"
    for bad in ("", "IN FY", "x" * 31):
        with pytest.raises(InvalidArgument):
            validation.symbol(bad)
    with pytest.raises(InvalidArgument):
        validation.request_id("")
    with pytest.raises(InvalidArgument):
        validation.request_id("has space")
    with pytest.raises(InvalidArgument):
        validation.user_id("a/b")


def test_fingerprint_ignores_price_spelling_and_sees_every_term() -> None:
    a = validation.new_order(draft(limit_price="1500.10"), INFY)
    b = validation.new_order(draft(limit_price="1500.1"), INFY)
    c = validation.new_order(draft(limit_price="1500.15"), INFY)
    d = validation.new_order(draft(limit_price="1500.10", side=Side.SELL), INFY)
    assert validation.fingerprint(a) == validation.fingerprint(b)
    assert len({validation.fingerprint(x) for x in (a, c, d)}) == 3


def test_limit_prices_outside_the_collar_are_refused_both_ways() -> None:
    snapshot = MarketSnapshot(last_price=Decimal("1000.00"))
    ok = validation.new_order(draft(limit_price="1100.00"), INFY)
    assert risk.pre_trade(ok, INFY, snapshot, LIMITS).block_price == Decimal("1100.00")
    for price in ("1100.05", "899.95", "10.00"):
        with pytest.raises(InvalidArgument) as err:
            risk.pre_trade(validation.new_order(draft(limit_price=price), INFY), INFY, snapshot, LIMITS)
        assert err.value.reason == "PRICE_OUTSIDE_COLLAR"


def test_market_orders_are_protected_at_the_collar_on_the_tick_grid() -> None:
    buy = validation.new_order(draft(type=OrderType.MARKET, limit_price=""), INFY)
    decision = risk.pre_trade(buy, INFY, MarketSnapshot(last_price=Decimal("1542.35")), LIMITS)
    # 1542.35 × 1.05 = 1619.4675 → down to the tick: 1619.45
    assert decision.protection_price == Decimal("1619.45") and decision.block_price == Decimal("1619.45")
    sell = validation.new_order(draft(type=OrderType.MARKET, limit_price="", side=Side.SELL), INFY)
    sold = risk.pre_trade(sell, INFY, MarketSnapshot(last_price=Decimal("1542.35")), LIMITS)
    # 1542.35 × 0.95 = 1465.2325 → up to the tick: 1465.25
    assert sold.protection_price == Decimal("1465.25")


def test_market_orders_fall_back_to_the_previous_close_and_need_some_reference() -> None:
    buy = validation.new_order(draft(type=OrderType.MARKET, limit_price=""), INFY)
    assert risk.pre_trade(buy, INFY, MarketSnapshot(), LIMITS).protection_price == Decimal("1575.00")
    no_ref = validation.new_order(
        draft(symbol="LOTS", type=OrderType.MARKET, limit_price="", quantity=25), LOTS
    )
    with pytest.raises(FailedPrecondition) as err:
        risk.pre_trade(no_ref, LOTS, MarketSnapshot(), LIMITS)
    assert err.value.reason == "NO_REFERENCE_PRICE"


def test_limits_on_quantity_and_value() -> None:
    limits = risk.RiskLimits(max_order_quantity=100, max_order_value=Decimal("100000"))
    with pytest.raises(InvalidArgument) as err:
        risk.pre_trade(validation.new_order(draft(quantity=101), INFY), INFY, MarketSnapshot(), limits)
    assert err.value.reason == "QUANTITY_LIMIT"
    with pytest.raises(InvalidArgument) as err:
        risk.pre_trade(validation.new_order(draft(quantity=67), INFY), INFY, MarketSnapshot(), limits)
    assert err.value.reason == "ORDER_VALUE_LIMIT"
    assert risk.pre_trade(validation.new_order(draft(quantity=66), INFY), INFY, MarketSnapshot(), limits)


def test_stop_orders_are_protected_from_their_stop_and_must_sit_on_the_right_side() -> None:
    stop = validation.new_order(draft(type=OrderType.STOP, limit_price="", stop_price="1520.00"), INFY)
    decision = risk.pre_trade(stop, INFY, MarketSnapshot(last_price=Decimal("1500")), LIMITS)
    assert decision.protection_price == Decimal("1596.00")
    wrong = validation.new_order(draft(type=OrderType.STOP, limit_price="", stop_price="1480.00"), INFY)
    with pytest.raises(InvalidArgument) as err:
        risk.pre_trade(wrong, INFY, MarketSnapshot(last_price=Decimal("1500")), LIMITS)
    assert err.value.reason == "STOP_PRICE_WRONG_SIDE"


def test_kill_switch_and_symbol_halts() -> None:
    risk.check_controls(risk.TradingControls(), "INFY")
    with pytest.raises(FailedPrecondition) as err:
        risk.check_controls(risk.TradingControls(trading_halted=True, halt_reason="drill"), "INFY")
    assert err.value.reason == "TRADING_HALTED" and "drill" in err.value.message
    with pytest.raises(FailedPrecondition) as err:
        risk.check_controls(risk.TradingControls(halted_symbols=frozenset({"INFY"})), "INFY")
    assert err.value.reason == "SYMBOL_HALTED"
    risk.check_controls(risk.TradingControls(halted_symbols=frozenset({"TCS"})), "INFY")


TODAY = date(2026, 12, 7)


def test_gtc_and_gtd_limit_orders_are_accepted_with_their_date() -> None:
    gtc = validation.new_order(draft(time_in_force=TimeInForce.GTC), INFY, TODAY)
    assert (gtc.time_in_force, gtc.expire_date) == (TimeInForce.GTC, None)
    gtd = validation.new_order(draft(time_in_force=TimeInForce.GTD, expire_date="2026-12-09"), INFY, TODAY)
    assert (gtd.time_in_force, gtd.expire_date) == (TimeInForce.GTD, date(2026, 12, 9))
    assert validation.new_order(draft(time_in_force=TimeInForce.GTD, expire_date="2026-12-07"), INFY, TODAY)
    # The date is part of the request's terms: a retry with another date is another order.
    other = validation.new_order(draft(time_in_force=TimeInForce.GTD, expire_date="2026-12-10"), INFY, TODAY)
    assert validation.fingerprint(gtd) != validation.fingerprint(other)


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"time_in_force": TimeInForce.GTD}, "INVALID_EXPIRE_DATE", "order.expire_date"),
        (
            {"time_in_force": TimeInForce.GTD, "expire_date": "2026-12-06"},
            "INVALID_EXPIRE_DATE",
            "order.expire_date",
        ),
        (
            {"time_in_force": TimeInForce.GTD, "expire_date": "2027-12-08"},
            "INVALID_EXPIRE_DATE",
            "order.expire_date",
        ),
        (
            {"time_in_force": TimeInForce.GTD, "expire_date": "9/12/26"},
            "INVALID_EXPIRE_DATE",
            "order.expire_date",
        ),
        (
            {"time_in_force": TimeInForce.DAY, "expire_date": "2026-12-09"},
            "INVALID_EXPIRE_DATE",
            "order.expire_date",
        ),
        (
            {"time_in_force": TimeInForce.GTC, "product": Product.INTRADAY},
            "UNSUPPORTED_TIME_IN_FORCE",
            "order.time_in_force",
        ),
        (
            {"time_in_force": TimeInForce.GTC, "type": OrderType.MARKET, "limit_price": ""},
            "UNSUPPORTED_TIME_IN_FORCE",
            "order.time_in_force",
        ),
        (
            {
                "time_in_force": TimeInForce.GTC,
                "type": OrderType.STOP,
                "limit_price": "",
                "stop_price": "1510",
            },
            "UNSUPPORTED_TIME_IN_FORCE",
            "order.time_in_force",
        ),
    ],
)
def test_bad_validities_name_the_field(changes: dict[str, object], reason: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        validation.new_order(draft(**changes), INFY, TODAY)
    assert reason_of(err) == (reason, field)
