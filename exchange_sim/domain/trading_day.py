"""The trading day: market hours, the market index and its circuit breakers.

Market-wide circuit breakers follow the NSE scheme: when the index falls 10 %,
15 % or 20 % below its previous close, trading halts for 45 minutes, 1 h 45 min, or the rest
of the day. Each level trips at most once a day. Durations are configurable so that a demo
or a test need not wait 45 minutes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation

from exchange_sim.domain.matching import Book
from svc_runtime.market_clock import Calendar, Phase

IST = timezone(timedelta(hours=5, minutes=30), "IST")
INDEX_BASE = Decimal(10000)
HUNDRED = Decimal(100)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class TradingHours:
    """`always` (demo mode), daily open and close times in India Standard Time, or
    `calendar`: the market calendar's trading days with their pre-open, open and close."""

    always_open: bool = True
    open: time = time(9, 15)
    close: time = time(15, 30)
    calendar: Calendar | None = None

    @classmethod
    def parse(cls, text: str, calendar: Calendar | None = None) -> TradingHours:
        text = text.strip().lower()
        if text in ("", "always", "24x7"):
            return cls()
        if text == "calendar":
            calendar = calendar or Calendar()
            return cls(always_open=False, open=calendar.open, close=calendar.close, calendar=calendar)
        try:
            start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ConfigError(f"trading hours {text!r}: use 'always' or 'HH:MM-HH:MM' (IST)") from None
        if start >= end:
            raise ConfigError(f"trading hours {text!r}: the open must come before the close")
        return cls(always_open=False, open=start, close=end)

    def phase(self, now: datetime) -> Phase:
        if self.always_open:
            return Phase.OPEN
        if self.calendar is not None:
            return self.calendar.phase(now)
        local = now.astimezone(IST).time()
        return Phase.OPEN if self.open <= local < self.close else Phase.CLOSED

    def is_open(self, now: datetime) -> bool:
        return self.phase(now) is Phase.OPEN

    @staticmethod
    def trading_date(now: datetime) -> date:
        return now.astimezone(IST).date()


@dataclass(frozen=True)
class BreakerLevel:
    level: int
    decline_percent: Decimal
    halt_seconds: int | None  # None: halted for the rest of the day


DEFAULT_BREAKERS = "10:2700,15:6300,20:day"


def parse_breakers(text: str) -> tuple[BreakerLevel, ...]:
    """`percent:seconds` pairs, e.g. `10:2700,15:6300,20:day`; `off` for none."""
    text = text.strip().lower()
    if text in ("", "off", "none"):
        return ()
    levels = []
    try:
        for number, part in enumerate(text.split(","), start=1):
            percent, _, duration = part.strip().partition(":")
            seconds = None if duration.strip() == "day" else int(duration)
            if seconds is not None and seconds <= 0:
                raise ValueError
            levels.append(BreakerLevel(number, Decimal(percent), seconds))
    except (ValueError, InvalidOperation):
        raise ConfigError(
            f"circuit breakers {text!r}: use percent:seconds pairs, e.g. {DEFAULT_BREAKERS}"
        ) from None
    declines = [level.decline_percent for level in levels]
    if declines != sorted(declines) or any(d <= 0 for d in declines):
        raise ConfigError(f"circuit breakers {text!r}: declines must be positive and increasing")
    return tuple(levels)


def index_change(books: Iterable[Book]) -> tuple[Decimal, Decimal] | None:
    """The market index (previous close = 10000) and its change in percent, from the index
    constituents' last prices (their reference close until they trade); None without any."""
    weighted = Decimal(0)
    weights = Decimal(0)
    for book in books:
        weight = book.instrument.index_weight
        if weight <= 0:
            continue
        last = book.last or book.reference_close
        weighted += weight * Decimal(last) / Decimal(book.reference_close)
        weights += weight
    if not weights:
        return None
    ratio = weighted / weights
    value = (INDEX_BASE * ratio).quantize(Decimal("0.01"))
    change = ((ratio - 1) * HUNDRED).quantize(Decimal("0.01"))
    return value, change


class CircuitBreaker:
    def __init__(self, levels: tuple[BreakerLevel, ...]) -> None:
        self.levels = levels
        self.tripped = 0  # the highest level hit today

    def check(self, change_percent: Decimal) -> BreakerLevel | None:
        """The level the index has newly fallen through, if any (the highest one)."""
        hit = None
        for level in self.levels:
            if level.level > self.tripped and -change_percent >= level.decline_percent:
                hit = level
        if hit is not None:
            self.tripped = hit.level
        return hit

    def new_day(self) -> None:
        self.tripped = 0
