"""The market's clock and calendar, shared by the exchange simulator and the broker.

Real time by default. With `BROKERMESH_MARKET_CLOCK=fast` a whole market day (24 hours of
market time) passes in `BROKERMESH_MARKET_DAY_SECONDS` wall seconds (60 unless set): the
market time is `BROKERMESH_MARKET_CLOCK_START` (an ISO date-time, India Standard Time unless
it says otherwise) at the wall moment `BROKERMESH_MARKET_CLOCK_EPOCH` (unix seconds), and runs
faster from there. Every process given the same three values agrees on the market time, so
the exchange closes, the broker squares off and the day ends in the same order they would on
a real day. The stack sets the start and the epoch when only the mode is given.

The calendar is a small demo one: Monday to Friday, less the holidays listed (NSE's of 2026
unless `BROKERMESH_MARKET_HOLIDAYS` lists others), with a pre-open from 09:00, continuous
trading from 09:15 and the close at 15:30 (`BROKERMESH_MARKET_SESSIONS`).
"""

from __future__ import annotations

import json
import os
import time as wall
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from enum import StrEnum
from pathlib import Path

IST = timezone(timedelta(hours=5, minutes=30), "IST")
DAY_SECONDS = 86400.0

CLOCK = "BROKERMESH_MARKET_CLOCK"  # real | fast
FAST_DAY_SECONDS = "BROKERMESH_MARKET_DAY_SECONDS"
CLOCK_START = "BROKERMESH_MARKET_CLOCK_START"
CLOCK_EPOCH = "BROKERMESH_MARKET_CLOCK_EPOCH"
HOLIDAYS = "BROKERMESH_MARKET_HOLIDAYS"  # comma-separated ISO dates
SESSIONS = "BROKERMESH_MARKET_SESSIONS"  # HH:MM-HH:MM-HH:MM: pre-open, open, close

# NSE trading holidays of 2026 that fall on weekdays: the demo calendar.
DEMO_HOLIDAYS = frozenset(
    date.fromisoformat(d)
    for d in (
        "2026-01-26",
        "2026-03-03",
        "2026-03-26",
        "2026-03-31",
        "2026-04-03",
        "2026-04-14",
        "2026-05-01",
        "2026-05-28",
        "2026-06-26",
        "2026-09-14",
        "2026-10-02",
        "2026-10-20",
        "2026-11-10",
        "2026-11-24",
        "2026-12-25",
    )
)


class ClockError(ValueError):
    pass


class Phase(StrEnum):
    PRE_OPEN = "PRE_OPEN"  # orders are taken; they enter the book at the open
    OPEN = "OPEN"  # continuous trading
    CLOSED = "CLOSED"  # after the close, before the pre-open, and all day on holidays


@dataclass(frozen=True)
class Calendar:
    pre_open: time = time(9, 0)
    open: time = time(9, 15)
    close: time = time(15, 30)
    holidays: frozenset[date] = field(default=DEMO_HOLIDAYS)

    def is_trading_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def phase(self, moment: datetime) -> Phase:
        local = moment.astimezone(IST)
        if not self.is_trading_day(local.date()):
            return Phase.CLOSED
        now = local.time()
        if self.open <= now < self.close:
            return Phase.OPEN
        if self.pre_open <= now < self.open:
            return Phase.PRE_OPEN
        return Phase.CLOSED

    def next_trading_day(self, day: date) -> date:
        day += timedelta(days=1)
        while not self.is_trading_day(day):
            day += timedelta(days=1)
        return day

    def settlement_date(self, trade_date: date, days: int = 1) -> date:
        """T+`days`, counted in trading days."""
        for _ in range(days):
            trade_date = self.next_trading_day(trade_date)
        return trade_date

    def close_of(self, day: date) -> datetime:
        return datetime.combine(day, self.close, tzinfo=IST)

    def at(self, day: date, moment: time) -> datetime:
        return datetime.combine(day, moment, tzinfo=IST)

    @classmethod
    def from_env(cls) -> Calendar:
        sessions = os.environ.get(SESSIONS, "").strip()
        holidays_text = os.environ.get(HOLIDAYS)
        try:
            holidays = (
                DEMO_HOLIDAYS
                if holidays_text is None
                else frozenset(date.fromisoformat(d.strip()) for d in holidays_text.split(",") if d.strip())
            )
            if not sessions:
                return cls(holidays=holidays)
            pre_open, open_, close = (time.fromisoformat(p.strip()) for p in sessions.split("-"))
        except ValueError:
            raise ClockError(
                f"{SESSIONS}={sessions!r} / {HOLIDAYS}={holidays_text!r}: use HH:MM-HH:MM-HH:MM "
                "(pre-open, open, close, IST) and comma-separated ISO dates"
            ) from None
        if not pre_open <= open_ < close:
            raise ClockError(f"{SESSIONS}={sessions!r}: pre-open ≤ open < close")
        return cls(pre_open, open_, close, holidays)


@dataclass(frozen=True)
class MarketClock:
    """Market time from wall time: `start + (wall − epoch) × speed`. Speed 1 is real time."""

    speed: float = 1.0
    start: datetime | None = None  # None: real time
    epoch: float = 0.0

    @property
    def fast(self) -> bool:
        return self.start is not None

    def now(self) -> datetime:
        return self.at_wall(wall.time())

    def at_wall(self, unix_seconds: float) -> datetime:
        if self.start is None:
            return datetime.fromtimestamp(unix_seconds, UTC)
        return self.start + timedelta(seconds=(unix_seconds - self.epoch) * self.speed)

    def today(self) -> date:
        """The market's date now."""
        return self.now().astimezone(IST).date()

    def wall_seconds(self, market_seconds: float) -> float:
        """How long `market_seconds` of market time take on the wall."""
        return market_seconds / self.speed

    def wall_at(self, moment: datetime) -> float:
        """The unix time at which the market clock shows `moment`."""
        if self.start is None:
            return moment.timestamp()
        return self.epoch + (moment - self.start).total_seconds() / self.speed

    @classmethod
    def fast_clock(cls, day_seconds: float, start: datetime, epoch: float) -> MarketClock:
        if day_seconds <= 0:
            raise ClockError(f"{FAST_DAY_SECONDS} must be positive")
        if start.tzinfo is None:
            start = start.replace(tzinfo=IST)
        return cls(DAY_SECONDS / day_seconds, start, epoch)

    @classmethod
    def from_env(cls) -> MarketClock:
        mode = os.environ.get(CLOCK, "real").strip().lower() or "real"
        if mode == "real":
            return cls()
        if mode != "fast":
            raise ClockError(f"{CLOCK}={mode!r}: use real or fast")
        try:
            day_seconds = float(os.environ.get(FAST_DAY_SECONDS) or "60")
            start_text = os.environ.get(CLOCK_START)
            start = datetime.fromisoformat(start_text) if start_text else default_fast_start()
            epoch = float(os.environ.get(CLOCK_EPOCH) or wall.time())
        except ValueError as error:
            raise ClockError(f"fast market clock: {error}") from None
        return cls.fast_clock(day_seconds, start, epoch)


def today() -> date:
    """The market's date in real time."""
    return datetime.now(IST).date()


def default_fast_start() -> datetime:
    """Where a fast clock starts when nobody says: just before the pre-open of the next demo
    trading day, so a demo sees the whole day."""
    calendar = Calendar()
    today = datetime.now(IST).date()
    return calendar.at(calendar.next_trading_day(today), calendar.pre_open) - timedelta(minutes=30)


def fast_env(day_seconds: float, start: datetime, epoch: float | None = None) -> dict[str, str]:
    """The environment that gives every process the same fast clock."""
    return {
        CLOCK: "fast",
        FAST_DAY_SECONDS: str(day_seconds),
        CLOCK_START: start.isoformat(),
        CLOCK_EPOCH: repr(wall.time() if epoch is None else epoch),
    }


def pinned_env(environ: dict[str, str]) -> dict[str, str]:
    """A fast clock's start and epoch fixed once, so processes started (or restarted) later
    agree with the first; the environment unchanged for a real clock."""
    if environ.get(CLOCK, "real").strip().lower() != "fast":
        return {}
    pinned: dict[str, str] = {}
    if not environ.get(CLOCK_START):
        pinned[CLOCK_START] = default_fast_start().isoformat()
    if not environ.get(CLOCK_EPOCH):
        pinned[CLOCK_EPOCH] = repr(wall.time())
    return pinned


def resume_env(environ: dict[str, str], saved: Path) -> dict[str, str]:
    """For `up` on a data directory: a fast clock's start and epoch, pinned at the first start
    and kept in `saved`, so that a restart of the stack goes on at the market time it left
    (the wall time it was down passes on the market too). Nothing for a real clock."""
    pinned = pinned_env(environ)
    if environ.get(CLOCK, "real").strip().lower() != "fast":
        return {}
    if saved.exists() and not environ.get(CLOCK_START) and not environ.get(CLOCK_EPOCH):
        kept = json.loads(saved.read_text())
        if kept.get(FAST_DAY_SECONDS) == environ.get(FAST_DAY_SECONDS, ""):
            return {CLOCK_START: kept[CLOCK_START], CLOCK_EPOCH: kept[CLOCK_EPOCH]}
    values = {
        CLOCK_START: environ.get(CLOCK_START) or pinned[CLOCK_START],
        CLOCK_EPOCH: environ.get(CLOCK_EPOCH) or pinned[CLOCK_EPOCH],
    }
    saved.write_text(json.dumps({**values, FAST_DAY_SECONDS: environ.get(FAST_DAY_SECONDS, "")}))
    return values


Now = Callable[[], datetime]
