"""I7 over a fake store: which close the orders' validity is checked against, and how the
store's findings become violations."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

from svc_orders.app.queries import OrderQueries, ValidityCheck
from svc_runtime.market_clock import IST, Calendar, MarketClock


class Store:
    def __init__(self) -> None:
        self.asked: list[tuple[datetime, date]] = []

    async def check_invariants(self) -> tuple[list[tuple[str, str, str]], int]:
        return [("I4", "u0", "older finding")], 3

    async def outlived_validity(self, closed_at: datetime, closed_day: date) -> list[tuple[str, str, str]]:
        self.asked.append((closed_at, closed_day))
        return [("u1", "ord_1", "ord_1 (DAY) is OPEN after the close of 2026-12-07")]


def fast_clock_at(moment: datetime) -> MarketClock:
    return MarketClock.fast_clock(48, moment, epoch=time.time())


def test_the_last_close_is_the_latest_one_past_the_grace() -> None:
    monday, tuesday = date(2026, 12, 7), date(2026, 12, 8)
    # Tuesday 15:31: Tuesday's close is a minute of market time (1/30 s) ago, inside the grace.
    check = ValidityCheck(
        fast_clock_at(datetime(2026, 12, 8, 15, 31, tzinfo=IST)), Calendar(), grace_seconds=1
    )
    closed = check.last_close()
    assert closed is not None and closed[1] == monday
    assert abs(closed[0].timestamp() - check.clock.wall_at(Calendar().close_of(monday))) < 1e-6
    # Wednesday noon: Tuesday's close is long past.
    check = ValidityCheck(
        fast_clock_at(datetime(2026, 12, 9, 12, 0, tzinfo=IST)), Calendar(), grace_seconds=1
    )
    assert check.last_close()[1] == tuesday  # type: ignore[index]
    # Monday morning after a weekend and a holiday-free Friday: Friday's close.
    check = ValidityCheck(fast_clock_at(datetime(2026, 12, 7, 9, 0, tzinfo=IST)), Calendar(), grace_seconds=1)
    assert check.last_close()[1] == date(2026, 12, 4)  # type: ignore[index]


async def test_orders_past_their_validity_are_violations_only_when_the_market_closes() -> None:
    store: Any = Store()
    assert await OrderQueries(store).check_invariants() == ([("I4", "u0", "older finding")], 3)
    assert store.asked == []
    check = ValidityCheck(fast_clock_at(datetime(2026, 12, 8, 10, 0, tzinfo=IST)), Calendar())
    violations, checked = await OrderQueries(store, validity=check).check_invariants()
    assert violations == [
        ("I4", "u0", "older finding"),
        ("I7", "u1", "ord_1 (DAY) is OPEN after the close of 2026-12-07"),
    ]
    assert checked == 3
    assert [day for _, day in store.asked] == [date(2026, 12, 7)]
    assert store.asked[0][0].tzinfo is UTC
