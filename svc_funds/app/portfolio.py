"""Portfolio use cases: holdings and positions marked to the last price, and end of day."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as wall
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from svc_funds.app.ports import Clock, EndOfDayResult, PortfolioStore, QuoteSource
from svc_funds.domain import portfolio as pnl
from svc_funds.domain.model import EXCHANGE_TZ, trading_day
from svc_funds.domain.portfolio import HoldingFigures, HoldingRow, PositionFigures, PositionRow
from svc_runtime import aio
from svc_runtime.errors import NotFound
from svc_runtime.market_clock import Calendar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HoldingView:
    row: HoldingRow
    blocked_quantity: int
    last_price: Decimal | None
    figures: HoldingFigures
    t1_quantity: int = 0  # bought on a day whose settlement (T+1) has not come yet


@dataclass(frozen=True)
class PositionView:
    row: PositionRow
    last_price: Decimal | None
    figures: PositionFigures
    settlement_date: date


@dataclass(frozen=True)
class PortfolioView:
    user_id: str
    holdings: list[HoldingView]
    positions: list[PositionView]
    pnl_basis: str = pnl.PNL_BASIS
    daily_realized: list[tuple[date, Decimal]] = field(default_factory=list)


class PortfolioApp:
    def __init__(
        self,
        store: PortfolioStore,
        quotes: QuoteSource,
        user_exists: Callable[[str], Awaitable[bool]],
        clock: Clock,
        calendar: Calendar | None = None,
    ) -> None:
        self.store = store
        self.quotes = quotes
        self.user_exists = user_exists
        self.clock = clock  # the market's clock: what days end by
        self.calendar = calendar or Calendar()

    async def portfolio(self, user_id: str, tag: str = "") -> PortfolioView:
        if not await self.user_exists(user_id):
            raise NotFound(
                f"user {user_id} not found", reason="USER_NOT_FOUND", metadata={"user_id": user_id}
            )
        rows = await self.store.rows(user_id, tag)
        symbols = sorted({h.symbol for h in rows.holdings} | {p.symbol for p in rows.positions})
        prices = await self.quotes.last_prices(symbols) if symbols else {}
        unsettled = self._unsettled_buys(rows.recent_buys)
        holdings = [
            HoldingView(
                h,
                rows.blocked_shares.get(h.symbol, 0),
                prices.get(h.symbol),
                pnl.holding_figures(h, prices.get(h.symbol)),
                min(h.quantity, unsettled.get(h.symbol, 0)),
            )
            for h in rows.holdings
        ]
        positions = [
            PositionView(
                p,
                prices.get(p.symbol),
                pnl.position_figures(p, prices.get(p.symbol)),
                self.calendar.settlement_date(p.trading_day),
            )
            for p in rows.positions
        ]
        return PortfolioView(user_id, holdings, positions, daily_realized=rows.daily_realized)

    def _unsettled_buys(self, recent: list[tuple[date, str, int]]) -> dict[str, int]:
        """Shares bought net per symbol on closed days that settle after today."""
        today = trading_day(self.clock())
        bought: dict[str, int] = {}
        for day, symbol, net in recent:
            if self.calendar.settlement_date(day) > today:
                bought[symbol] = bought.get(symbol, 0) + net
        return {symbol: n for symbol, n in bought.items() if n > 0}

    async def end_of_day(self, day: date | None) -> tuple[date, EndOfDayResult]:
        day = day or trading_day(self.clock())
        result = await self.store.run_end_of_day(day, pnl.settle_day)
        for anomaly in result.anomalies:
            log.error("end of day found an anomaly", extra={"detail": anomaly})
        log.info(
            "end of day",
            extra={
                "trading_day": day.isoformat(),
                "already_closed": result.already_closed,
                "positions_settled": result.positions_settled,
            },
        )
        return day, result


def next_run(now: datetime, at: time) -> datetime:
    """The next moment, exchange time, at which the daily end of day runs."""
    local = now.astimezone(EXCHANGE_TZ)
    candidate = datetime.combine(local.date(), at, tzinfo=EXCHANGE_TZ)
    return candidate if candidate > local else candidate + timedelta(days=1)


async def end_of_day_daily(
    app: PortfolioApp,
    at: time,
    stop: asyncio.Event,
    wall_at: Callable[[datetime], float] = lambda moment: moment.timestamp(),
) -> None:
    """Close each trading day at `at` (exchange time, by the market's clock, which `wall_at`
    turns into unix time). Replicas may all run this: the day's row in `eod_runs` lets
    exactly one of them do the work."""
    while not stop.is_set():
        moment = next_run(app.clock(), at)
        wait = wall_at(moment) - wall.time()
        with contextlib.suppress(TimeoutError):
            await aio.within(stop.wait(), max(wait, 0.0))
        if stop.is_set():
            return
        try:
            await app.end_of_day(trading_day(moment))
        except Exception:  # the next day tries again; an operator can run it by hand
            log.exception("scheduled end of day failed")
