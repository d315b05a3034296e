"""Pre-trade risk: trading controls, the fat-finger price collar, size and value limits, and
market protection (the price MARKET and STOP orders are capped at)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from svc_orders.domain import limits as scoped
from svc_orders.domain.model import (
    ORDER_TYPES,
    Instrument,
    MarketSnapshot,
    OrderSpec,
    Protection,
    Side,
)
from svc_runtime.errors import FailedPrecondition, InvalidArgument

ONE = Decimal(1)


@dataclass(frozen=True)
class RiskLimits:
    # Limit and stop prices further than this fraction from the reference price are refused.
    price_collar: Decimal = Decimal("0.10")
    # MARKET orders are sent as limits this fraction beyond the reference price.
    market_protection: Decimal = Decimal("0.05")
    max_order_quantity: int = 100_000
    max_order_value: Decimal = Decimal("10000000.00")
    # Per-user order rate: a token bucket refilled at this rate, holding at most `order_burst`.
    orders_per_second: Decimal = Decimal(10)
    order_burst: int = 20

    def as_limit_set(self) -> scoped.LimitSet:
        """The broker-wide per-order limits, checked like an operator's."""
        return scoped.LimitSet(
            scope=scoped.DEFAULT_SCOPE,
            max_order_value=self.max_order_value,
            max_order_quantity=self.max_order_quantity,
        )


@dataclass(frozen=True)
class TradingControls:
    trading_halted: bool = False
    halt_reason: str = ""
    halted_symbols: frozenset[str] = frozenset()
    version: int = 0
    update_time: datetime | None = None


def check_controls(controls: TradingControls, symbol: str) -> None:
    """The kill switch and symbol halts refuse new orders and modifications."""
    if controls.trading_halted:
        reason = f": {controls.halt_reason}" if controls.halt_reason else ""
        raise FailedPrecondition(
            f"trading is halted{reason}",
            reason="TRADING_HALTED",
            metadata={"halt_reason": controls.halt_reason},
        )
    if symbol in controls.halted_symbols:
        raise FailedPrecondition(
            f"trading in {symbol} is halted", reason="SYMBOL_HALTED", metadata={"symbol": symbol}
        )


def reference_price(snapshot: MarketSnapshot, instrument: Instrument) -> Decimal | None:
    """The last traded price, else the previous close; None when neither is known."""
    if snapshot.last_price is not None and snapshot.last_price > 0:
        return snapshot.last_price
    if instrument.previous_close is not None and instrument.previous_close > 0:
        return instrument.previous_close
    return None


def protection_price(side: Side, reference: Decimal, protection: Decimal, tick: Decimal) -> Decimal:
    """reference × (1 ± protection), on the tick grid and never past the collar."""
    if side is Side.BUY:
        raw = reference * (ONE + protection)
        price = (raw / tick).to_integral_value(rounding=ROUND_FLOOR) * tick
        return max(price, tick)
    raw = reference * (ONE - protection)
    price = (raw / tick).to_integral_value(rounding=ROUND_CEILING) * tick
    return max(price, tick)


def check_collar(price: Decimal, reference: Decimal, collar: Decimal, field: str) -> None:
    low, high = reference * (ONE - collar), reference * (ONE + collar)
    if not low <= price <= high:
        raise InvalidArgument(
            f"{field} {price} is more than {collar * 100:g}% away from the reference price {reference}"
            f" (accepted: {low.quantize(Decimal('0.01'))} to {high.quantize(Decimal('0.01'))})",
            reason="PRICE_OUTSIDE_COLLAR",
            field=field,
            metadata={"reference_price": str(reference)},
        )


def _check_stop_side(spec: OrderSpec, reference: Decimal) -> None:
    # A stop on the wrong side of the market would trigger at once: almost always a typo.
    assert spec.stop_price is not None
    if spec.side is Side.BUY and spec.stop_price < reference:
        raise InvalidArgument(
            f"a BUY stop price must be at or above the last price {reference}",
            reason="STOP_PRICE_WRONG_SIDE",
            field="order.stop_price",
        )
    if spec.side is Side.SELL and spec.stop_price > reference:
        raise InvalidArgument(
            f"a SELL stop price must be at or below the last price {reference}",
            reason="STOP_PRICE_WRONG_SIDE",
            field="order.stop_price",
        )


@dataclass(frozen=True)
class RiskDecision:
    # The price a MARKET or STOP order is capped at on the exchange; None for limits.
    protection_price: Decimal | None
    # The price funds are blocked at (BUY) and the order's value is measured at.
    block_price: Decimal | None
    reference_price: Decimal | None
    # quantity × the block price, else × the reference price; None when neither is known.
    order_value: Decimal | None = None
    # The broker-wide per-order limits as checked (all passed).
    checks: tuple[scoped.RiskCheck, ...] = ()


def _check_per_order(
    spec: OrderSpec, value: Decimal | None, limits: RiskLimits
) -> tuple[scoped.RiskCheck, ...]:
    checks = scoped.evaluate(spec, value, [limits.as_limit_set()], None)
    refusal = scoped.first_refusal(checks)
    if refusal is not None:
        raise refusal
    return tuple(checks)


def pre_trade(
    spec: OrderSpec, instrument: Instrument, snapshot: MarketSnapshot, limits: RiskLimits
) -> RiskDecision:
    """Check a validated order against the market and the broker-wide limits (controls and
    operators' scoped limits are separate)."""
    if spec.quantity > limits.max_order_quantity:
        _check_per_order(spec, None, limits)  # refuses before any price is looked at
    reference = reference_price(snapshot, instrument)
    protection: Decimal | None = None
    rules = ORDER_TYPES[spec.type]
    if rules.protection is Protection.AT_REFERENCE:
        if reference is None:
            raise FailedPrecondition(
                f"no last price or previous close is known for {spec.symbol}: place a LIMIT order",
                reason="NO_REFERENCE_PRICE",
                metadata={"symbol": spec.symbol},
            )
        protection = protection_price(spec.side, reference, limits.market_protection, instrument.tick_size)
    if spec.stop_price is not None:
        if reference is not None:
            check_collar(spec.stop_price, reference, limits.price_collar, "order.stop_price")
            _check_stop_side(spec, reference)
        if rules.protection is Protection.AT_STOP:
            protection = protection_price(
                spec.side, spec.stop_price, limits.market_protection, instrument.tick_size
            )
    if spec.limit_price is not None and reference is not None:
        check_collar(spec.limit_price, reference, limits.price_collar, "order.limit_price")
    block_price = spec.limit_price if spec.limit_price is not None else protection
    value_price = block_price if block_price is not None else reference
    value = None if value_price is None else value_price * spec.quantity
    return RiskDecision(
        protection_price=protection,
        block_price=block_price,
        reference_price=reference,
        order_value=value,
        checks=_check_per_order(spec, value, limits),
    )


def modification(
    order_spec: OrderSpec,
    current_protection: Decimal | None,
    instrument: Instrument,
    snapshot: MarketSnapshot,
    limits: RiskLimits,
) -> RiskDecision:
    """Check an order's new terms. A MARKET order keeps its protection price (only its
    quantity can change); the other types are checked like a new order."""
    if ORDER_TYPES[order_spec.type].protection is not Protection.AT_REFERENCE:
        return pre_trade(order_spec, instrument, snapshot, limits)
    value = None if current_protection is None else current_protection * order_spec.quantity
    return RiskDecision(
        protection_price=current_protection,
        block_price=current_protection,
        reference_price=reference_price(snapshot, instrument),
        order_value=value,
        checks=_check_per_order(order_spec, value, limits),
    )
