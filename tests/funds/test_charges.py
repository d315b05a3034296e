"""The charges schedule: pure arithmetic, no I/O."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from svc_funds.domain.charges import (
    INDIA_EQUITY,
    ZERO_SCHEDULE,
    ChargeRule,
    ChargesSchedule,
    ScheduleError,
    schedule_from_dict,
)
from svc_funds.domain.model import Product, Side
from svc_funds.domain.operations import cash_block_amount

D = Decimal


def test_the_zero_schedule_charges_nothing_and_blocks_exactly_the_value() -> None:
    assert ZERO_SCHEDULE.order_charges(Side.BUY, Product.CNC, D("150.00")) == {}
    assert cash_block_amount(ZERO_SCHEDULE, 1, D("150.00"), Product.CNC) == D("150.00")
    assert cash_block_amount(ZERO_SCHEDULE, 7, D("1542.35"), Product.INTRADAY) == D("10796.45")


def test_intraday_brokerage_is_capped_per_order_and_taxed() -> None:
    # ₹10,00,000 intraday buy: 0.03 % would be ₹300, the cap is ₹20; GST 18 % on brokerage
    # and exchange fees; stamp duty 0.003 % on the buy.
    charges = INDIA_EQUITY.order_charges(Side.BUY, Product.INTRADAY, D("1000000.00"))
    assert charges["brokerage"] == D("20.00")
    assert charges["exchange_txn"] == D("29.70")
    assert charges["sebi_fee"] == D("1.00")
    assert charges["gst"] == D("9.13")  # 18 % of 50.70 = 9.126
    assert charges["stamp_duty"] == D("30.00")
    assert "stt" not in charges  # intraday STT is on the sell side only


def test_small_intraday_orders_pay_the_percentage_not_the_cap() -> None:
    charges = INDIA_EQUITY.order_charges(Side.SELL, Product.INTRADAY, D("10000.00"))
    assert charges["brokerage"] == D("3.00")
    assert charges["stt"] == D("3.00")  # 0.025 % = 2.50, rounded to the rupee (half up)
    assert "stamp_duty" not in charges


def test_delivery_is_free_of_brokerage_and_pays_stt_rounded_to_the_rupee() -> None:
    charges = INDIA_EQUITY.order_charges(Side.BUY, Product.CNC, D("15423.50"))
    assert "brokerage" not in charges
    assert charges["stt"] == D("15.00")  # 15.4235 → 15
    assert charges["stamp_duty"] == D("2.31")  # 2.313525


def test_every_charge_is_a_whole_number_of_paise() -> None:
    rng = random.Random(7)
    for _ in range(500):
        turnover = D(rng.randint(1, 10**9)) / 100
        for side in Side:
            for product in Product:
                for amount in INDIA_EQUITY.order_charges(side, product, turnover).values():
                    assert amount == amount.quantize(D("0.01")) and amount > 0


def test_charges_never_decrease_as_an_order_trades_more() -> None:
    rng = random.Random(11)
    for _ in range(500):
        a, b = sorted(D(rng.randint(1, 10**8)) / 100 for _ in range(2))
        for side in Side:
            for product in Product:
                low = INDIA_EQUITY.order_charges(side, product, a)
                high = INDIA_EQUITY.order_charges(side, product, b)
                assert all(high.get(name, D(0)) >= value for name, value in low.items())


def test_fill_charges_add_up_to_the_order_charges_however_the_order_is_split() -> None:
    rng = random.Random(3)
    for _ in range(200):
        fills = [D(rng.randint(1, 10**7)) / 100 for _ in range(rng.randint(1, 8))]
        side, product = rng.choice(list(Side)), rng.choice(list(Product))
        total: dict[str, Decimal] = {}
        turnover = D(0)
        for value in fills:
            for name, amount in INDIA_EQUITY.fill_charges(side, product, turnover, turnover + value).items():
                assert amount > 0
                total[name] = total.get(name, D(0)) + amount
            turnover += value
        assert total == INDIA_EQUITY.order_charges(side, product, turnover)


def test_a_buy_block_covers_the_charges_of_any_fills_at_or_below_its_price() -> None:
    rng = random.Random(5)
    for _ in range(200):
        quantity = rng.randint(1, 5000)
        price = D(rng.randint(100, 500000)) * D("0.05")
        product = rng.choice(list(Product))
        block = cash_block_amount(INDIA_EQUITY, quantity, price, product)
        fill_price = price - D(rng.randint(0, 100)) * D("0.05")
        if fill_price <= 0:
            continue
        value = quantity * fill_price
        assert value + INDIA_EQUITY.max_charges(Side.BUY, product, value) <= block


def test_schedules_load_from_documents_with_exact_decimals() -> None:
    schedule = schedule_from_dict(
        {
            "name": "flat",
            "charges": [
                {"name": "brokerage", "rate": "0.001", "cap": "15", "products": ["CNC"]},
                {"name": "gst", "rate": "0.18", "on": ["brokerage"]},
            ],
        }
    )
    assert schedule.names == ("brokerage", "gst")
    assert schedule.order_charges(Side.SELL, Product.CNC, D("20000")) == {
        "brokerage": D("15.00"),
        "gst": D("2.70"),
    }
    assert schedule.order_charges(Side.SELL, Product.INTRADAY, D("20000")) == {}


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"charges": [{"name": "x", "rate": 0.1}]}, "strings"),
        ({"charges": [{"name": "x", "rate": "1.5"}]}, "between 0 and 1"),
        ({"charges": [{"name": "gst", "rate": "0.18", "on": ["brokerage"]}]}, "no earlier rule"),
        ({"charges": [{"name": "x", "rate": "0.1", "sides": ["LONG"]}]}, "LONG"),
        ({"charges": [{"name": "x", "rate": "0.1", "typo": 1}]}, "unknown keys"),
        ({"charges": [{"name": "Bad Name", "rate": "0.1"}]}, "lower-case"),
        ({"charges": "none"}, "charges"),
    ],
)
def test_bad_schedules_are_refused_with_a_reason(document: dict, complaint: str) -> None:
    with pytest.raises(ScheduleError, match=complaint):
        schedule_from_dict(document)


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ScheduleError, match="cap"):
        ChargesSchedule("x", (ChargeRule("b", D("0.1"), frozenset(Side), frozenset(Product), cap=D(-1)),))
