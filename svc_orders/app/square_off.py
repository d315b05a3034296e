"""Intraday square-off: before the close the broker cancels every working INTRADAY order and
closes every INTRADAY position of the day with a market order of its own.

Each trading day at the square-off time (market time, BROKERMESH_SQUARE_OFF_AT): the working
INTRADAY orders are cancelled; then, for each user and symbol whose INTRADAY fills of the day
do not net to zero and that has no INTRADAY order still working, a MARKET order of the
opposite side is placed for the difference. Passes repeat, a few wall seconds apart, until
nothing is left open or the close comes. A square-off order's key names the day, the symbol
and the pass, so a pass repeated after a restart gets the order it placed before instead of
a second one; and a symbol with an order still working is left for the next pass, so an
unfilled square-off order is never doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as wall
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from svc_orders.app import metrics
from svc_orders.app.ports import IntradayBook, IntradayExposure
from svc_orders.domain.model import Order, OrderType, Product, Side, TimeInForce
from svc_orders.domain.validation import OrderDraft
from svc_runtime import aio, context
from svc_runtime.errors import ServiceError
from svc_runtime.market_clock import IST, Calendar, MarketClock

log = logging.getLogger(__name__)

ACTOR = "system:square-off"


def square_off_time(setting: str, market: MarketClock, calendar: Calendar) -> time | None:
    """`HH:MM` (IST) or `off`. Unset: off in real time; under a fast clock 15 minutes before
    the close, or earlier on a clock so fast that those are under 5 wall seconds — time for
    the cancels and the market orders to reach the venue."""
    text = setting.strip().lower() or ("default" if market.fast else "off")
    if text == "off":
        return None
    if text != "default":
        try:
            return time.fromisoformat(text)
        except ValueError:
            raise ValueError(f"use HH:MM (IST) or off, not {text!r}") from None
    lead = timedelta(seconds=max(15 * 60, 5 * market.speed))
    close = datetime.combine(date(2000, 1, 3), calendar.close)  # any day: times only
    return max(close - lead, datetime.combine(close.date(), calendar.open)).time()


class OrderDesk(Protocol):
    """What the square-off does with orders: the OMS's own place and cancel (OrderEntry)."""

    async def place(self, user_id: str, draft: OrderDraft, request_id: str) -> Order: ...

    async def cancel(self, user_id: str, order_id: str, request_id: str) -> Order: ...


@dataclass
class SquareOff:
    entry: OrderDesk
    book: IntradayBook
    clock: MarketClock
    calendar: Calendar
    at: time
    passes: int = 5
    pause_seconds: float = 0.5

    def next_run(self, now: datetime) -> tuple[date, datetime]:
        """The trading day whose square-off comes next (today's while its close has not
        come: a stack started between the two still squares off), and its moment."""
        day = now.astimezone(IST).date()
        if not self.calendar.is_trading_day(day) or now >= self.calendar.close_of(day):
            day = self.calendar.next_trading_day(day)
        return day, max(now, self.calendar.at(day, self.at))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            day, moment = self.next_run(self.clock.now())
            wait = self.clock.wall_at(moment) - wall.time()
            with contextlib.suppress(TimeoutError):
                await aio.within(stop.wait(), max(wait, 0.0))
            if stop.is_set():
                return
            try:
                await self.square_off(day)
            except Exception:  # the positions stay open: say so loudly; an operator can act
                log.exception("intraday square-off failed", extra={"trading_day": day.isoformat()})
                metrics.SQUARE_OFF_FAILURES.inc()
            # Past this day's close before looking for the next one.
            rest = self.clock.wall_at(self.calendar.close_of(day)) - wall.time()
            with contextlib.suppress(TimeoutError):
                await aio.within(stop.wait(), max(rest, 0.0))

    def _since(self, day: date) -> datetime:
        """Wall time of the previous trading day's close: the day's orders come after it."""
        previous = day
        while True:
            previous = date.fromordinal(previous.toordinal() - 1)
            if self.calendar.is_trading_day(previous):
                break
        return datetime.fromtimestamp(self.clock.wall_at(self.calendar.close_of(previous)), UTC)

    async def square_off(self, day: date) -> int:
        """Returns how many square-off orders were placed."""
        since = self._since(day)
        close = self.clock.wall_at(self.calendar.close_of(day))
        placed = 0
        with context.bind(actor=ACTOR):
            exposure = await self.book.intraday_exposure(since)
            await self._cancel_working(day, exposure)
            for number in range(1, self.passes + 1):
                await asyncio.sleep(self.pause_seconds)
                exposure = await self.book.intraday_exposure(since)
                open_positions = {k: n for k, n in exposure.net.items() if n}
                if not open_positions or wall.time() >= close:
                    break
                busy = {(user, symbol) for user, _, symbol in exposure.working}
                for (user, symbol), net in sorted(open_positions.items()):
                    if (user, symbol) not in busy:
                        placed += await self._close_position(day, number, user, symbol, net)
        left = {k: n for k, n in exposure.net.items() if n}
        log.info(
            "intraday square-off",
            extra={"trading_day": day.isoformat(), "orders_placed": placed, "positions_left": len(left)},
        )
        if left:
            log.error("intraday positions left open at the square-off", extra={"positions": sorted(left)})
            metrics.SQUARE_OFF_FAILURES.inc(len(left))
        return placed

    async def _cancel_working(self, day: date, exposure: IntradayExposure) -> None:
        for user, order_id, _ in exposure.working:
            try:
                await self.entry.cancel(user, order_id, f"sqoff-{day.isoformat()}-cancel")
            except ServiceError as error:  # filled or cancelled meanwhile: nothing to do
                log.info("square-off cancel refused", extra={"order_id": order_id, "reason": error.reason})

    async def _close_position(self, day: date, number: int, user: str, symbol: str, net: int) -> int:
        draft = OrderDraft(
            symbol=symbol,
            side=Side.SELL if net > 0 else Side.BUY,
            type=OrderType.MARKET,
            time_in_force=TimeInForce.DAY,
            product=Product.INTRADAY,
            quantity=abs(net),
        )
        key = f"sqoff-{day.isoformat()}-{symbol}-{number}"
        try:
            order = await self.entry.place(user, draft, key)
        except ServiceError as error:
            log.error(
                "square-off order refused",
                extra={"user_id": user, "symbol": symbol, "quantity": net, "reason": error.reason},
            )
            metrics.SQUARE_OFF_FAILURES.inc()
            return 0
        metrics.SQUARE_OFF_ORDERS.inc()
        log.info(
            "square-off order placed",
            extra={"user_id": user, "symbol": symbol, "quantity": net, "order_id": order.order_id},
        )
        return 1
