"""Market data for FIX counterparties: the instrument master, subscriptions, snapshots and
incremental refreshes.

Publishing is push-on-change with a ceiling on the rate: a change wakes the publisher, which
sends everything that changed since its last round in as few messages as it can (many
entries per message), then rests for the configured interval before it looks again. A burst
of trades therefore costs one message per interval, and a quiet symbol costs nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from exchange_sim.app import messages as m
from exchange_sim.app.metrics import MD_ENTRIES
from exchange_sim.domain import market_data as md
from exchange_sim.domain.instruments import Instrument
from exchange_sim.domain.matching import MatchingEngine

log = logging.getLogger(__name__)

# SubscriptionRequestType (263).
SNAPSHOT = "0"
SUBSCRIBE = "1"
UNSUBSCRIBE = "2"
# MDUpdateType (265).
FULL_REFRESH = "0"
# MDReqRejReason (281).
REJECT_UNKNOWN_SYMBOL = "0"
REJECT_DUPLICATE_ID = "1"
REJECT_SUBSCRIPTION_TYPE = "4"
REJECT_ENTRY_TYPE = "8"
# SecurityListRequestType (559) and SecurityRequestResult (560).
ONE_SYMBOL = "0"
RESULT_VALID = "0"
RESULT_NONE_FOUND = "2"
INSTRUMENTS_PER_MESSAGE = 100


class MarketDataSink(Protocol):
    def send_snapshot(self, session: str, md_req_id: str, symbol: str, entries: list[md.Entry]) -> None: ...

    def send_incremental(self, session: str, md_req_id: str, entries: list[md.Entry]) -> None: ...

    def send_md_reject(self, session: str, md_req_id: str, reason: str, text: str) -> None: ...

    def send_security_list(
        self,
        session: str,
        *,
        request_id: str,
        response_id: str,
        result: str,
        instruments: list[Instrument],
        total: int,
        last: bool,
    ) -> None: ...


@dataclass(eq=False)
class Subscription:
    session: str
    md_req_id: str
    symbols: frozenset[str]
    depth: int
    entry_types: frozenset[str]
    full_refresh: bool
    sent: dict[str, md.QuoteState] = field(default_factory=dict)


class MarketData:
    def __init__(
        self,
        engine: MatchingEngine,
        sink: MarketDataSink,
        *,
        interval_seconds: float,
        max_entries: int,
        trade_times: dict[str, int] | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = engine
        self.sink = sink
        self.interval_seconds = interval_seconds
        self.max_entries = max_entries
        self.clock_ns = clock_ns
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        # When each symbol last traded (exchange time): the age of a trade tick runs from it.
        self.trade_times: dict[str, int] = trade_times if trade_times is not None else {}
        self._response_ids = itertools.count(1)
        self._changed = asyncio.Event()

    # ---- requests -------------------------------------------------------------------------

    def handle(self, session: str, request: m.MarketDataRequest | m.SecurityListRequest) -> None:
        if isinstance(request, m.SecurityListRequest):
            self.security_list(session, request)
        else:
            self.request(session, request)

    def security_list(self, session: str, request: m.SecurityListRequest) -> None:
        books = self.engine.books
        if request.request_type == ONE_SYMBOL:
            found = [books[request.symbol].instrument] if request.symbol in books else []
        else:
            found = [book.instrument for book in books.values()]
        response_id = f"SL{next(self._response_ids)}"
        if not found:
            self.sink.send_security_list(
                session,
                request_id=request.security_req_id,
                response_id=response_id,
                result=RESULT_NONE_FOUND,
                instruments=[],
                total=0,
                last=True,
            )
            return
        chunks = [
            found[i : i + INSTRUMENTS_PER_MESSAGE] for i in range(0, len(found), INSTRUMENTS_PER_MESSAGE)
        ]
        for index, chunk in enumerate(chunks, start=1):
            self.sink.send_security_list(
                session,
                request_id=request.security_req_id,
                response_id=response_id,
                result=RESULT_VALID,
                instruments=chunk,
                total=len(found),
                last=index == len(chunks),
            )

    def request(self, session: str, request: m.MarketDataRequest) -> None:
        key = (session, request.md_req_id)
        if request.subscription_type == UNSUBSCRIBE:
            if self.subscriptions.pop(key, None) is None:
                log.info(
                    "unsubscribe for an unknown request",
                    extra={"session": session, "md_req_id": request.md_req_id},
                )
            return
        if request.subscription_type not in (SNAPSHOT, SUBSCRIBE):
            self.sink.send_md_reject(
                session,
                request.md_req_id,
                REJECT_SUBSCRIPTION_TYPE,
                "SubscriptionRequestType must be 0, 1 or 2",
            )
            return
        if key in self.subscriptions:
            self.sink.send_md_reject(
                session,
                request.md_req_id,
                REJECT_DUPLICATE_ID,
                f"MDReqID {request.md_req_id} is already subscribed",
            )
            return
        unknown = [s for s in request.symbols if s not in self.engine.books]
        if unknown or not request.symbols:
            listed = ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else "")
            self.sink.send_md_reject(
                session,
                request.md_req_id,
                REJECT_UNKNOWN_SYMBOL,
                f"unknown symbols: {listed or 'none given'}",
            )
            return
        wanted = frozenset(request.entry_types) or md.ENTRY_TYPES
        unsupported = sorted(wanted - md.ENTRY_TYPES)
        if unsupported:
            self.sink.send_md_reject(
                session,
                request.md_req_id,
                REJECT_ENTRY_TYPE,
                f"unsupported MDEntryType {', '.join(unsupported)}",
            )
            return
        depth = md.MAX_DEPTH if request.depth <= 0 else min(request.depth, md.MAX_DEPTH)
        subscription = Subscription(
            session=session,
            md_req_id=request.md_req_id,
            symbols=frozenset(request.symbols),
            depth=depth,
            entry_types=wanted,
            full_refresh=request.update_type == FULL_REFRESH,
        )
        now = self.clock_ns()
        for symbol in dict.fromkeys(request.symbols):
            state = md.quote_state(self.engine.books[symbol], depth)
            self._send_snapshot(subscription, symbol, state, now)
            subscription.sent[symbol] = state
        if request.subscription_type == SUBSCRIBE:
            self.subscriptions[key] = subscription
        log.info(
            "market data request",
            extra={
                "session": session,
                "md_req_id": request.md_req_id,
                "symbols": len(subscription.symbols),
                "depth": depth,
                "subscribed": request.subscription_type == SUBSCRIBE,
            },
        )

    def session_changed(self, session: str, logged_on: bool) -> None:
        """Subscriptions live as long as the logon that made them."""
        if not logged_on:
            for key in [k for k in self.subscriptions if k[0] == session]:
                del self.subscriptions[key]

    # ---- publishing -----------------------------------------------------------------------

    def notify(self) -> None:
        self._changed.set()

    def publish(self) -> int:
        """Send what changed since the last round; returns the entries sent."""
        changed = self.engine.drain_changed()
        if not changed or not self.subscriptions:
            return 0
        now = self.clock_ns()
        books = self.engine.books
        sent = 0
        for subscription in list(self.subscriptions.values()):
            symbols = changed & subscription.symbols
            if not symbols:
                continue
            entries: list[md.Entry] = []
            for symbol in sorted(symbols):
                book = books[symbol]
                state = md.quote_state(book, subscription.depth)
                before = subscription.sent.get(symbol)
                if before == state:
                    continue
                subscription.sent[symbol] = state
                if subscription.full_refresh or before is None:
                    self._send_snapshot(subscription, symbol, state, now)
                    continue
                entries.extend(
                    md.incremental(
                        book.instrument,
                        before,
                        state,
                        subscription.entry_types,
                        trade_time_ns=self.trade_times.get(symbol, now),
                        now_ns=now,
                    )
                )
            for start in range(0, len(entries), self.max_entries):
                self.sink.send_incremental(
                    subscription.session, subscription.md_req_id, entries[start : start + self.max_entries]
                )
            sent += len(entries)
        MD_ENTRIES.inc(sent)
        return sent

    async def run(self) -> None:
        """Publish on change, at most once per interval."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                self.publish()
            except Exception:
                log.exception("market data round failed")
            await asyncio.sleep(self.interval_seconds)

    def _send_snapshot(self, subscription: Subscription, symbol: str, state: md.QuoteState, now: int) -> None:
        book = self.engine.books[symbol]
        entries = md.snapshot(
            book.instrument,
            state,
            subscription.entry_types,
            trade_time_ns=self.trade_times.get(symbol, now),
            now_ns=now,
        )
        MD_ENTRIES.inc(len(entries))
        self.sink.send_snapshot(subscription.session, subscription.md_req_id, symbol, entries)
