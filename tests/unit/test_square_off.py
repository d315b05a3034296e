"""The INTRADAY square-off over fakes: what it cancels, what it places (once), and when."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from types import SimpleNamespace

from svc_orders.app.ports import IntradayExposure
from svc_orders.app.square_off import ACTOR, SquareOff, square_off_time
from svc_orders.domain.model import Order, Side
from svc_orders.domain.validation import OrderDraft
from svc_runtime import context
from svc_runtime.errors import FailedPrecondition
from svc_runtime.market_clock import IST, Calendar, MarketClock

FUTURE_MONDAY = date(2030, 1, 7)  # its close is ahead of any test run: the passes may go on


@dataclass
class Book:
    working: list[tuple[str, str, str]] = field(default_factory=list)
    net: dict[tuple[str, str], int] = field(default_factory=dict)
    reads: int = 0

    async def intraday_exposure(self, since: datetime) -> IntradayExposure:
        self.reads += 1
        return IntradayExposure(list(self.working), dict(self.net))


@dataclass
class Desk:
    book: Book
    placed: list[tuple[str, str, Side, int, str, str]] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def place(self, user_id: str, draft: OrderDraft, request_id: str) -> Order:
        if draft.symbol in self.refuse:
            raise FailedPrecondition("halted", reason="SYMBOL_HALTED")
        assert draft.side is not None and draft.product is not None
        self.placed.append(
            (user_id, draft.symbol, draft.side, draft.quantity, request_id, context.current().actor)
        )
        # The market order fills at once: the position is flat at the next read.
        self.book.net[(user_id, draft.symbol)] = 0
        return SimpleNamespace(order_id=f"ord_{request_id}")  # type: ignore[return-value]

    async def cancel(self, user_id: str, order_id: str, request_id: str) -> Order:
        self.cancelled.append((user_id, order_id))
        self.book.working = [w for w in self.book.working if w[1] != order_id]
        return SimpleNamespace(order_id=order_id)  # type: ignore[return-value]


def square_off(book: Book, desk: Desk) -> SquareOff:
    return SquareOff(desk, book, MarketClock(), Calendar(), time(15, 15), passes=3, pause_seconds=0)


async def test_it_cancels_working_orders_and_closes_each_open_position_with_one_market_order() -> None:
    book = Book(
        working=[("u1", "ord_1", "INFY")],
        net={("u1", "INFY"): 5, ("u2", "TCS"): -3, ("u3", "SBIN"): 0},
    )
    desk = Desk(book)
    assert await square_off(book, desk).square_off(FUTURE_MONDAY) == 2
    assert desk.cancelled == [("u1", "ord_1")]
    assert desk.placed == [
        ("u1", "INFY", Side.SELL, 5, "sqoff-2030-01-07-INFY-1", ACTOR),
        ("u2", "TCS", Side.BUY, 3, "sqoff-2030-01-07-TCS-1", ACTOR),
    ]


async def test_a_symbol_with_an_order_still_working_waits_for_the_next_pass() -> None:
    book = Book(net={("u1", "INFY"): 5})
    desk = Desk(book)

    async def cancel_refused(user_id: str, order_id: str, request_id: str) -> Order:
        raise FailedPrecondition("already pending", reason="ORDER_NOT_CANCELLABLE")

    desk.cancel = cancel_refused  # type: ignore[method-assign]
    book.working = [("u1", "ord_9", "INFY")]  # e.g. an earlier square-off order, not yet filled
    job = square_off(book, desk)
    assert await job.square_off(FUTURE_MONDAY) == 0
    assert desk.placed == []
    book.working = []
    assert await job.square_off(FUTURE_MONDAY) == 1
    assert [p[4] for p in desk.placed] == ["sqoff-2030-01-07-INFY-1"]


async def test_a_refused_square_off_order_is_counted_not_raised() -> None:
    book = Book(net={("u1", "HALTED"): 2})
    desk = Desk(book, refuse={"HALTED"})
    assert await square_off(book, desk).square_off(FUTURE_MONDAY) == 0
    assert book.reads == 4  # one before the cancels, then every pass tried again


def test_the_next_square_off_is_todays_until_the_close_then_the_next_trading_days() -> None:
    job = square_off(Book(), Desk(Book()))
    friday = date(2026, 12, 11)
    morning = datetime.combine(friday, time(10), tzinfo=IST)
    assert job.next_run(morning) == (friday, datetime.combine(friday, time(15, 15), tzinfo=IST))
    late = datetime.combine(friday, time(15, 20), tzinfo=IST)  # started after the square-off time
    assert job.next_run(late) == (friday, late)
    evening = datetime.combine(friday, time(16), tzinfo=IST).astimezone(UTC)
    monday = date(2026, 12, 14)
    assert job.next_run(evening) == (monday, datetime.combine(monday, time(15, 15), tzinfo=IST))


def test_the_default_square_off_leaves_the_orders_time_to_reach_the_venue() -> None:
    start = datetime.combine(FUTURE_MONDAY, time(9), tzinfo=IST)
    calendar = Calendar()
    assert square_off_time("", MarketClock(), calendar) is None  # real time: only when asked for
    assert square_off_time("", MarketClock.fast_clock(600, start, 0), calendar) == time(15, 15)
    assert square_off_time("", MarketClock.fast_clock(60, start, 0), calendar) == time(13, 30)  # 5 s
    assert square_off_time("14:45", MarketClock(), calendar) == time(14, 45)
    assert square_off_time("off", MarketClock.fast_clock(60, start, 0), calendar) is None
