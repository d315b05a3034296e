"""Price alerts: what one waits for, and whether a quote meets it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class Condition(StrEnum):
    PRICE_ABOVE = "PRICE_ABOVE"
    PRICE_BELOW = "PRICE_BELOW"
    CHANGE_PERCENT_ABOVE = "CHANGE_PERCENT_ABOVE"
    CHANGE_PERCENT_BELOW = "CHANGE_PERCENT_BELOW"


class AlertState(StrEnum):
    ACTIVE = "ACTIVE"
    FIRED = "FIRED"


MAX_ALERTS_PER_USER = 100
MAX_NOTE = 200


@dataclass(frozen=True)
class Alert:
    alert_id: str
    user_id: str
    symbol: str
    condition: Condition
    threshold: Decimal
    note: str
    state: AlertState
    create_time: datetime
    fire_time: datetime | None = None
    fired_price: Decimal | None = None


def met(alert: Alert, last_price: Decimal | None, change_percent: Decimal | None) -> bool:
    """Whether a quote meets the alert's condition (at the threshold counts)."""
    if alert.condition is Condition.PRICE_ABOVE:
        return last_price is not None and last_price >= alert.threshold
    if alert.condition is Condition.PRICE_BELOW:
        return last_price is not None and last_price <= alert.threshold
    if change_percent is None:
        return False
    if alert.condition is Condition.CHANGE_PERCENT_ABOVE:
        return change_percent >= alert.threshold
    return change_percent <= alert.threshold
