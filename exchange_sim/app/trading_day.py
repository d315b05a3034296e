"""Opens and closes the market, trips circuit breakers, and ends their halts.

Once a second of market time (at most once per wall second): in the pre-open new orders,
cancels and replaces are taken and held, and enter the book in arrival order at the open; at
the close every DAY order expires (reported with ExecType C), and GTD orders of that date
with it, while GTC orders stay; at the next open the last prices become the reference
closes. The index is
recomputed and a breached circuit-breaker level halts the whole market, which resumes by
itself when the level's halt ends (a halt an operator set is left to the operator).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal

from exchange_sim.app.metrics import CIRCUIT_LEVEL, HALTED
from exchange_sim.app.order_entry import OrderEntry
from exchange_sim.domain import matching as me
from exchange_sim.domain.trading_day import CircuitBreaker, TradingHours, index_change
from svc_runtime.market_clock import Phase

log = logging.getLogger(__name__)

COMPACT_EVERY_SECONDS = 60.0


class TradingDay:
    def __init__(
        self,
        engine: me.MatchingEngine,
        order_entry: OrderEntry,
        *,
        hours: TradingHours,
        breaker: CircuitBreaker,
        clock: Callable[[], datetime],
        notify: Callable[[], None] = lambda: None,
        on_phase: Callable[[Phase], None] = lambda phase: None,
        interval_seconds: float = 1.0,
    ) -> None:
        self.engine = engine
        self.order_entry = order_entry
        self.hours = hours
        self.breaker = breaker
        self.clock = clock
        self.notify = notify
        self.on_phase = on_phase
        self.interval_seconds = interval_seconds
        self.phase: Phase | None = None
        self.trading_date: date | None = None
        self.breaker_halt: str | None = None
        self.halt_ends_at: float | None = None  # unix seconds; None while none or for the day
        self.index: Decimal | None = None
        self.change: Decimal | None = None
        self._compacted = time.monotonic()

    def view(self) -> tuple[int, Decimal | None, Decimal | None, float | None]:
        return self.breaker.tripped, self.index, self.change, self.halt_ends_at

    def session_view(self) -> tuple[Phase | None, date | None, datetime | None]:
        return self.phase, self.trading_date, self.clock()

    def tick(self) -> None:
        now = self.clock()
        phase = self.hours.phase(now)
        should_be_open = phase is Phase.OPEN
        if phase is Phase.PRE_OPEN and self.engine.session_open:
            self._close()  # a day with no close seen: the pre-open of the next one follows it
        if should_be_open and (not self.engine.session_open or self.trading_date is None):
            self._open(now)
        elif not should_be_open and self.engine.session_open:
            self._close()
        if phase is not self.phase:
            self.phase = phase
            log.info("market phase", extra={"phase": str(phase)})
            self.on_phase(phase)
        if self.engine.session_open:
            self._watch_index(now)
        if time.monotonic() - self._compacted > COMPACT_EVERY_SECONDS:
            self.engine.compact()
            self._compacted = time.monotonic()

    def _open(self, now: datetime) -> None:
        today = self.hours.trading_date(now)
        if self.trading_date is not None and today != self.trading_date:
            self.engine.new_day()
            self.breaker.new_day()
            CIRCUIT_LEVEL.set(0)
            if self.breaker_halt is not None and self.engine.market_halt == self.breaker_halt:
                self.engine.resume(None)
            self.breaker_halt = None
            self.halt_ends_at = None
        self.trading_date = today
        self.engine.session_open = True
        log.info("market open", extra={"trading_date": today.isoformat()})
        self.notify()

    def _close(self) -> None:
        self.engine.session_open = False
        events = self.engine.expire_day_orders(self.trading_date)
        self.order_entry.publish(events)
        log.info("market closed", extra={"expired": len(events)})
        self.notify()

    def _watch_index(self, now: datetime) -> None:
        measured = index_change(self.engine.books.values())
        if measured is None:
            return
        self.index, self.change = measured
        if (
            self.breaker_halt is not None
            and self.halt_ends_at is not None
            and now.timestamp() >= self.halt_ends_at
            and self.engine.market_halt == self.breaker_halt
        ):
            self.engine.resume(None)
            HALTED.set(0)
            log.warning(
                "circuit-breaker halt over: trading resumes", extra={"breaker_level": self.breaker.tripped}
            )
            self.breaker_halt = None
            self.halt_ends_at = None
            self.notify()
        level = self.breaker.check(self.change)
        if level is None:
            return
        self.breaker_halt = (
            f"market-wide circuit breaker level {level.level}: index {self.change}% from its previous close"
        )
        self.halt_ends_at = None if level.halt_seconds is None else now.timestamp() + level.halt_seconds
        self.engine.halt(None, self.breaker_halt)
        HALTED.set(1)
        CIRCUIT_LEVEL.set(level.level)
        log.warning(
            "circuit breaker tripped",
            extra={
                "breaker_level": level.level,
                "index": str(self.index),
                "change_percent": str(self.change),
            },
        )
        self.notify()

    async def run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("trading-day check failed")
            await asyncio.sleep(self.interval_seconds)
