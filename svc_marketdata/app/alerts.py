"""Price alerts: kept in PostgreSQL, watched in memory, fired once.

The active alerts are held by symbol; every flush of changed quotes is checked against the
alerts of those symbols only. Firing is one conditional update (ACTIVE → FIRED) and one
numbered event in the same transaction, so an alert fires at most once whatever the
timing, and a restarted service (which loads the active alerts again) neither loses nor
repeats one. Fires are written one at a time, so events commit in the order of their
numbers and a stream resuming after event N never skips one numbered below a later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from prometheus_client import Counter

from svc_marketdata.domain import alerts as rules
from svc_marketdata.domain.alerts import Alert, AlertState, Condition
from svc_marketdata.domain.quotes import Quote
from svc_runtime import aio
from svc_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)

ALERTS_FIRED = Counter("marketdata_alerts_fired_total", "Price alerts fired (each once)")
ALERT_FIRE_FAILURES = Counter(
    "marketdata_alert_fire_failures_total",
    "Attempts to record a fired alert that failed (retried on the next price)",
)


@dataclass(frozen=True)
class AlertEventRecord:
    event_id: int
    alert: Alert


class AlertStore(Protocol):
    async def active(self) -> list[Alert]: ...

    async def create(self, alert: Alert, request_id: str) -> Alert:
        """Insert, or return the alert this user's `request_id` created before."""
        ...

    async def count(self, user_id: str) -> int: ...

    async def of_user(self, user_id: str) -> list[Alert]: ...

    async def delete(self, user_id: str, alert_id: str) -> bool: ...

    async def fire(self, alert: Alert, price: Decimal, at: datetime) -> AlertEventRecord | None:
        """ACTIVE → FIRED with its event, once; None when it was fired or deleted before."""
        ...

    async def events_after(self, user_id: str, event_id: int, limit: int) -> list[AlertEventRecord]: ...

    async def last_event_id(self) -> int: ...


class PriceAlerts:
    def __init__(
        self,
        store: AlertStore,
        *,
        is_known: Callable[[str], bool],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.is_known = is_known
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.by_symbol: dict[str, dict[str, Alert]] = {}
        self._firing: set[str] = set()
        self._write = asyncio.Lock()
        self._fired = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        self.by_symbol = {}
        for alert in await self.store.active():
            self._watch(alert)

    def _watch(self, alert: Alert) -> None:
        self.by_symbol.setdefault(alert.symbol, {})[alert.alert_id] = alert

    def _forget(self, alert: Alert) -> None:
        watched = self.by_symbol.get(alert.symbol, {})
        watched.pop(alert.alert_id, None)
        if not watched:
            self.by_symbol.pop(alert.symbol, None)

    # --- users' requests ---------------------------------------------------------------
    async def create(
        self,
        user_id: str,
        *,
        symbol: str,
        condition: Condition,
        threshold: Decimal,
        note: str,
        request_id: str,
    ) -> Alert:
        if not request_id:
            raise InvalidArgument("request_id is required", reason="MISSING_REQUEST_ID", field="request_id")
        if not self.is_known(symbol):
            raise InvalidArgument(f"unknown symbol {symbol}", reason="UNKNOWN_SYMBOL", field="alert.symbol")
        if condition in (Condition.PRICE_ABOVE, Condition.PRICE_BELOW) and threshold <= 0:
            raise InvalidArgument("a price threshold must be positive", field="alert.threshold")
        if len(note) > rules.MAX_NOTE:
            raise InvalidArgument(f"note is longer than {rules.MAX_NOTE} characters", field="alert.note")
        if await self.store.count(user_id) >= rules.MAX_ALERTS_PER_USER:
            raise FailedPrecondition(
                f"a user may have at most {rules.MAX_ALERTS_PER_USER} alerts; delete one first",
                reason="ALERT_LIMIT",
                metadata={"limit": str(rules.MAX_ALERTS_PER_USER)},
            )
        alert = Alert(
            alert_id=new_id("alr"),
            user_id=user_id,
            symbol=symbol,
            condition=condition,
            threshold=threshold,
            note=note,
            state=AlertState.ACTIVE,
            create_time=self.clock(),
        )
        created = await self.store.create(alert, request_id)
        if created.state is AlertState.ACTIVE:
            self._watch(created)
        return created

    async def of_user(self, user_id: str) -> list[Alert]:
        return await self.store.of_user(user_id)

    async def delete(self, user_id: str, alert_id: str) -> None:
        if not await self.store.delete(user_id, alert_id):
            raise NotFound(f"alert {alert_id} not found", reason="ALERT_NOT_FOUND")
        for watched in self.by_symbol.values():
            alert = watched.get(alert_id)
            if alert is not None:
                self._forget(alert)
                break

    # --- prices ------------------------------------------------------------------------
    def on_quotes(self, quotes: Sequence[Quote]) -> None:
        """Called with each flush's changed quotes: fire what they meet (in the background)."""
        for quote in quotes:
            for alert in list(self.by_symbol.get(quote.symbol, {}).values()):
                if alert.alert_id in self._firing or quote.last_price is None:
                    continue
                if rules.met(alert, quote.last_price, quote.change_percent):
                    self._firing.add(alert.alert_id)
                    task = asyncio.create_task(self._fire(alert, quote.last_price))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _fire(self, alert: Alert, price: Decimal) -> None:
        try:
            async with self._write:
                record = await self.store.fire(alert, price, self.clock())
        except Exception:
            # The alert stays active and is tried again on its symbol's next price.
            ALERT_FIRE_FAILURES.inc()
            log.warning("could not record a fired alert", exc_info=True, extra={"alert_id": alert.alert_id})
            return
        finally:
            self._firing.discard(alert.alert_id)
        self._forget(alert)
        if record is None:
            return
        ALERTS_FIRED.inc()
        log.info(
            "price alert fired",
            extra={
                "alert_id": alert.alert_id,
                "user_id": alert.user_id,
                "symbol": alert.symbol,
                "price": str(price),
            },
        )
        async with self._fired:
            self._fired.notify_all()

    # --- streams -----------------------------------------------------------------------
    async def follow(self, user_id: str, after_event_id: int | None) -> AsyncIterator[AlertEventRecord]:
        """The user's fired alerts after `after_event_id` (None: from now), then as they
        fire. Woken by this process's fires, and reading every `poll_seconds` anyway (a
        fire written by another replica)."""
        if after_event_id is None:
            try:
                after_event_id = await self.store.last_event_id()
            except Exception as exc:
                raise Unavailable("alert history is unavailable; retry shortly") from exc
        while True:
            batch = await self.store.events_after(user_id, after_event_id, 100)
            for record in batch:
                after_event_id = record.event_id
                yield record
            if len(batch) == 100:
                continue  # more waiting already
            async with self._fired:
                with contextlib.suppress(TimeoutError):
                    await aio.within(self._fired.wait(), self.poll_seconds)
