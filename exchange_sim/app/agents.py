"""Runs the liquidity agents on the event loop without starving FIX handling.

Each wake-up steps only a slice of the symbols (every symbol is stepped once per
`symbol_period` on average), so one round costs a bounded, small amount of time and the
loop gets back to counterparties' orders quickly. Agents trade through the same matching
engine as everyone else: when a market maker's new quote crosses a broker's resting order,
or a noise trader hits it, the broker gets its fill reports.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

from exchange_sim.app.order_entry import OrderEntry
from exchange_sim.domain import matching as me
from exchange_sim.domain.liquidity import ACTIVITY_LEVELS, Activity, LiquidityConfig, SymbolAgent

log = logging.getLogger(__name__)

MARKET_MAKER = "MM/"
NOISE_TRADER = "NOISE/"


class LiquidityAgents:
    def __init__(
        self,
        engine: me.MatchingEngine,
        order_entry: OrderEntry,
        *,
        config: LiquidityConfig,
        seed: int | str,
        interval_seconds: float = 0.1,
        symbol_period_seconds: float = 1.0,
        notify: Callable[[], None] = lambda: None,
        activity: Activity = ACTIVITY_LEVELS["normal"],
    ) -> None:
        self.engine = engine
        self.order_entry = order_entry
        self.config = config
        self.interval_seconds = interval_seconds
        self.symbol_period_seconds = symbol_period_seconds
        self.notify = notify
        self.paused = False
        liquid = [s for s, book in engine.books.items() if book.instrument.index_weight > 0]
        busy = config
        if activity.liquid_trades_per_minute is not None:
            busy = replace(config, trades_per_minute=activity.liquid_trades_per_minute)
        self.agents = {
            symbol: SymbolAgent(
                symbol,
                reference_ticks=book.reference_close,
                band=(book.band_low, book.band_high),
                lot=book.lot,
                seed=seed,
                config=busy if symbol in liquid else config,
            )
            for symbol, book in engine.books.items()
        }
        self.quotes: dict[str, list[int]] = {symbol: [] for symbol in self.agents}
        self._quoted_at: dict[str, int] = {}
        self._order = self._rotation(liquid, activity.liquid_steps_per_period)
        self._stepped_at: dict[str, float] = {}
        self._cursor = 0

    def _rotation(self, liquid: list[str], steps: int) -> list[str]:
        """The order symbols are stepped in: each once, liquid ones `steps` times, evenly spread."""
        if steps <= 1 or not liquid:
            return list(self.agents)
        others = [s for s in self.agents if s not in set(liquid)]
        rotation: list[str] = []
        for part in range(steps):
            rotation += others[part::steps] + liquid
        return rotation

    def pause(self, paused: bool) -> None:
        """While paused, market makers pull their quotes and noise traders stay away."""
        if paused and not self.paused:
            for symbol in self.agents:
                self._pull(symbol)
        self.paused = paused
        self.notify()

    def shock(self, percent: Decimal) -> None:
        for symbol, agent in self.agents.items():
            agent.shock(float(percent))
            if not self.paused:
                self._requote(symbol)
        self.notify()
        log.warning("market shock", extra={"percent": str(percent)})

    def step_all(self, seconds: float) -> None:
        """One step of every symbol (tests and warm-up)."""
        for symbol in self.agents:
            self.step(symbol, seconds)

    def step(self, symbol: str, seconds: float) -> None:
        agent = self.agents[symbol]
        fair = agent.step(seconds)
        if self.paused or not self.engine.session_open or self.engine.halt_reason(symbol) is not None:
            return
        if fair != self._quoted_at.get(symbol) or not self._quotes_intact(symbol):
            self._requote(symbol)
        book = self.engine.books[symbol]
        trade = agent.noise_trade(seconds, book.last)
        if trade is not None:
            events = self.engine.submit(
                NOISE_TRADER, symbol, trade.side, trade.quantity, None, order_type=me.MARKET, tif=me.IOC
            )
            self.order_entry.publish(events)

    def _quotes_intact(self, symbol: str) -> bool:
        live = self.engine.live
        for order_id in self.quotes[symbol]:
            order = live.get(order_id)
            if order is None or order.cum:
                return False
        return True

    def _pull(self, symbol: str) -> None:
        for order_id in self.quotes[symbol]:
            if order_id in self.engine.live:
                self.order_entry.publish(self.engine.cancel(order_id))
        self.quotes[symbol] = []
        self._quoted_at.pop(symbol, None)

    def _requote(self, symbol: str) -> None:
        self._pull(symbol)
        agent = self.agents[symbol]
        placed: list[int] = []
        for quote in agent.quotes():
            events = self.engine.submit(MARKET_MAKER, symbol, quote.side, quote.quantity, quote.price)
            first = events[0]
            if (
                isinstance(first, me.Execution)
                and first.kind == me.ACCEPTED
                and first.order.order_id in self.engine.live
            ):
                placed.append(first.order.order_id)
            if len(events) > 1:
                self.order_entry.publish(events)
        self.quotes[symbol] = placed
        self._quoted_at[symbol] = agent.fair

    async def run(self) -> None:
        per_round = max(1, math.ceil(len(self._order) * self.interval_seconds / self.symbol_period_seconds))
        uneven = len(self._order) != len(self.agents)
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.interval_seconds)
            now = time.monotonic()
            # A late wake-up (a busy loop) steps the same symbols by more time, not more often.
            elapsed = min(5.0, (now - last) * len(self._order) / per_round)
            last = now
            try:
                for _ in range(min(per_round, len(self._order))):
                    symbol = self._order[self._cursor]
                    self._cursor = (self._cursor + 1) % len(self._order)
                    if uneven:  # symbols come round at different rates: each by its own time
                        elapsed = min(5.0, now - self._stepped_at.get(symbol, now - elapsed))
                        self._stepped_at[symbol] = now
                    self.step(symbol, elapsed)
            except Exception:
                log.exception("liquidity round failed")
            self.notify()
