"""The exchange as a whole: routes counterparties' requests, and serves operators and tests
(halts, scenarios, books, the day's orders).

Everything here runs on the asyncio loop; the matching engine is touched by nobody else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from exchange_sim.app import messages as m
from exchange_sim.app.delivery import DelayedDelivery
from exchange_sim.app.metrics import ENGINE_SECONDS, HALTED, LIVE_ORDERS
from exchange_sim.app.order_entry import OrderEntry, SessionOrder
from exchange_sim.domain import matching as me
from svc_runtime.market_clock import Phase

log = logging.getLogger(__name__)

# Status requests wait with the orders: answered before the open, "unknown order" about an
# order held in the pre-open would let a broker give it up while it is about to trade.
HELD_IN_PRE_OPEN = (
    m.NewOrderRequest,
    m.CancelRequest,
    m.ReplaceRequest,
    m.StatusRequest,
    m.MassStatusRequest,
)


@dataclass
class SessionState:
    session_id: str
    counterparty: str
    role: str
    logged_on: bool
    next_sender_seq: int
    next_target_seq: int


class SessionControl(Protocol):
    """The FIX sessions, as operators see them."""

    def counterparty_names(self) -> list[str]: ...

    def state(self, counterparty: str) -> SessionState | None: ...

    def drop(self, counterparty: str) -> bool: ...


class MarketDataPort(Protocol):
    """The market-data side, as order entry and the admin API see it."""

    def handle(self, session: str, request: m.MarketDataRequest | m.SecurityListRequest) -> None: ...

    def session_changed(self, session: str, logged_on: bool) -> None: ...

    def notify(self) -> None: ...


class AgentsPort(Protocol):
    def pause(self, paused: bool) -> None: ...

    def shock(self, percent: Decimal) -> None: ...


class NotFoundError(LookupError):
    pass


class BadRequestError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class TradingStatus:
    session_open: bool
    market_halt: str | None
    halted_symbols: dict[str, str]
    circuit_level: int
    index_value: Decimal | None
    index_change_percent: Decimal | None
    halt_ends_at: float | None  # unix seconds
    phase: Phase | None = None
    trading_date: date | None = None
    market_time: datetime | None = None


@dataclass
class BookView:
    symbol: str
    bids: list[tuple[Decimal, int, int]]
    asks: list[tuple[Decimal, int, int]]
    last_price: Decimal | None
    volume: int


class Exchange:
    def __init__(
        self,
        engine: me.MatchingEngine,
        order_entry: OrderEntry,
        delivery: DelayedDelivery,
        sessions: SessionControl,
    ) -> None:
        self.engine = engine
        self.order_entry = order_entry
        self.delivery = delivery
        self.sessions = sessions
        self.market_data: MarketDataPort | None = None
        self.agents: AgentsPort | None = None
        # Set by the trading-day supervisor: circuit-breaker state for the status view.
        self.circuit_view: Callable[[], tuple[int, Decimal | None, Decimal | None, float | None]] = lambda: (
            0,
            None,
            None,
            None,
        )
        self._handlers: dict[type, Callable[[str, object], None]] = {
            m.NewOrderRequest: self._timed("new", self.order_entry.new_order),
            m.CancelRequest: self._timed("cancel", self.order_entry.cancel),
            m.ReplaceRequest: self._timed("replace", self.order_entry.replace),
            m.StatusRequest: self.order_entry.status,  # type: ignore[dict-item]
            m.MassStatusRequest: self.order_entry.mass_status,  # type: ignore[dict-item]
        }
        # Set by the trading-day supervisor: the phase, the trading date and the market's time.
        self.session_view: Callable[[], tuple[Phase | None, date | None, datetime | None]] = lambda: (
            None,
            None,
            None,
        )
        # Requests taken in the pre-open, in arrival order, until the open.
        self.pre_open = False
        self._held: list[tuple[str, object]] = []

    def _timed(self, command: str, handler: Callable[[str, Any], None]) -> Callable[[str, object], None]:
        histogram = ENGINE_SECONDS.labels(command)

        def timed(session: str, request: object) -> None:
            started = time.perf_counter()
            handler(session, request)
            histogram.observe(time.perf_counter() - started)

        return timed

    # ---- FIX ------------------------------------------------------------------------------

    def phase_changed(self, phase: Phase) -> None:
        self.pre_open = phase is Phase.PRE_OPEN
        if phase is Phase.OPEN and self._held:
            held, self._held = self._held, []
            log.info("pre-open orders enter the book", extra={"requests": len(held)})
            for session, request in held:
                self.dispatch(session, request)

    def dispatch(self, session: str, request: object) -> None:
        handler = self._handlers.get(type(request))
        if self.pre_open and isinstance(request, HELD_IN_PRE_OPEN):
            self._held.append((session, request))
            return
        if handler is not None:
            handler(session, request)
            LIVE_ORDERS.set(len(self.engine.live))
            if self.market_data is not None:
                self.market_data.notify()
        elif (
            isinstance(request, m.MarketDataRequest | m.SecurityListRequest) and self.market_data is not None
        ):
            self.market_data.handle(session, request)
        else:
            log.warning("request not handled", extra={"session": session, "request": type(request).__name__})

    def session_changed(self, session: str, logged_on: bool) -> None:
        if self.market_data is not None:
            self.market_data.session_changed(session, logged_on)

    # ---- operators and tests --------------------------------------------------------------

    def list_orders(self, session: str | None) -> list[SessionOrder]:
        return self.order_entry.orders_of(session)

    def answers_since(self) -> float:
        """Unix seconds since which `list_orders` holds every order (see OrderEntry.restore)."""
        return self.order_entry.answers_since

    def order_book(self, symbol: str, depth: int) -> BookView:
        book = self.engine.book(symbol)
        if book is None:
            raise NotFoundError(f"unknown symbol {symbol!r}")
        to_price = book.instrument.to_price
        bids, asks = self.engine.depth(symbol, depth)
        return BookView(
            symbol=symbol,
            bids=[(to_price(p), q, n) for p, q, n in bids],
            asks=[(to_price(p), q, n) for p, q, n in asks],
            last_price=to_price(book.last) if book.last else None,
            volume=book.volume,
        )

    def halt(self, symbol: str | None, reason: str) -> None:
        if symbol is not None and symbol not in self.engine.books:
            raise NotFoundError(f"unknown symbol {symbol!r}")
        self.engine.halt(symbol, reason or "halted by the exchange")
        HALTED.set(1 if self.engine.market_halt is not None else 0)
        log.warning("trading halted", extra={"symbol": symbol or "*", "reason": reason})

    def resume(self, symbol: str | None) -> None:
        if symbol is not None and symbol not in self.engine.books:
            raise NotFoundError(f"unknown symbol {symbol!r}")
        self.engine.resume(symbol)
        HALTED.set(1 if self.engine.market_halt is not None else 0)
        log.info("trading resumed", extra={"symbol": symbol or "*"})

    def fix_sessions(self) -> list[SessionState]:
        states = (self.sessions.state(name) for name in sorted(self.sessions.counterparty_names()))
        return [state for state in states if state is not None]

    def status(self) -> TradingStatus:
        level, index, change, ends = self.circuit_view()
        phase, trading_date, market_time = self.session_view()
        return TradingStatus(
            session_open=self.engine.session_open,
            market_halt=self.engine.market_halt,
            halted_symbols=dict(self.engine.symbol_halts),
            circuit_level=level,
            index_value=index,
            index_change_percent=change,
            halt_ends_at=ends,
            phase=phase,
            trading_date=trading_date,
            market_time=market_time,
        )

    def set_scenario(
        self,
        *,
        reject_next_orders: int,
        reject_text: str,
        delay_reports_ms: int,
        drop_session: str,
        pause_market_makers: bool,
        shock_market_percent: Decimal | None,
    ) -> None:
        if drop_session and drop_session not in self.sessions.counterparty_names():
            raise NotFoundError(f"no FIX session with {drop_session!r}")
        if reject_next_orders < 0 or delay_reports_ms < 0:
            raise BadRequestError("counts and delays must not be negative", "reject_next_orders")
        self.order_entry.reject_next.remaining = reject_next_orders
        if reject_text:
            self.order_entry.reject_next.text = reject_text
        self.delivery.set_delay(delay_reports_ms)
        if self.agents is not None:
            self.agents.pause(pause_market_makers)
            if shock_market_percent is not None:
                self.agents.shock(shock_market_percent)
        if drop_session:
            self.sessions.drop(drop_session)
        log.info(
            "scenario set",
            extra={
                "reject_next_orders": reject_next_orders,
                "delay_reports_ms": delay_reports_ms,
                "drop_session": drop_session,
                "pause_market_makers": pause_market_makers,
                "shock_market_percent": str(shock_market_percent),
            },
        )

    def place(
        self,
        participant: str,
        *,
        symbol: str,
        side: int,
        quantity: int,
        price: Decimal | None,
        order_type: str,
        tif: str,
    ) -> SessionOrder:
        book = self.engine.book(symbol)
        if book is None:
            raise NotFoundError(f"unknown symbol {symbol!r}")
        ticks = None
        if price is not None:
            ticks = book.instrument.to_ticks(price)
            if ticks is None:
                raise BadRequestError(
                    f"price is not a multiple of the tick size {book.instrument.tick_size}", "price"
                )
        record = self.order_entry.place(
            participant,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=ticks,
            order_type=order_type,
            tif=tif,
        )
        LIVE_ORDERS.set(len(self.engine.live))
        if self.market_data is not None:
            self.market_data.notify()
        return record
