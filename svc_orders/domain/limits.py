"""Risk limits operators set per user and per segment (a product: CNC or INTRADAY), on top
of the broker-wide defaults. Every limit that applies to an order is checked and the
tightest refuses; a refusal names its rule, its scope, the limit and what the order would
have made of it, so a client can explain it without parsing prose."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from svc_orders.domain.model import OrderSpec, Product, Side
from svc_runtime.errors import FailedPrecondition, InvalidArgument, ServiceError

DEFAULT_SCOPE = "default"


class Rule(StrEnum):
    # In the order they are checked.
    ORDER_QUANTITY = "ORDER_QUANTITY"
    ORDER_VALUE = "ORDER_VALUE"
    OPEN_ORDERS = "OPEN_ORDERS"
    POSITION = "POSITION"
    DAILY_LOSS = "DAILY_LOSS"


# The LimitSet attribute each rule reads.
_FIELD = {
    Rule.ORDER_VALUE: "max_order_value",
    Rule.ORDER_QUANTITY: "max_order_quantity",
    Rule.OPEN_ORDERS: "max_open_orders",
    Rule.POSITION: "max_position_quantity",
    Rule.DAILY_LOSS: "max_daily_loss",
}
LIMIT_FIELDS = tuple(_FIELD.values())
# Rules that need the account's state (working orders, portfolio) to be checked.
STATEFUL = frozenset({Rule.OPEN_ORDERS, Rule.POSITION, Rule.DAILY_LOSS})


def user_scope(user_id: str) -> str:
    return f"users/{user_id}"


def segment_scope(product: Product) -> str:
    return f"segments/{product.value}"


@dataclass(frozen=True)
class LimitSet:
    """One scope's limits; None leaves the rule to the other scopes."""

    scope: str
    max_order_value: Decimal | None = None
    max_order_quantity: int | None = None
    max_open_orders: int | None = None
    max_position_quantity: int | None = None
    max_daily_loss: Decimal | None = None
    trading_halted: bool = False
    version: int = 0
    update_time: datetime | None = None

    def limit(self, rule: Rule) -> Decimal | None:
        value = getattr(self, _FIELD[rule])
        return None if value is None else Decimal(value)


@dataclass(frozen=True)
class Exposure:
    """What the account holds and has working, as far as the limits that apply need it."""

    open_orders: int = 0  # the user's working orders
    open_orders_in_product: int = 0  # … of the order's product
    position: int = 0  # net shares of the symbol (holdings and today's positions)
    open_buy_quantity: int = 0  # unfilled shares of working BUY orders in the symbol
    open_sell_quantity: int = 0
    day_pnl: Decimal = Decimal(0)  # today's realized + unrealized P&L


@dataclass(frozen=True)
class RiskCheck:
    rule: Rule
    scope: str
    limit: Decimal
    observed: Decimal
    passed: bool

    def refusal(self) -> ServiceError:
        # The per-order rules existed before scoped limits, with their INVALID_ARGUMENT
        # reasons; the rules that depend on the account's state are business-rule refusals.
        metadata = {
            "rule": self.rule.value,
            "scope": self.scope,
            "limit": str(self.limit),
            "observed": str(self.observed),
        }
        over = f"{self.observed} is over the limit of {self.limit} ({self.scope})"
        if self.rule is Rule.ORDER_QUANTITY:
            return InvalidArgument(
                f"the order's quantity {over}",
                reason="QUANTITY_LIMIT",
                field="order.quantity",
                metadata=metadata,
            )
        if self.rule is Rule.ORDER_VALUE:
            return InvalidArgument(
                f"the order's value {over}",
                reason="ORDER_VALUE_LIMIT",
                field="order.quantity",
                metadata=metadata,
            )
        if self.rule is Rule.OPEN_ORDERS:
            return FailedPrecondition(
                f"working orders with this one: {over}", reason="OPEN_ORDERS_LIMIT", metadata=metadata
            )
        if self.rule is Rule.POSITION:
            return FailedPrecondition(
                f"the symbol's position were this order filled: {over}",
                reason="POSITION_LIMIT",
                metadata=metadata,
            )
        return FailedPrecondition(
            f"today's loss {self.observed} has reached the limit of {self.limit} ({self.scope})",
            reason="DAILY_LOSS_LIMIT",
            metadata=metadata,
        )


def applying(sets: list[LimitSet], rules: frozenset[Rule] | None = None) -> list[tuple[Rule, str, Decimal]]:
    """Per rule, the tightest limit of the scopes given, with the scope that set it."""
    tightest: list[tuple[Rule, str, Decimal]] = []
    for rule in Rule:
        if rules is not None and rule not in rules:
            continue
        found = [(s.limit(rule), s.scope) for s in sets if s.limit(rule) is not None]
        if found:
            limit, scope = min(found, key=lambda item: item[0])  # type: ignore[arg-type, return-value]
            assert limit is not None
            tightest.append((rule, scope, limit))
    return tightest


def needs_state(sets: list[LimitSet]) -> bool:
    return any(rule in STATEFUL for rule, _, _ in applying(sets))


def _reduces(spec: OrderSpec, exposure: Exposure) -> bool:
    """The order only brings the symbol's position closer to flat."""
    if spec.side is Side.BUY:
        return exposure.position < 0 and spec.quantity <= -exposure.position
    return exposure.position > 0 and spec.quantity <= exposure.position


def _observed(
    rule: Rule, scope: str, spec: OrderSpec, value: Decimal | None, exposure: Exposure
) -> Decimal | None:
    if rule is Rule.ORDER_VALUE:
        return value
    if rule is Rule.ORDER_QUANTITY:
        return Decimal(spec.quantity)
    if rule is Rule.OPEN_ORDERS:
        working = exposure.open_orders_in_product if scope.startswith("segments/") else exposure.open_orders
        return Decimal(working + 1)
    if rule is Rule.POSITION:
        # The worst the symbol's position could get on the order's side: every working order
        # on that side filled, and this one too.
        if spec.side is Side.BUY:
            return Decimal(abs(exposure.position + exposure.open_buy_quantity + spec.quantity))
        return Decimal(abs(exposure.position - exposure.open_sell_quantity - spec.quantity))
    return max(Decimal(0), -exposure.day_pnl)


def evaluate(
    spec: OrderSpec,
    value: Decimal | None,
    sets: list[LimitSet],
    exposure: Exposure | None,
    rules: frozenset[Rule] | None = None,
) -> list[RiskCheck]:
    """Every applying limit checked against the order; `exposure` None checks only the
    per-order rules. A value not known (no price at all) leaves ORDER_VALUE unchecked."""
    checks: list[RiskCheck] = []
    for rule, scope, limit in applying(sets, rules):
        if rule in STATEFUL and exposure is None:
            continue
        observed = _observed(rule, scope, spec, value, exposure or Exposure())
        if observed is None:
            continue
        if rule is Rule.DAILY_LOSS:
            assert exposure is not None
            # At the limit, orders that only close positions still go through.
            passed = observed < limit or _reduces(spec, exposure)
        elif rule is Rule.POSITION and exposure is not None and _reduces(spec, exposure):
            passed = True
        else:
            passed = observed <= limit
        checks.append(RiskCheck(rule, scope, limit, observed, passed))
    return checks


def first_refusal(checks: list[RiskCheck]) -> ServiceError | None:
    for check in checks:
        if not check.passed:
            return check.refusal()
    return None


def check_halts(sets: list[LimitSet]) -> None:
    """A user's or a segment's own kill switch."""
    for limits in sets:
        if limits.trading_halted:
            raise FailedPrecondition(
                f"trading is halted for {limits.scope}",
                reason="TRADING_HALTED",
                metadata={"scope": limits.scope, "halt_reason": ""},
            )
