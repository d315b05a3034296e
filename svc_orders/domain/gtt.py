"""GTT (good-till-triggered) orders: a price trigger the broker keeps for up to a year, and
the order it places once the last traded price crosses it.

The direction is fixed when the GTT is created: a trigger above the market waits for the
price to rise to it, one below for the price to fall to it. A GTT fires once — the change
from ACTIVE to TRIGGERED is the only way to fire, and the order it places carries the
GTT's id as its idempotency key, so placing it again after a crash finds the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from svc_orders.domain.model import Contingency, OrderSpec, OrderType
from svc_runtime.errors import InvalidArgument

MAX_LIFETIME = timedelta(days=365)
# Types a GTT may place: the trigger is the stop, so stop types would trigger twice.
ORDER_TYPES = frozenset({OrderType.MARKET, OrderType.LIMIT})


class Direction(StrEnum):
    RISES_TO = "RISES_TO"
    FALLS_TO = "FALLS_TO"


class GttStatus(StrEnum):
    ACTIVE = "ACTIVE"
    TRIGGERED = "TRIGGERED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Gtt:
    gtt_id: str
    user_id: str
    client_request_id: str
    trigger_price: Decimal
    direction: Direction
    order: OrderSpec
    status: GttStatus
    create_time: datetime
    expire_time: datetime
    order_id: str = ""
    status_reason: str = ""
    trigger_time: datetime | None = None
    triggered_at_price: Decimal | None = None

    @property
    def placement_key(self) -> str:
        """The idempotency key of the order it places: one order, however often it is tried."""
        return f"gtt-{self.gtt_id}"


def direction_of(trigger: Decimal, reference: Decimal) -> Direction:
    if trigger == reference:
        raise InvalidArgument(
            "gtt.trigger_price equals the market price: place the order itself",
            reason="GTT_TRIGGER_AT_MARKET",
            field="gtt.trigger_price",
        )
    return Direction.RISES_TO if trigger > reference else Direction.FALLS_TO


def check_order(spec: OrderSpec) -> None:
    if spec.type not in ORDER_TYPES or spec.exit.contingency is not Contingency.NONE:
        raise InvalidArgument(
            "a GTT places a MARKET or LIMIT order, without contingent terms",
            reason="GTT_ORDER_TYPE",
            field="gtt.order.type",
        )
    if spec.display_quantity:
        # A GTT keeps the order's plain terms only: an iceberg would lose its display.
        raise InvalidArgument(
            "a GTT places its order in full view: no display quantity",
            reason="DISPLAY_QUANTITY_NOT_ALLOWED",
            field="gtt.order.display_quantity",
        )


def expiry(requested: datetime | None, now: datetime) -> datetime:
    """At most a year away (the default), and in the future."""
    latest = now + MAX_LIFETIME
    if requested is None:
        return latest
    if not now < requested <= latest:
        raise InvalidArgument(
            "gtt.expire_time must be in the future and at most a year away",
            reason="GTT_EXPIRY_INVALID",
            field="gtt.expire_time",
        )
    return requested


def crossed(gtt: Gtt, last_price: Decimal) -> bool:
    if gtt.direction is Direction.RISES_TO:
        return last_price >= gtt.trigger_price
    return last_price <= gtt.trigger_price
