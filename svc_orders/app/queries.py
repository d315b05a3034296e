"""Reads: orders, trades, the audit trail, stream replays and the invariant check."""

from __future__ import annotations

import time as wall
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from svc_orders.app.ports import EventPosition, EventRecord
from svc_orders.domain.model import Fill, Order, Status
from svc_runtime import pagination
from svc_runtime.errors import InvalidArgument, NotFound
from svc_runtime.market_clock import IST, Calendar, MarketClock


class ReadStore(Protocol):
    async def get(self, user_id: str | None, order_id: str) -> Order | None: ...

    async def list_orders(
        self,
        user_id: str | None,
        statuses: Sequence[Status],
        page_size: int,
        page_token: str,
        *,
        tag: str = "",
    ) -> tuple[list[Order], str]: ...

    async def list_trades(
        self, user_id: str | None, order_id: str, page_size: int, page_token: str, *, tag: str = ""
    ) -> tuple[list[tuple[Fill, Order]], str]: ...

    async def list_audit(
        self, user_id: str | None, order_id: str | None, page_size: int, page_token: str
    ) -> tuple[list[dict[str, Any]], str]: ...

    async def event_position(self, user_id: str, event_id: str) -> EventPosition | None: ...

    async def events_committed_late(self, user_id: str, after: EventPosition) -> list[EventRecord]: ...

    async def events_after(
        self, user_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, EventRecord]]: ...

    async def check_invariants(self) -> tuple[list[tuple[str, str, str]], int]: ...

    async def outlived_validity(self, closed_at: datetime, closed_day: date) -> list[tuple[str, str, str]]:
        """(user, order id, what is wrong) of orders placed before the close at `closed_at`
        (of the trading day `closed_day`) that still work though their validity ended there
        (DAY, or GTD of that date or earlier), and of GTC orders that expired."""
        ...


@dataclass(frozen=True)
class ValidityCheck:
    """When the market has sessions: which close the orders' validity is checked against —
    the last one at least `grace_seconds` (wall) ago, so expiries still on their way from the
    venue are not taken for violations."""

    clock: MarketClock
    calendar: Calendar
    grace_seconds: float = 10.0

    def last_close(self) -> tuple[datetime, date] | None:
        now = self.clock.at_wall(wall.time() - self.grace_seconds).astimezone(IST)
        day = now.date()
        for _ in range(15):  # the calendar never shuts the market for two weeks
            if self.calendar.is_trading_day(day) and self.calendar.close_of(day) <= now:
                return datetime.fromtimestamp(self.clock.wall_at(self.calendar.close_of(day)), UTC), day
            day -= timedelta(days=1)
        return None


@dataclass
class OrderQueries:
    store: ReadStore
    replay_page: int = 500
    validity: ValidityCheck | None = None

    async def get(self, user_id: str, order_id: str) -> Order:
        order = await self.store.get(user_id, order_id)
        if order is None:
            raise NotFound(f"order {order_id} not found", reason="ORDER_NOT_FOUND")
        return order

    async def list_orders(
        self, user_id: str | None, statuses: Sequence[Status], size: int, token: str, *, tag: str = ""
    ) -> tuple[list[Order], str]:
        return await self.store.list_orders(
            user_id, statuses, pagination.page_size(size, default=50, maximum=500), token, tag=tag
        )

    async def list_trades(
        self, user_id: str | None, order_id: str, size: int, token: str, *, tag: str = ""
    ) -> tuple[list[tuple[Fill, Order]], str]:
        if order_id and user_id is not None and await self.store.get(user_id, order_id) is None:
            raise NotFound(f"order {order_id} not found", reason="ORDER_NOT_FOUND")
        return await self.store.list_trades(
            user_id, order_id, pagination.page_size(size, default=50, maximum=500), token, tag=tag
        )

    async def list_audit(
        self, user_id: str | None, order_id: str | None, size: int, token: str
    ) -> tuple[list[dict[str, Any]], str]:
        if order_id is not None and await self.store.get(user_id, order_id) is None:
            raise NotFound(f"order {order_id} not found", reason="ORDER_NOT_FOUND")
        return await self.store.list_audit(
            user_id, order_id, pagination.page_size(size, default=100, maximum=1000), token
        )

    async def replay(self, user_id: str, after_event_id: str) -> AsyncIterator[EventRecord]:
        """Every event of the user after `after_event_id`: first those numbered before it that
        may have committed after it (a client may have seen some of them already; event ids
        tell), then those numbered after it, oldest first."""
        position = await self.store.event_position(user_id, after_event_id)
        if position is None:
            raise InvalidArgument(
                "after_event_id is not an event of this user (or has expired)",
                reason="UNKNOWN_EVENT",
                field="after_event_id",
            )
        for record in await self.store.events_committed_late(user_id, position):
            yield record
        seq = position.seq
        while True:
            page = await self.store.events_after(user_id, seq, self.replay_page)
            for _, record in page:
                yield record
            if len(page) < self.replay_page:
                return
            seq = page[-1][0]

    async def check_invariants(self) -> tuple[list[tuple[str, str, str]], int]:
        violations, checked = await self.store.check_invariants()
        close = self.validity.last_close() if self.validity is not None else None
        if close is not None:
            violations += [("I7", user, what) for user, _, what in await self.store.outlived_validity(*close)]
        return violations, checked
