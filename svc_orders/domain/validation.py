"""Validation of order requests against the instrument: a clear error naming the field,
or a request the rest of the OMS can trust."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from svc_orders.domain import trailing
from svc_orders.domain.model import (
    NO_EXIT,
    ORDER_TYPES,
    Contingency,
    ExitTerms,
    Instrument,
    Order,
    OrderSpec,
    OrderType,
    OrderTypeRules,
    Product,
    Side,
    TimeInForce,
    Trail,
)
from svc_runtime import names
from svc_runtime.decimals import parse_decimal
from svc_runtime.errors import InvalidArgument

PRICE_PLACES = 2
# How far ahead a GTD order may be good for (as far as a GTC order is kept at most brokers).
MAX_GTD_DAYS = 365
MAX_QUANTITY = 10**12  # beyond any instrument; keeps quantities inside int64 arithmetic

_PAISA = Decimal("0.01")


@dataclass(frozen=True)
class OrderDraft:
    """An order request as it came in: enums already decoded, prices still text."""

    symbol: str
    side: Side | None
    type: OrderType | None
    time_in_force: TimeInForce | None
    product: Product | None
    quantity: int
    limit_price: str = ""
    stop_price: str = ""
    expire_date: str = ""  # ISO 8601 date, GTD only
    tag: str = ""  # the client's label, already checked (svc_runtime.tags)
    contingency: Contingency | None = None
    exit_target_price: str = ""
    exit_stop_price: str = ""
    trail_amount: str = ""
    trail_percent: str = ""
    display_quantity: int = 0  # 0: the order shows in full


@dataclass(frozen=True)
class ModificationDraft:
    """A modification request: 0 / empty keeps the current value."""

    quantity: int = 0
    limit_price: str = ""
    stop_price: str = ""


@dataclass(frozen=True)
class Modification:
    """A validated modification: the order's new terms."""

    quantity: int
    limit_price: Decimal | None
    stop_price: Decimal | None


def user_id(value: str, *, field: str = "parent") -> str:
    return names.resource_id(value, field)


def request_id(value: str, *, field: str = "request_id") -> str:
    return names.request_id(value, field)


def symbol(value: str) -> str:
    return names.symbol(value, "order.symbol")


def _price(text: str, instrument: Instrument, field: str) -> Decimal:
    value = parse_decimal(text, field=field, max_places=PRICE_PLACES, positive=True)
    if value % instrument.tick_size != 0:
        raise InvalidArgument(
            f"{field} must be a multiple of the tick size {instrument.tick_size}",
            reason="PRICE_NOT_ON_TICK",
            field=field,
        )
    return value


def price(text: str, instrument: Instrument, field: str) -> Decimal:
    """A positive price in paise on the instrument's tick grid."""
    return _price(text, instrument, field)


def _quantity(quantity: int, instrument: Instrument, field: str) -> int:
    if quantity <= 0:
        raise InvalidArgument(
            f"{field} must be a positive number of shares", reason="NOT_POSITIVE", field=field
        )
    if quantity > MAX_QUANTITY:
        raise InvalidArgument(f"{field} is too large", reason="QUANTITY_LIMIT", field=field)
    if quantity % instrument.lot_size != 0:
        raise InvalidArgument(
            f"{field} must be a multiple of the lot size {instrument.lot_size}",
            reason="QUANTITY_NOT_IN_LOTS",
            field=field,
        )
    return quantity


def _check_stop_limit(side: Side, limit: Decimal, stop: Decimal) -> None:
    # A buy stop-limit triggers at the stop and buys up to the limit: limit below stop
    # could never fill at trigger time, and the mirror holds for sells.
    if side is Side.BUY and limit < stop:
        raise InvalidArgument(
            "a BUY stop-limit order needs limit_price ≥ stop_price",
            reason="LIMIT_BELOW_STOP",
            field="order.limit_price",
        )
    if side is Side.SELL and limit > stop:
        raise InvalidArgument(
            "a SELL stop-limit order needs limit_price ≤ stop_price",
            reason="LIMIT_ABOVE_STOP",
            field="order.limit_price",
        )


def _validity(
    draft: OrderDraft, rules: OrderTypeRules, product: Product, today: date | None
) -> tuple[TimeInForce, date | None]:
    """The time in force and, for GTD, its expire date: today at the earliest, a year ahead
    at the latest. Intraday positions are squared off the same day, so their orders cannot
    outlive it."""
    time_in_force = draft.time_in_force or TimeInForce.DAY
    field = "order.expire_date"
    if time_in_force not in rules.validities:
        raise InvalidArgument(
            rules.validity_rule, reason="UNSUPPORTED_TIME_IN_FORCE", field="order.time_in_force"
        )
    if time_in_force.rests_overnight and product is Product.INTRADAY:
        raise InvalidArgument(
            "INTRADAY orders end with the day: use DAY, IOC or FOK",
            reason="UNSUPPORTED_TIME_IN_FORCE",
            field="order.time_in_force",
        )
    if time_in_force is not TimeInForce.GTD:
        if draft.expire_date:
            raise InvalidArgument(
                "order.expire_date goes only with time_in_force GTD",
                reason="INVALID_EXPIRE_DATE",
                field=field,
            )
        return time_in_force, None
    if not draft.expire_date:
        raise InvalidArgument(
            "a GTD order needs order.expire_date", reason="INVALID_EXPIRE_DATE", field=field
        )
    try:
        expires = date.fromisoformat(draft.expire_date)
    except ValueError:
        raise InvalidArgument(
            "order.expire_date must be a date: YYYY-MM-DD", reason="INVALID_EXPIRE_DATE", field=field
        ) from None
    if today is not None and not today <= expires <= today + timedelta(days=MAX_GTD_DAYS):
        raise InvalidArgument(
            f"order.expire_date must be from {today} to {today + timedelta(days=MAX_GTD_DAYS)}",
            reason="INVALID_EXPIRE_DATE",
            field=field,
        )
    return time_in_force, expires


def new_order(draft: OrderDraft, instrument: Instrument, today: date | None = None) -> OrderSpec:
    """Validate a new order; apply the defaults (DAY, CNC). `today`, the market's date,
    bounds a GTD order's expire date (placement always gives it)."""
    if draft.side is None:
        raise InvalidArgument("order.side must be BUY or SELL", reason="MISSING_SIDE", field="order.side")
    if draft.type is None:
        raise InvalidArgument(
            "order.type must be MARKET, LIMIT, STOP or STOP_LIMIT", reason="MISSING_TYPE", field="order.type"
        )
    product = draft.product or Product.CNC
    quantity = _quantity(draft.quantity, instrument, "order.quantity")
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    rules = ORDER_TYPES[draft.type]
    needs_limit = rules.takes_limit_price
    needs_stop = rules.takes_stop_price
    if needs_limit:
        if not draft.limit_price:
            raise InvalidArgument(
                f"a {draft.type} order needs order.limit_price",
                reason="MISSING_LIMIT_PRICE",
                field="order.limit_price",
            )
        limit_price = _price(draft.limit_price, instrument, "order.limit_price")
    elif draft.limit_price:
        raise InvalidArgument(
            f"a {draft.type} order takes no order.limit_price",
            reason="UNEXPECTED_LIMIT_PRICE",
            field="order.limit_price",
        )
    if needs_stop:
        if not draft.stop_price:
            raise InvalidArgument(
                f"a {draft.type} order needs order.stop_price",
                reason="MISSING_STOP_PRICE",
                field="order.stop_price",
            )
        stop_price = _price(draft.stop_price, instrument, "order.stop_price")
    elif draft.stop_price:
        raise InvalidArgument(
            f"a {draft.type} order takes no order.stop_price",
            reason="UNEXPECTED_STOP_PRICE",
            field="order.stop_price",
        )
    time_in_force, expire_date = _validity(draft, rules, product, today)
    if limit_price is not None and stop_price is not None:
        _check_stop_limit(draft.side, limit_price, stop_price)
    exit_terms = exit_terms_of(draft, instrument, limit_price)
    trail = trail_of(draft, instrument)
    display = display_quantity_of(draft, rules, time_in_force, quantity, instrument)
    return OrderSpec(
        symbol=instrument.symbol,
        side=draft.side,
        type=draft.type,
        time_in_force=time_in_force,
        product=product,
        quantity=quantity,
        limit_price=limit_price,
        stop_price=stop_price,
        expire_date=expire_date,
        exit=exit_terms,
        trail=trail,
        display_quantity=display,
    )


def display_quantity_of(
    draft: OrderDraft,
    rules: OrderTypeRules,
    time_in_force: TimeInForce,
    quantity: int,
    instrument: Instrument,
) -> int:
    """An iceberg's display quantity, by its order type's rule: only a type that may show
    part, resting (not IOC or FOK) and not contingent; then checked like a new quantity."""
    if not draft.display_quantity:
        return 0
    field = "order.display_quantity"
    if (
        rules.min_display_percent is None
        or not time_in_force.rests
        or (draft.contingency or Contingency.NONE) is not Contingency.NONE
    ):
        raise InvalidArgument(
            "only a LIMIT order that can rest (DAY, GTC or GTD), and not a contingent one, "
            "can show less than its quantity",
            reason="DISPLAY_QUANTITY_NOT_ALLOWED",
            field=field,
        )
    return _display_fits(draft.display_quantity, quantity, rules.min_display_percent, instrument, field)


def _display_fits(display: int, quantity: int, min_percent: int, instrument: Instrument, field: str) -> int:
    """A display quantity in lots, at least `min_percent` of the quantity and below it."""
    if display < 0 or display % instrument.lot_size != 0:
        raise InvalidArgument(
            f"{field} must be a positive multiple of the lot size {instrument.lot_size}",
            reason="DISPLAY_QUANTITY_OUT_OF_RANGE",
            field=field,
        )
    if not quantity * min_percent <= display * 100 < quantity * 100:
        raise InvalidArgument(
            f"{field} must be at least {min_percent} % of the quantity {quantity} and less than it",
            reason="DISPLAY_QUANTITY_OUT_OF_RANGE",
            field=field,
        )
    return display


def trail_of(draft: OrderDraft, instrument: Instrument) -> Trail | None:
    """A trailing stop is a STOP order (its stop_price the first stop) with a trail of
    either a positive amount on the tick grid or a percentage in (0, 50]."""
    if not draft.trail_amount and not draft.trail_percent:
        return None
    if draft.type is not OrderType.STOP or (draft.contingency or Contingency.NONE) is not Contingency.NONE:
        raise InvalidArgument(
            "only a STOP order (not a contingent one) can trail",
            reason="TRAIL_NOT_ALLOWED",
            field="order.trailing_stop",
        )
    if draft.trail_amount and draft.trail_percent:
        raise InvalidArgument(
            "give the trail as an amount or a percent, not both",
            reason="TRAIL_AMBIGUOUS",
            field="order.trailing_stop.percent",
        )
    if draft.trail_amount:
        return Trail(amount=_price(draft.trail_amount, instrument, "order.trailing_stop.amount"))
    percent = parse_decimal(
        draft.trail_percent, field="order.trailing_stop.percent", max_places=2, positive=True
    )
    if percent > trailing.MAX_PERCENT:
        raise InvalidArgument(
            f"order.trailing_stop.percent must be at most {trailing.MAX_PERCENT}",
            reason="TRAIL_OUT_OF_RANGE",
            field="order.trailing_stop.percent",
        )
    return Trail(percent=percent)


def exit_terms_of(draft: OrderDraft, instrument: Instrument, limit_price: Decimal | None) -> ExitTerms:
    """A bracket is a BUY (MARKET or LIMIT) entry with a target above and a stop-loss
    below; an OCO is a SELL LIMIT (the target) with a stop-loss below it. Exits sell, so
    only long positions are bracketed."""
    contingency = draft.contingency or Contingency.NONE
    if contingency is Contingency.NONE:
        for given, field in (
            (draft.exit_target_price, "target_price"),
            (draft.exit_stop_price, "stop_loss_price"),
        ):
            if given:
                raise InvalidArgument(
                    f"order.contingent.{field} needs a contingent kind (BRACKET or OCO)",
                    reason="UNEXPECTED_EXIT_PRICE",
                    field=f"order.contingent.{field}",
                )
        return NO_EXIT
    if not draft.exit_stop_price:
        raise InvalidArgument(
            f"a {contingency} order needs order.contingent.stop_loss_price",
            reason="MISSING_EXIT_PRICE",
            field="order.contingent.stop_loss_price",
        )
    stop = _price(draft.exit_stop_price, instrument, "order.contingent.stop_loss_price")
    if contingency is Contingency.OCO:
        if draft.side is not Side.SELL or draft.type is not OrderType.LIMIT:
            raise InvalidArgument(
                "an OCO is a SELL LIMIT order (the target) with a stop-loss",
                reason="CONTINGENT_TERMS_INVALID",
                field="order.contingent.kind",
            )
        if draft.exit_target_price:
            raise InvalidArgument(
                "an OCO's target is its own limit_price; order.contingent.target_price is for brackets",
                reason="UNEXPECTED_EXIT_PRICE",
                field="order.contingent.target_price",
            )
        assert limit_price is not None
        target = limit_price
    else:
        if draft.side is not Side.BUY or draft.type not in (OrderType.MARKET, OrderType.LIMIT):
            raise InvalidArgument(
                "a bracket's entry is a BUY MARKET or BUY LIMIT order",
                reason="CONTINGENT_TERMS_INVALID",
                field="order.contingent.kind",
            )
        if not draft.exit_target_price:
            raise InvalidArgument(
                "a BRACKET order needs order.contingent.target_price",
                reason="MISSING_EXIT_PRICE",
                field="order.contingent.target_price",
            )
        target = _price(draft.exit_target_price, instrument, "order.contingent.target_price")
        if limit_price is not None and not stop < limit_price < target:
            raise InvalidArgument(
                "a bracket needs stop_loss_price < limit_price < target_price",
                reason="EXIT_PRICES_OUT_OF_ORDER",
                field="order.contingent.target_price",
            )
    if not stop < target:
        raise InvalidArgument(
            "the stop-loss must be below the target",
            reason="EXIT_PRICES_OUT_OF_ORDER",
            field="order.contingent.stop_loss_price",
        )
    return ExitTerms(
        contingency=contingency,
        target_price=target if contingency is Contingency.BRACKET else None,
        stop_price=stop,
    )


def modification(order: Order, draft: ModificationDraft, instrument: Instrument) -> Modification:
    """Validate a modification of `order`: the new total quantity must stay above what has
    filled, prices only where the order type has them, and something must change."""
    quantity = order.quantity
    if draft.quantity:
        quantity = _quantity(draft.quantity, instrument, "quantity")
        if quantity <= order.filled_quantity:
            raise InvalidArgument(
                f"quantity must exceed the {order.filled_quantity} shares already filled",
                reason="QUANTITY_BELOW_FILLED",
                field="quantity",
            )
    limit_price = order.limit_price
    if draft.limit_price:
        if not ORDER_TYPES[order.type].takes_limit_price:
            raise InvalidArgument(
                f"a {order.type} order has no limit price",
                reason="UNEXPECTED_LIMIT_PRICE",
                field="limit_price",
            )
        limit_price = _price(draft.limit_price, instrument, "limit_price")
    stop_price = order.stop_price
    if draft.stop_price:
        if not ORDER_TYPES[order.type].takes_stop_price:
            raise InvalidArgument(
                f"a {order.type} order has no stop price", reason="UNEXPECTED_STOP_PRICE", field="stop_price"
            )
        stop_price = _price(draft.stop_price, instrument, "stop_price")
    if limit_price is not None and stop_price is not None:
        _check_stop_limit(order.side, limit_price, stop_price)
    min_display = ORDER_TYPES[order.type].min_display_percent
    if order.display_quantity and min_display is not None and quantity != order.quantity:
        # The display quantity is kept: the new quantity must still leave it in range.
        _display_fits(order.display_quantity, quantity, min_display, instrument, "quantity")
    if (quantity, limit_price, stop_price) == (order.quantity, order.limit_price, order.stop_price):
        raise InvalidArgument(
            "the modification changes nothing: give a new quantity or price",
            reason="NO_CHANGE",
            field="quantity",
        )
    return Modification(quantity=quantity, limit_price=limit_price, stop_price=stop_price)


def _canonical_price(value: Decimal | None) -> str:
    return "" if value is None else str(value.quantize(_PAISA))


def fingerprint(spec: OrderSpec) -> str:
    """A digest of the request's terms: the same key with the same terms is a retry, the
    same key with other terms is a conflict. `100` and `100.00` are the same price."""
    canonical = "|".join(
        (
            spec.symbol,
            spec.side,
            spec.type,
            spec.time_in_force,
            spec.product,
            str(spec.quantity),
            _canonical_price(spec.limit_price),
            _canonical_price(spec.stop_price),
            # Only GTD orders add a part: earlier orders' digests stay as they were.
            *([spec.expire_date.isoformat()] if spec.expire_date else []),
        )
    )
    if spec.display_quantity:
        canonical += f"|display:{spec.display_quantity}"
    if spec.trail is not None:
        canonical += f"|trail:{_canonical_price(spec.trail.amount)}:{spec.trail.percent or ''}"
    if spec.exit.contingency is not Contingency.NONE:
        canonical += "|" + "|".join(
            (
                spec.exit.contingency,
                _canonical_price(spec.exit.target_price),
                _canonical_price(spec.exit.stop_price),
            )
        )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def action_fingerprint(kind: str, *parts: object) -> str:
    """Digest of a cancel or modification request, for its idempotency key."""
    canonical = "|".join([kind, *("" if p is None else str(p) for p in parts)])
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
