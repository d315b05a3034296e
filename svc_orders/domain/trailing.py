"""Trailing stops: where the stop of a trailing STOP order belongs, given the last price.

Stateless on purpose: the stop only ever moves towards the market, so the order's current
stop is its high-water mark, and a restart loses nothing."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from svc_orders.domain.model import Order, Side, Status

HUNDRED = Decimal(100)
MAX_PERCENT = Decimal(50)


def _on_tick(price: Decimal, tick: Decimal, rounding: str) -> Decimal:
    return (price / tick).to_integral_value(rounding=rounding) * tick


def new_stop(order: Order, last_price: Decimal, tick: Decimal) -> Decimal | None:
    """The stop the order should have now, or None to leave it: only a waiting stop moves
    (once triggered it is a working order at the exchange), and only towards the market."""
    trail = order.trail
    if trail is None or order.status is not Status.TRIGGER_PENDING or order.stop_price is None:
        return None
    sell = order.side is Side.SELL
    if trail.amount is not None:
        raw = last_price - trail.amount if sell else last_price + trail.amount
    else:
        assert trail.percent is not None
        factor = (HUNDRED - trail.percent) / HUNDRED if sell else (HUNDRED + trail.percent) / HUNDRED
        raw = last_price * factor
    # Round away from the market: never nearer than the trail.
    stop = _on_tick(raw, tick, ROUND_FLOOR if sell else ROUND_CEILING)
    if stop <= 0:
        return None
    moved = stop > order.stop_price if sell else stop < order.stop_price
    return stop if moved else None
