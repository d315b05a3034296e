"""Order entry: FIX requests in, execution reports and cancel rejects out.

Every request is validated here and either reaches the matching engine or becomes a clear
reject; nothing is half-applied. The day's orders of every counterparty are kept (also once
done) for status requests, reconciliation and the admin API. ClOrdIDs are unique per
counterparty and day: a repeated ClOrdID with the same content is answered with the order's
current status (a resend after a crash is harmless), with different content it is rejected
as a duplicate.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from exchange_sim.app import messages as m
from exchange_sim.app.journal import OrderJournal, Saved, SavedOrder, SavedRequest
from exchange_sim.app.metrics import JOURNAL_SYNC_SECONDS, ORDERS_RECEIVED, REPORTS_SENT, TRADES
from exchange_sim.domain import matching as me
from exchange_sim.domain.instruments import Instrument
from svc_runtime.market_clock import IST

log = logging.getLogger(__name__)

AVERAGE_PRICE_PLACES = Decimal("0.0001")
NO_ORDER_ID = "NONE"
TRIGGERED_TEXT = "stop price traded: order triggered"

SIDES = {"1": me.BUY, "2": me.SELL}
SIDE_CODES = {me.BUY: "1", me.SELL: "2"}
ORDER_TYPES = {"1": me.MARKET, "2": me.LIMIT, "3": me.STOP, "4": me.STOP_LIMIT}
ORDER_TYPE_CODES = {v: k for k, v in ORDER_TYPES.items()}
TIMES_IN_FORCE = {"0": me.DAY, "1": me.GTC, "3": me.IOC, "4": me.FOK, "6": me.GTD}
TIME_IN_FORCE_CODES = {v: k for k, v in TIMES_IN_FORCE.items()}

ORD_STATUS = {
    me.NEW: m.STATUS_NEW,
    me.PENDING_TRIGGER: m.STATUS_NEW,  # FIX 4.4 has no "waiting for trigger" status
    me.PARTIALLY_FILLED: m.STATUS_PARTIALLY_FILLED,
    me.FILLED: m.STATUS_FILLED,
    me.CANCELLED: m.STATUS_CANCELED,
    me.REJECTED: m.STATUS_REJECTED,
    me.EXPIRED: m.STATUS_EXPIRED,
}
EXEC_TYPE = {
    me.ACCEPTED: m.EXEC_NEW,
    me.TRADE: m.EXEC_TRADE,
    me.CANCELLED: m.EXEC_CANCELED,
    me.REPLACED: m.EXEC_REPLACED,
    me.REJECTED: m.EXEC_REJECTED,
    me.EXPIRED: m.EXEC_EXPIRED,
    me.TRIGGERED: m.EXEC_RESTATED,  # a stop's trigger, the FIX 4.4 way (README: Stops)
}
REJECT_CODE = {
    me.Reason.UNKNOWN_SYMBOL: m.REJECT_UNKNOWN_SYMBOL,
    me.Reason.MARKET_CLOSED: m.REJECT_EXCHANGE_CLOSED,
    me.Reason.HALTED: m.REJECT_EXCHANGE_CLOSED,
    me.Reason.BAD_QUANTITY: m.REJECT_INCORRECT_QUANTITY,
    me.Reason.NOT_LOT_MULTIPLE: m.REJECT_INCORRECT_QUANTITY,
    me.Reason.BAD_DISPLAY_QUANTITY: m.REJECT_INCORRECT_QUANTITY,
    me.Reason.OUTSIDE_BAND: m.REJECT_EXCEEDS_LIMIT,
    me.Reason.BAD_ORDER: m.REJECT_UNSUPPORTED,
}
CANCEL_REJECT_CODE = {
    me.Reason.UNKNOWN_ORDER: m.CXL_UNKNOWN_ORDER,
}


class ReportSink(Protocol):
    """Where reports go: the FIX session of `report.session`."""

    def send_execution_report(self, report: m.ExecutionReport) -> None: ...

    def send_cancel_reject(self, reject: m.CancelReject) -> None: ...


class ExchangeIds:
    """OrderIDs, ExecIDs and trade ids that are unique forever: the boot id makes them unique
    across restarts, a counter within one run."""

    def __init__(self, boot_id: str) -> None:
        self.boot_id = boot_id
        self._exec_ids = itertools.count(1)

    def order_id(self, engine_order_id: int) -> str:
        return f"{self.boot_id}-{engine_order_id}"

    def exec_id(self) -> str:
        return f"{self.boot_id}-E{next(self._exec_ids)}"

    def match_id(self, match: int) -> str:
        return f"{self.boot_id}-T{match}"


@dataclass(eq=False, slots=True)
class SessionOrder:
    """A counterparty's order, as the exchange remembers it for the day."""

    exchange_order_id: str
    session: str
    cl_ord_id: str
    instrument: Instrument | None
    order: me.Order
    account: str = ""
    # The ClOrdID the latest cancel or replace referred to (OrigClOrdID of its report).
    orig_cl_ord_id: str = ""
    # What the NewOrderSingle said, to tell a harmless resend from a clashing duplicate.
    fingerprint: str = ""
    seq: int = 0  # arrival order, kept across restarts
    updated: float = 0.0  # unix seconds of the last change
    text: str = ""  # the last reject or cancel reason
    cl_ord_ids: list[str] = field(default_factory=list)

    @property
    def ord_status(self) -> str:
        return ORD_STATUS[self.order.status]

    def average_price(self) -> Decimal:
        if not self.order.cum or self.instrument is None:
            return Decimal(0)
        average = self.instrument.tick_size * self.order.notional / self.order.cum
        return average.quantize(AVERAGE_PRICE_PLACES, rounding=ROUND_HALF_EVEN).normalize() + 0


class InvalidRequest(Exception):
    def __init__(self, reason: str, text: str, code: int) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.code = code


@dataclass
class RejectScenario:
    """Reject the next N new orders with this text (a test scenario)."""

    remaining: int = 0
    text: str = "rejected by test scenario"


P = ParamSpec("P")
R = TypeVar("R")


def _then_flush(method: Callable[Concatenate[OrderEntry, P], R]) -> Callable[Concatenate[OrderEntry, P], R]:
    """A request or engine event handled in full: its changes are made durable, then its
    reports sent (at once, or with the other requests of this turn of the loop)."""

    @functools.wraps(method)
    def handled(self: OrderEntry, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        finally:
            self._done()

    return handled


class OrderEntry:
    def __init__(
        self,
        engine: me.MatchingEngine,
        sink: ReportSink,
        ids: ExchangeIds,
        clock: Callable[[], datetime],
        *,
        counterparties: Iterable[str],
        trade_times: dict[str, int] | None = None,
        journal: OrderJournal | None = None,
    ) -> None:
        self.engine = engine
        # FIX counterparties; orders of other participants (operator, tests) are not reported.
        self.counterparties = frozenset(counterparties)
        # When each symbol last traded (ns since the epoch), shared with market data.
        self.trade_times: dict[str, int] = trade_times if trade_times is not None else {}
        self.sink = sink
        self.ids = ids
        self.clock = clock
        # The market's own time (a fast clock in tests and demos): what dates orders expire by.
        self.market_now = clock
        self.reject_next = RejectScenario()
        self.orders: list[SessionOrder] = []
        self._by_cl_ord_id: dict[tuple[str, str], SessionOrder] = {}
        self._by_exchange_id: dict[str, SessionOrder] = {}
        # Every ClOrdID a counterparty has used today, with what its request said.
        self._requests: dict[tuple[str, str], str] = {}
        # Durability: what changed since the last flush, and the reports that wait for it.
        self.journal = journal
        # Unix seconds since which every order is known: the start, or what the journal keeps.
        self.answers_since = clock().timestamp()
        self._changed: dict[int, SessionOrder] = {}
        self._new_requests: list[SavedRequest] = []
        self._outbox: list[m.ExecutionReport | m.CancelReject] = []
        self._seq = 0
        self._call_soon: Callable[[Callable[[], None]], object] | None = None
        self._flush_scheduled = False

    # ---- durability -----------------------------------------------------------------------

    def restore(self) -> None:
        """Load what the journal kept: working orders go back into the books (in their old
        time priority), finished ones answer status requests again."""
        if self.journal is None:
            return
        saved: Saved = self.journal.load()
        self.answers_since = saved.since
        for request in saved.requests:
            self._requests[(request.session, request.cl_ord_id)] = request.fingerprint
        for kept in saved.orders:
            book = self.engine.books.get(kept.symbol)
            order = me.Order(
                0, kept.owner, kept.symbol, kept.side, kept.order_type, kept.tif, kept.price,
                kept.quantity, kept.stop_price, None,
            )  # fmt: skip
            order.expire_date = date.fromisoformat(kept.expire_date) if kept.expire_date else None
            order.max_floor = kept.max_floor
            order.leaves, order.cum, order.notional, order.status = (
                kept.leaves,
                kept.cum,
                kept.notional,
                kept.status,
            )
            record = SessionOrder(
                exchange_order_id=kept.exchange_order_id,
                session=kept.session,
                cl_ord_id=kept.cl_ord_id,
                instrument=book.instrument if book is not None else None,
                order=self.engine.restore(order),
                account=kept.account,
                orig_cl_ord_id=kept.orig_cl_ord_id,
                fingerprint=kept.fingerprint,
                text=kept.text,
                cl_ord_ids=list(kept.cl_ord_ids),
                seq=kept.seq,
                updated=kept.updated,
            )
            record.order.ref = record
            self._seq = max(self._seq, kept.seq)
            self.orders.append(record)
            self._by_exchange_id[record.exchange_order_id] = record
            for cl_ord_id in record.cl_ord_ids:
                self._by_cl_ord_id[(record.session, cl_ord_id)] = record

    def defer_flushes(self, call_soon: Callable[[Callable[[], None]], object]) -> None:
        """Flush once per turn of the event loop instead of after every request: one fsync
        then covers every request that arrived meanwhile (group commit)."""
        self._call_soon = call_soon

    def flush(self) -> None:
        """Make the changes durable, then send the reports that announce them, in order."""
        self._flush_scheduled = False
        if self.journal is not None and (self._changed or self._new_requests):
            started = time.perf_counter()
            self.journal.append([_saved(r) for r in self._changed.values()], self._new_requests)
            JOURNAL_SYNC_SECONDS.observe(time.perf_counter() - started)
        self._changed.clear()
        self._new_requests.clear()
        outbox, self._outbox = self._outbox, []
        for item in outbox:
            if isinstance(item, m.CancelReject):
                self.sink.send_cancel_reject(item)
            else:
                self.sink.send_execution_report(item)

    def _done(self) -> None:
        if self._call_soon is None:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._call_soon(self.flush)

    def _changed_now(self, record: SessionOrder) -> None:
        record.updated = self.clock().timestamp()
        self._changed[id(record)] = record

    def _remember(self, session: str, cl_ord_id: str, fingerprint: str) -> None:
        self._requests[(session, cl_ord_id)] = fingerprint
        self._new_requests.append(SavedRequest(session, cl_ord_id, fingerprint, self.clock().timestamp()))

    # ---- requests -------------------------------------------------------------------------

    @_then_flush
    def new_order(self, session: str, request: m.NewOrderRequest) -> None:
        key = (session, request.cl_ord_id)
        fingerprint = ("D", *_order_terms(request))
        if key in self._requests:
            self._answer_duplicate(session, request.cl_ord_id, fingerprint, for_new=True)
            return
        self._remember(session, request.cl_ord_id, _canonical(fingerprint))
        side = SIDES.get(request.side, 0)
        instrument = (
            self.engine.books[request.symbol].instrument if request.symbol in self.engine.books else None
        )
        # Self-trade prevention is per client: orders of one Account (tag 1) of one
        # counterparty never trade with each other. Without an Account the exchange cannot
        # tell clients apart, so such orders are never treated as the same owner.
        owner = f"{session}/{request.account}" if request.account else f"{session}#{request.cl_ord_id}"
        record_for: Callable[[me.Order], SessionOrder] = lambda order: self._record(  # noqa: E731
            session,
            cl_ord_id=request.cl_ord_id,
            account=request.account,
            instrument=instrument,
            order=order,
            fingerprint=_canonical(fingerprint),
        )
        try:
            terms = self._parse_terms(
                request.symbol, request.quantity, request.order_type, request.price, request.stop_price
            )
            tif = TIMES_IN_FORCE.get(request.time_in_force or "0")
            if side == 0:
                raise InvalidRequest(
                    me.Reason.BAD_ORDER, f"unsupported side {request.side!r}", m.REJECT_OTHER
                )
            if tif is None:
                raise InvalidRequest(
                    me.Reason.BAD_ORDER,
                    f"unsupported time in force {request.time_in_force!r}: DAY, GTC, IOC, FOK or GTD",
                    m.REJECT_UNSUPPORTED,
                )
            expire_date = _expire_date(request, tif, self.market_now())
            max_floor = _max_floor(request.max_floor)
            if self.reject_next.remaining > 0:
                self.reject_next.remaining -= 1
                raise InvalidRequest("SCENARIO", self.reject_next.text, m.REJECT_EXCHANGE_OPTION)
        except InvalidRequest as error:
            ORDERS_RECEIVED.labels("new", "rejected").inc()
            rejected = self.engine.reject(
                owner,
                request.symbol,
                side,
                error.reason,
                order_type=ORDER_TYPES.get(request.order_type, me.LIMIT),
                tif=TIMES_IN_FORCE.get(request.time_in_force or "0", me.DAY),
                quantity=max(0, _whole(request.quantity) or 0),
            )
            record = record_for(rejected.order)
            record.text = error.text
            self._send(record, rejected, self.clock(), code=error.code)
            return
        order_type, quantity, price, stop_price = terms
        events = self.engine.submit(
            owner,
            request.symbol,
            side,
            quantity,
            price,
            order_type=order_type,
            tif=tif,
            stop_price=stop_price,
            ref=None,
            expire_date=expire_date,
            max_floor=max_floor,
        )
        first = events[0]
        assert isinstance(first, me.Execution)
        first.order.ref = record_for(first.order)
        ORDERS_RECEIVED.labels("new", "rejected" if first.kind == me.REJECTED else "accepted").inc()
        self.publish(events)

    def _amendable(
        self,
        session: str,
        request: m.CancelRequest | m.ReplaceRequest,
        fingerprint: tuple[object, ...],
        response_to: str,
        kind: str,
    ) -> tuple[SessionOrder | None, Callable[[int, str], None]]:
        """The working order a cancel or replace names, and how to reject this request;
        None after answering a repeated request or rejecting an unknown or finished order."""
        key = (session, request.cl_ord_id)
        record = self._find(session, request.orig_cl_ord_id, request.order_id)

        def reject(code: int, text: str) -> None:
            self._cancel_reject(
                session, request=request, record=record, response_to=response_to, reason=code, text=text
            )

        if key in self._requests:
            self._answer_duplicate(
                session, request.cl_ord_id, fingerprint, for_new=False, response=response_to
            )
            return None, reject
        self._remember(session, request.cl_ord_id, _canonical(fingerprint))
        if record is None:
            ORDERS_RECEIVED.labels(kind, "unknown").inc()
            reject(m.CXL_UNKNOWN_ORDER, "unknown order")
            return None, reject
        if record.order.status not in me.WORKING:
            ORDERS_RECEIVED.labels(kind, "too_late").inc()
            reject(m.CXL_TOO_LATE, f"too late to {kind}: order is done")
            return None, reject
        return record, reject

    @_then_flush
    def cancel(self, session: str, request: m.CancelRequest) -> None:
        fingerprint = ("F", request.orig_cl_ord_id or request.order_id)
        record, reject = self._amendable(session, request, fingerprint, m.RESPONSE_TO_CANCEL, "cancel")
        if record is None:
            return
        if request.symbol != record.order.symbol or SIDES.get(request.side) != record.order.side:
            ORDERS_RECEIVED.labels("cancel", "rejected").inc()
            reject(m.CXL_OTHER, "symbol or side does not match the order")
            return
        events = self.engine.cancel(record.order.order_id)
        ORDERS_RECEIVED.labels("cancel", "accepted").inc()
        self._adopt_cl_ord_id(record, request.cl_ord_id)
        self.publish(events, orig_for=record)

    @_then_flush
    def replace(self, session: str, request: m.ReplaceRequest) -> None:
        fingerprint = ("G", request.orig_cl_ord_id or request.order_id, *_order_terms(request))
        record, reject = self._amendable(session, request, fingerprint, m.RESPONSE_TO_REPLACE, "replace")
        if record is None:
            return
        order = record.order
        try:
            if request.symbol != order.symbol or SIDES.get(request.side) != order.side:
                raise InvalidRequest(
                    me.Reason.BAD_ORDER, "a replace cannot change the symbol or side", m.CXL_OTHER
                )
            order_type, quantity, price, stop_price = self._parse_terms(
                request.symbol, request.quantity, request.order_type, request.price, request.stop_price
            )
            if order_type != order.order_type:
                raise InvalidRequest(
                    me.Reason.BAD_ORDER, "a replace cannot change the order type", m.CXL_OTHER
                )
            tif = TIMES_IN_FORCE.get(request.time_in_force or TIME_IN_FORCE_CODES[order.tif])
            if tif != order.tif:
                raise InvalidRequest(
                    me.Reason.BAD_ORDER, "a replace cannot change the time in force", m.CXL_OTHER
                )
            max_floor = _max_floor(request.max_floor)
        except InvalidRequest as error:
            ORDERS_RECEIVED.labels("replace", "rejected").inc()
            reject(m.CXL_OTHER, error.text)
            return
        events = self.engine.replace(order.order_id, quantity, price, stop_price, max_floor)
        first = events[0]
        if isinstance(first, me.CancelRejected):
            ORDERS_RECEIVED.labels("replace", "rejected").inc()
            reject(
                CANCEL_REJECT_CODE.get(first.reason, m.CXL_EXCHANGE_OPTION),
                self._reason_text(first.reason, order.symbol),
            )
            return
        ORDERS_RECEIVED.labels("replace", "accepted").inc()
        self._adopt_cl_ord_id(record, request.cl_ord_id)
        self.publish(events, orig_for=record)

    @_then_flush
    def status(self, session: str, request: m.StatusRequest) -> None:
        record = self._find(session, request.cl_ord_id, request.order_id)
        now = self.clock()
        if record is None:
            self._emit(
                m.ExecutionReport(
                    session=session,
                    exchange_order_id=request.order_id or NO_ORDER_ID,
                    cl_ord_id=request.cl_ord_id,
                    exec_id=self.ids.exec_id(),
                    exec_type=m.EXEC_ORDER_STATUS,
                    ord_status=m.STATUS_REJECTED,
                    symbol=request.symbol,
                    side=request.side if request.side in SIDES else "1",
                    order_type="",
                    time_in_force="",
                    quantity=0,
                    leaves=0,
                    cum=0,
                    average_price=Decimal(0),
                    transact_time=now,
                    text="unknown order",
                    reject_reason=m.REJECT_UNKNOWN_ORDER,
                    status_request_id=request.status_request_id,
                )
            )
            return
        report = self._status_report(record, now)
        report.status_request_id = request.status_request_id
        self._emit(report)

    @_then_flush
    def mass_status(self, session: str, request: m.MassStatusRequest) -> None:
        """One status report per order of the counterparty today, working or done; a single
        report with TotNumReports=0 when there are none."""
        selected = [
            record
            for record in self.orders
            if record.session == session
            and (request.request_type != m.MASS_STATUS_SECURITY or record.order.symbol == request.symbol)
            and (not request.account or record.account == request.account)
        ]
        now = self.clock()
        if not selected:
            self._emit(
                m.ExecutionReport(
                    session=session,
                    exchange_order_id=NO_ORDER_ID,
                    cl_ord_id="",
                    exec_id=self.ids.exec_id(),
                    exec_type=m.EXEC_ORDER_STATUS,
                    ord_status=m.STATUS_REJECTED,
                    symbol=request.symbol or "NONE",
                    side="1",
                    order_type="",
                    time_in_force="",
                    quantity=0,
                    leaves=0,
                    cum=0,
                    average_price=Decimal(0),
                    transact_time=now,
                    text="no orders",
                    mass_status_request_id=request.mass_status_request_id,
                    total_reports=0,
                    last_report=True,
                )
            )
            return
        for index, record in enumerate(selected, start=1):
            report = self._status_report(record, now)
            report.mass_status_request_id = request.mass_status_request_id
            report.total_reports = len(selected)
            report.last_report = index == len(selected)
            self._emit(report)

    # ---- engine events --------------------------------------------------------------------

    @_then_flush
    def publish(self, events: Iterable[me.Event], *, orig_for: SessionOrder | None = None) -> None:
        """Report what happened to counterparties' orders; other participants' are silent."""
        now = self.clock()
        for event in events:
            if type(event) is not me.Execution:
                continue
            if event.kind is me.TRADE and event.aggressor:
                TRADES.inc()
                self.trade_times[event.order.symbol] = time.time_ns()
            record = event.order.ref
            if record is None:
                continue
            assert isinstance(record, SessionOrder)
            if event.reason is not None and event.kind != me.TRADE:
                record.text = self._reason_text(event.reason, event.order.symbol)
            orig = ""
            if record is orig_for and event.kind in (me.REPLACED, me.CANCELLED):
                orig = record.orig_cl_ord_id
            self._send(record, event, now, orig=orig)

    def orders_of(self, session: str | None) -> list[SessionOrder]:
        return [r for r in self.orders if not session or r.session == session]

    @_then_flush
    def place(
        self,
        participant: str,
        *,
        symbol: str,
        side: int,
        quantity: int,
        price: int | None,
        order_type: str,
        tif: str,
    ) -> SessionOrder:
        """An order of an exchange participant that is not a FIX counterparty (operator and
        tests): tracked like a counterparty's order, reported to nobody."""
        events = self.engine.submit(
            f"{participant}/", symbol, side, quantity, price, order_type=order_type, tif=tif
        )
        first = events[0]
        assert isinstance(first, me.Execution)
        book = self.engine.books.get(symbol)
        record = self._record(
            participant,
            cl_ord_id=f"{participant}-{first.order.order_id}",
            account="",
            instrument=book.instrument if book else None,
            order=first.order,
            fingerprint="",
        )
        first.order.ref = record
        if first.reason is not None:
            record.text = self._reason_text(first.reason, symbol)
        self.publish(events)
        return record

    # ---- internals ------------------------------------------------------------------------

    def _record(
        self,
        session: str,
        *,
        cl_ord_id: str,
        account: str,
        instrument: Instrument | None,
        order: me.Order,
        fingerprint: str,
    ) -> SessionOrder:
        self._seq += 1
        record = SessionOrder(
            exchange_order_id=self.ids.order_id(order.order_id),
            session=session,
            cl_ord_id=cl_ord_id,
            instrument=instrument,
            order=order,
            account=account,
            fingerprint=fingerprint,
            cl_ord_ids=[cl_ord_id],
            seq=self._seq,
        )
        self._changed_now(record)
        self.orders.append(record)
        self._by_cl_ord_id[(session, cl_ord_id)] = record
        self._by_exchange_id[record.exchange_order_id] = record
        return record

    def _adopt_cl_ord_id(self, record: SessionOrder, cl_ord_id: str) -> None:
        record.orig_cl_ord_id = record.cl_ord_id
        record.cl_ord_id = cl_ord_id
        record.cl_ord_ids.append(cl_ord_id)
        self._by_cl_ord_id[(record.session, cl_ord_id)] = record
        self._changed_now(record)

    def _find(self, session: str, cl_ord_id: str, order_id: str) -> SessionOrder | None:
        record = self._by_cl_ord_id.get((session, cl_ord_id)) if cl_ord_id else None
        if record is None and order_id:
            record = self._by_exchange_id.get(order_id)
            if record is not None and record.session != session:
                return None  # another counterparty's order does not exist for this one
        return record

    def _answer_duplicate(
        self,
        session: str,
        cl_ord_id: str,
        fingerprint: tuple[object, ...],
        *,
        for_new: bool,
        response: str = m.RESPONSE_TO_CANCEL,
    ) -> None:
        """A ClOrdID seen before: the same request again gets the order's status, a
        different one is a duplicate and is refused."""
        seen = self._requests[(session, cl_ord_id)]
        record = self._by_cl_ord_id.get((session, cl_ord_id))
        now = self.clock()
        if seen == _canonical(fingerprint) and record is not None:
            ORDERS_RECEIVED.labels("duplicate", "status").inc()
            report = self._status_report(record, now)
            report.text = "duplicate ClOrdID: current status of the order"
            self._emit(report)
            return
        ORDERS_RECEIVED.labels("duplicate", "rejected").inc()
        text = f"duplicate ClOrdID {cl_ord_id}"
        if for_new:
            self._emit(
                m.ExecutionReport(
                    session=session,
                    exchange_order_id=NO_ORDER_ID,
                    cl_ord_id=cl_ord_id,
                    exec_id=self.ids.exec_id(),
                    exec_type=m.EXEC_REJECTED,
                    ord_status=m.STATUS_REJECTED,
                    symbol=str(fingerprint[1]) or "NONE",
                    side=str(fingerprint[2]) if fingerprint[2] in SIDES else "1",
                    order_type="",
                    time_in_force="",
                    quantity=0,
                    leaves=0,
                    cum=0,
                    average_price=Decimal(0),
                    transact_time=now,
                    text=text,
                    reject_reason=m.REJECT_DUPLICATE_ORDER,
                )
            )
            return
        self._outbox.append(
            m.CancelReject(
                session=session,
                cl_ord_id=cl_ord_id,
                orig_cl_ord_id=str(fingerprint[1]) if len(fingerprint) > 1 else "",
                exchange_order_id=record.exchange_order_id if record else NO_ORDER_ID,
                ord_status=record.ord_status if record else m.STATUS_REJECTED,
                response_to=response,
                reason=m.CXL_DUPLICATE_CL_ORD_ID,
                text=text,
                transact_time=now,
            )
        )

    def _cancel_reject(
        self,
        session: str,
        *,
        request: m.CancelRequest | m.ReplaceRequest,
        record: SessionOrder | None,
        response_to: str,
        reason: int,
        text: str,
    ) -> None:
        self._outbox.append(
            m.CancelReject(
                session=session,
                cl_ord_id=request.cl_ord_id,
                orig_cl_ord_id=request.orig_cl_ord_id,
                exchange_order_id=record.exchange_order_id if record else (request.order_id or NO_ORDER_ID),
                ord_status=record.ord_status if record else m.STATUS_REJECTED,
                response_to=response_to,
                reason=reason,
                text=text,
                transact_time=self.clock(),
            )
        )
        REPORTS_SENT.labels("cancel_reject").inc()

    def _parse_terms(
        self,
        symbol: str,
        quantity_text: str,
        order_type_code: str,
        price_text: str | None,
        stop_text: str | None,
    ) -> tuple[str, int, int | None, int | None]:
        order_type = ORDER_TYPES.get(order_type_code)
        if order_type is None:
            raise InvalidRequest(
                me.Reason.BAD_ORDER, f"unsupported order type {order_type_code!r}", m.REJECT_UNSUPPORTED
            )
        book = self.engine.books.get(symbol)
        if book is None:
            raise InvalidRequest(
                me.Reason.UNKNOWN_SYMBOL, f"unknown symbol {symbol!r}", m.REJECT_UNKNOWN_SYMBOL
            )
        quantity = _whole(quantity_text)
        if quantity is None or quantity <= 0:
            raise InvalidRequest(
                me.Reason.BAD_QUANTITY, me.REASON_TEXT[me.Reason.BAD_QUANTITY], m.REJECT_INCORRECT_QUANTITY
            )
        instrument = book.instrument
        wants_price = order_type in (me.LIMIT, me.STOP_LIMIT)
        wants_stop = order_type in (me.STOP, me.STOP_LIMIT)
        price = self._ticks(instrument, price_text, "price") if wants_price else None
        stop = self._ticks(instrument, stop_text, "stop price") if wants_stop else None
        return order_type, quantity, price, stop

    @staticmethod
    def _ticks(instrument: Instrument, text: str | None, what: str) -> int:
        if not text:
            raise InvalidRequest(
                me.Reason.BAD_ORDER, f"{what} is required for this order type", m.REJECT_OTHER
            )
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = Decimal(0)
        ticks = instrument.to_ticks(value) if value.is_finite() else None
        if ticks is None:
            raise InvalidRequest(
                me.Reason.BAD_PRICE,
                f"{what} {text} is not a positive multiple of the tick size {instrument.tick_size}",
                m.REJECT_OTHER,
            )
        return ticks

    def _reason_text(self, reason: str, symbol: str) -> str:
        if reason == me.Reason.HALTED:
            return f"trading halted: {self.engine.halt_reason(symbol) or 'halted'}"
        if reason == me.Reason.OUTSIDE_BAND:
            book = self.engine.books[symbol]
            low, high = book.instrument.to_price(book.band_low), book.instrument.to_price(book.band_high)
            return f"price outside the daily price band {low}-{high}"
        return me.REASON_TEXT.get(reason, reason)

    def _send(
        self,
        record: SessionOrder,
        event: me.Execution,
        now: datetime,
        *,
        orig: str = "",
        code: int | None = None,
    ) -> None:
        self._changed_now(record)
        order = event.order
        instrument = record.instrument
        to_price = instrument.to_price if instrument is not None else Decimal
        average = Decimal(0)
        if event.cum and instrument is not None:
            average = (instrument.tick_size * event.notional / event.cum).quantize(
                AVERAGE_PRICE_PLACES, rounding=ROUND_HALF_EVEN
            ).normalize() + 0
        report = m.ExecutionReport(
            session=record.session,
            exchange_order_id=record.exchange_order_id,
            cl_ord_id=record.cl_ord_id,
            orig_cl_ord_id=orig,
            exec_id=self.ids.exec_id(),
            exec_type=EXEC_TYPE[event.kind],
            ord_status=ORD_STATUS[event.status],
            symbol=order.symbol,
            side=SIDE_CODES.get(order.side, "1"),
            order_type=ORDER_TYPE_CODES.get(order.order_type, ""),
            time_in_force=TIME_IN_FORCE_CODES.get(order.tif, ""),
            quantity=event.quantity,
            leaves=event.leaves,
            cum=event.cum,
            average_price=average,
            transact_time=now,
            price=to_price(event.price) if event.price is not None else None,
            stop_price=to_price(event.stop_price) if event.stop_price is not None else None,
            account=record.account,
            expire_date=_fix_date(order.expire_date),
            max_floor=order.max_floor,
        )
        if event.kind == me.TRADE:
            report.last_qty = event.last_qty
            report.last_price = to_price(event.last_price)
            report.match_id = self.ids.match_id(event.match_id)
            report.liquidity = "2" if event.aggressor else "1"
        elif event.kind == me.TRIGGERED:
            report.restatement_reason = m.RESTATED_MARKET_OPTION
            report.text = TRIGGERED_TEXT
        elif event.reason is not None:
            report.text = record.text or self._reason_text(event.reason, order.symbol)
            if event.kind == me.REJECTED:
                report.reject_reason = (
                    code if code is not None else REJECT_CODE.get(event.reason, m.REJECT_OTHER)
                )
        self._emit(report)

    def _status_report(self, record: SessionOrder, now: datetime) -> m.ExecutionReport:
        order = record.order
        instrument = record.instrument
        to_price = instrument.to_price if instrument is not None else Decimal
        return m.ExecutionReport(
            session=record.session,
            exchange_order_id=record.exchange_order_id,
            cl_ord_id=record.cl_ord_id,
            exec_id=self.ids.exec_id(),
            exec_type=m.EXEC_ORDER_STATUS,
            ord_status=record.ord_status,
            symbol=order.symbol,
            side=SIDE_CODES.get(order.side, "1"),
            order_type=ORDER_TYPE_CODES.get(order.order_type, ""),
            time_in_force=TIME_IN_FORCE_CODES.get(order.tif, ""),
            quantity=order.quantity,
            leaves=order.leaves,
            cum=order.cum,
            average_price=record.average_price(),
            transact_time=now,
            price=to_price(order.price) if order.price is not None else None,
            stop_price=to_price(order.stop_price) if order.stop_price is not None else None,
            account=record.account,
            text=record.text,
            max_floor=order.max_floor,
        )

    def _emit(self, report: m.ExecutionReport) -> None:
        if report.session not in self.counterparties:
            return
        REPORTS_SENT.labels(report.exec_type).inc()
        self._outbox.append(report)


def _whole(text: str) -> int | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        return None
    if not value.is_finite() or value != value.to_integral_value():
        return None
    return int(value)


def _order_terms(request: m.NewOrderRequest | m.ReplaceRequest) -> tuple[object, ...]:
    return (
        request.symbol,
        request.side,
        _whole(request.quantity),
        request.order_type,
        _number(request.price),
        _number(request.stop_price),
        request.time_in_force or "0",
        # Only icebergs add a part: other requests' fingerprints stay as they were.
        *([_whole(request.max_floor)] if request.max_floor else []),
    )


def _number(text: str | None) -> Decimal | None:
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _canonical(fingerprint: tuple[object, ...]) -> str:
    """A request's fingerprint as text that survives the journal: numbers compare by value
    (1500.05 and 1500.050 are the same price)."""
    return json.dumps(
        [format(x.normalize(), "f") if isinstance(x, Decimal) else x for x in fingerprint],
        separators=(",", ":"),
    )


def _saved(record: SessionOrder) -> SavedOrder:
    order = record.order
    return SavedOrder(
        exchange_order_id=record.exchange_order_id,
        session=record.session,
        cl_ord_id=record.cl_ord_id,
        cl_ord_ids=tuple(record.cl_ord_ids),
        orig_cl_ord_id=record.orig_cl_ord_id,
        account=record.account,
        owner=order.owner,
        symbol=order.symbol,
        side=order.side,
        order_type=order.order_type,
        tif=order.tif,
        price=order.price,
        stop_price=order.stop_price,
        quantity=order.quantity,
        leaves=order.leaves,
        cum=order.cum,
        notional=order.notional,
        status=order.status,
        text=record.text,
        fingerprint=record.fingerprint,
        seq=record.seq,
        updated=record.updated,
        expire_date=order.expire_date.isoformat() if order.expire_date else "",
        max_floor=order.max_floor,
    )


def _max_floor(text: str | None) -> int:
    """MaxFloor (111): the shares an iceberg shows at a time; absent, the whole order shows.
    The engine checks it against the quantity, the lot and the order type."""
    if not text:
        return 0
    shares = _whole(text)
    if shares is None or shares <= 0:
        raise InvalidRequest(
            me.Reason.BAD_DISPLAY_QUANTITY,
            f"MaxFloor (111) must be a positive whole number of shares, not {text!r}",
            m.REJECT_INCORRECT_QUANTITY,
        )
    return shares


def _expire_date(request: m.NewOrderRequest, tif: str, now: datetime) -> date | None:
    """A GTD order's last trading date, from ExpireDate (432) or ExpireTime (126, read as
    the market's date); not in the past. Other orders have none."""
    if tif != me.GTD:
        if request.expire_date or request.expire_time:
            raise InvalidRequest(
                me.Reason.BAD_ORDER, "ExpireDate/ExpireTime only go with TimeInForce 6 (GTD)", m.REJECT_OTHER
            )
        return None
    try:
        if request.expire_date:
            expires = datetime.strptime(request.expire_date + "+0530", "%Y%m%d%z").date()
        elif request.expire_time:
            moment = datetime.strptime(request.expire_time.split(".")[0] + "+0000", "%Y%m%d-%H:%M:%S%z")
            expires = _market_date(moment)
        else:
            raise InvalidRequest(
                me.Reason.BAD_ORDER, "a GTD order needs ExpireDate (432) or ExpireTime (126)", m.REJECT_OTHER
            )
    except ValueError:
        raise InvalidRequest(
            me.Reason.BAD_ORDER, "ExpireDate must be YYYYMMDD, ExpireTime a UTCTimestamp", m.REJECT_OTHER
        ) from None
    if expires < _market_date(now):
        raise InvalidRequest(me.Reason.BAD_ORDER, f"expire date {expires} has passed", m.REJECT_OTHER)
    return expires


def _market_date(moment: datetime) -> date:
    """The market's date of a moment (India Standard Time)."""
    return moment.astimezone(IST).date()


def _fix_date(day: date | None) -> str:
    return day.strftime("%Y%m%d") if day is not None else ""
