"""The charges schedule: brokerage and taxes on executed orders.

Charges are a function of an order's cumulative traded value (its turnover), so that an
order's total charges do not depend on how the exchange splits it into fills: each fill is
charged `charges(turnover after it) − charges(turnover before it)`. Every rule is
non-decreasing in turnover (non-negative rates, caps taken with `min`, rounding half up), so
the charges of a whole order at its block price bound the charges of any fills at or below
that price: that bound is what BlockFunds sets aside.

A schedule is data: the built-in `zero` and `india-equity` schedules, or a document of the
same shape (`schedule_from_dict`; rates as decimal strings, never binary floats).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from svc_funds.domain.model import Product, Side

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ROUNDING = {"paisa": Decimal("0.01"), "rupee": Decimal(1)}
ZERO = Decimal(0)


class ScheduleError(ValueError):
    """A charges schedule that cannot be used."""


@dataclass(frozen=True)
class ChargeRule:
    """One charge: `rate` × base, at most `cap` per order, rounded half up.

    The base is the order's turnover, or, when `on` names earlier charges (GST on brokerage
    and exchange fees), the sum of those charges.
    """

    name: str
    rate: Decimal
    sides: frozenset[Side]
    products: frozenset[Product]
    cap: Decimal | None = None
    rounding: str = "paisa"
    on: tuple[str, ...] = ()

    def applies(self, side: Side, product: Product) -> bool:
        return side in self.sides and product in self.products


@dataclass(frozen=True)
class ChargesSchedule:
    name: str
    rules: tuple[ChargeRule, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_memo", {})  # not a field: outside equality and hashing
        seen: set[str] = set()
        for rule in self.rules:
            if not _NAME.match(rule.name):
                raise ScheduleError(f"charge name {rule.name!r} must be lower-case letters, digits or '_'")
            if not ZERO <= rule.rate <= 1:
                raise ScheduleError(f"charge {rule.name}: rate must be between 0 and 1")
            if rule.cap is not None and rule.cap < 0:
                raise ScheduleError(f"charge {rule.name}: cap must not be negative")
            if rule.rounding not in _ROUNDING:
                raise ScheduleError(f"charge {rule.name}: rounding must be one of {sorted(_ROUNDING)}")
            if not rule.sides or not rule.products:
                raise ScheduleError(f"charge {rule.name}: sides and products must not be empty")
            unknown = [n for n in rule.on if n not in seen]
            if unknown:
                raise ScheduleError(f"charge {rule.name}: 'on' names {unknown} that no earlier rule defines")
            seen.add(rule.name)

    @property
    def names(self) -> tuple[str, ...]:
        """Every charge name, in rule order, without repeats: one house account each."""
        return tuple(dict.fromkeys(rule.name for rule in self.rules))

    def order_charges(self, side: Side, product: Product, turnover: Decimal) -> dict[str, Decimal]:
        """The charges of an order that has traded `turnover` rupees so far, by name."""
        # A fill's "before" is the previous fill's "after": remember recent answers.
        memo: dict[tuple[Side, Product, Decimal], tuple[tuple[str, Decimal], ...]] = self._memo  # type: ignore[attr-defined]
        key = (side, product, turnover)
        cached = memo.get(key)
        if cached is None:
            if len(memo) > 100_000:
                memo.clear()
            cached = memo[key] = tuple(self._compute(side, product, turnover).items())
        return dict(cached)

    def _compute(self, side: Side, product: Product, turnover: Decimal) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for rule in self.rules:
            if not rule.applies(side, product):
                continue
            base = sum((out.get(n, ZERO) for n in rule.on), ZERO) if rule.on else turnover
            amount = base * rule.rate
            if rule.cap is not None:
                amount = min(amount, rule.cap)
            amount = amount.quantize(_ROUNDING[rule.rounding], rounding=ROUND_HALF_UP).quantize(
                Decimal("0.01")
            )
            out[rule.name] = out.get(rule.name, ZERO) + amount
        return {name: amount for name, amount in out.items() if amount}

    def fill_charges(
        self, side: Side, product: Product, turnover_before: Decimal, turnover_after: Decimal
    ) -> dict[str, Decimal]:
        """The charges one fill adds to its order."""
        before = self.order_charges(side, product, turnover_before)
        after = self.order_charges(side, product, turnover_after)
        out: dict[str, Decimal] = {}
        for name, amount in after.items():
            delta = amount - before.get(name, ZERO)
            if delta < 0:  # impossible for a valid schedule: every rule is non-decreasing
                raise ScheduleError(f"charge {name} decreased as turnover grew")
            if delta:
                out[name] = delta
        return out

    def max_charges(self, side: Side, product: Product, turnover: Decimal) -> Decimal:
        """The most an order of this turnover can be charged in total."""
        return sum(self.order_charges(side, product, turnover).values(), ZERO)


_BOTH_SIDES = frozenset(Side)
_ALL_PRODUCTS = frozenset(Product)

ZERO_SCHEDULE = ChargesSchedule("zero", ())

# An Indian discount broker's equity schedule (NSE), simplified: flat brokerage for intraday,
# free delivery; STT, exchange transaction charges, the SEBI fee, GST and stamp duty.
INDIA_EQUITY = ChargesSchedule(
    "india-equity",
    (
        ChargeRule(
            "brokerage", Decimal("0.0003"), _BOTH_SIDES, frozenset({Product.INTRADAY}), cap=Decimal(20)
        ),
        ChargeRule("stt", Decimal("0.001"), _BOTH_SIDES, frozenset({Product.CNC}), rounding="rupee"),
        ChargeRule(
            "stt", Decimal("0.00025"), frozenset({Side.SELL}), frozenset({Product.INTRADAY}), rounding="rupee"
        ),
        ChargeRule("exchange_txn", Decimal("0.0000297"), _BOTH_SIDES, _ALL_PRODUCTS),
        ChargeRule("sebi_fee", Decimal("0.000001"), _BOTH_SIDES, _ALL_PRODUCTS),
        ChargeRule(
            "gst", Decimal("0.18"), _BOTH_SIDES, _ALL_PRODUCTS, on=("brokerage", "exchange_txn", "sebi_fee")
        ),
        ChargeRule("stamp_duty", Decimal("0.00015"), frozenset({Side.BUY}), frozenset({Product.CNC})),
        ChargeRule("stamp_duty", Decimal("0.00003"), frozenset({Side.BUY}), frozenset({Product.INTRADAY})),
    ),
)

BUILT_IN = {ZERO_SCHEDULE.name: ZERO_SCHEDULE, INDIA_EQUITY.name: INDIA_EQUITY}
DEFAULT_SCHEDULE = INDIA_EQUITY


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, float):
        raise ScheduleError(f'{where}: write decimal numbers as strings, e.g. "0.0003"')
    try:
        result = Decimal(str(value))
    except InvalidOperation as exc:
        raise ScheduleError(f"{where}: {value!r} is not a decimal number") from exc
    if not result.is_finite():
        raise ScheduleError(f"{where}: {value!r} is not a finite number")
    return result


def _enum_set(values: Iterable[str] | None, enum: type[Side] | type[Product], where: str) -> frozenset[Any]:
    if values is None:
        return frozenset(enum)
    try:
        return frozenset(enum(v) for v in values)
    except ValueError as exc:
        raise ScheduleError(f"{where}: {exc}") from exc


def schedule_from_dict(data: Mapping[str, Any]) -> ChargesSchedule:
    """Build a schedule from `{"name": ..., "charges": [{"name", "rate", "sides", "products",
    "cap", "rounding", "on"}, ...]}`; sides and products default to all."""
    if not isinstance(data, Mapping) or not isinstance(data.get("charges"), list):
        raise ScheduleError('a schedule is an object with a "charges" list')
    rules = []
    for i, item in enumerate(data["charges"]):
        where = f"charges[{i}]"
        if not isinstance(item, Mapping):
            raise ScheduleError(f"{where}: must be an object")
        unknown = set(item) - {"name", "rate", "sides", "products", "cap", "rounding", "on"}
        if unknown:
            raise ScheduleError(f"{where}: unknown keys {sorted(unknown)}")
        rules.append(
            ChargeRule(
                name=str(item.get("name", "")),
                rate=_decimal(item.get("rate"), f"{where}.rate"),
                sides=_enum_set(item.get("sides"), Side, f"{where}.sides"),
                products=_enum_set(item.get("products"), Product, f"{where}.products"),
                cap=None if item.get("cap") is None else _decimal(item["cap"], f"{where}.cap"),
                rounding=str(item.get("rounding", "paisa")),
                on=tuple(item.get("on", ())),
            )
        )
    return ChargesSchedule(str(data.get("name", "custom")), tuple(rules))
