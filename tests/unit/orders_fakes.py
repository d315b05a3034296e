"""In-memory stand-ins for svc_orders' ports (svc_orders/app/ports.py), so the use cases run
as plain unit tests. They keep the contracts the PostgreSQL adapter keeps: a unit of work
changes nothing until it commits, a (user, key) is reserved once, an order is saved only
over the version it was read at, an exec id and a request id are claimed once.

What they do not model is what only a real database shows: row locks held across tasks,
crashes between commits, concurrency. The real-process tests in tests/orders/ keep those."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any

from svc_orders.app.ports import (
    AuditEntry,
    CommandKind,
    ReportClaim,
    ReportEnvelope,
    ReportKey,
    Reservation,
    ReservationGuard,
    StatusAnswer,
    WorkingOrders,
)
from svc_orders.domain.model import (
    ExchangeReport,
    Fill,
    FundsAction,
    Instrument,
    MarketSnapshot,
    Order,
    Side,
    Transition,
)
from svc_orders.domain.risk import RiskLimits, TradingControls
from svc_runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted


@dataclass
class OrderBook:
    """Everything the store holds: what a committed unit of work leaves behind."""

    orders: dict[str, Order] = field(default_factory=dict)
    audit: list[tuple[str, AuditEntry]] = field(default_factory=list)
    commands: list[tuple[CommandKind, str]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (order id, event type)
    fills: list[Fill] = field(default_factory=list)
    funds_actions: list[FundsAction] = field(default_factory=list)
    requests: dict[tuple[str, str], str] = field(default_factory=dict)  # (order, request) → fingerprint
    reports: dict[str, str] = field(default_factory=dict)  # exec id → outcome
    unmatched: list[ReportEnvelope] = field(default_factory=list)
    controls: TradingControls = field(default_factory=TradingControls)

    def copy(self) -> OrderBook:
        return OrderBook(
            orders=dict(self.orders),
            audit=list(self.audit),
            commands=list(self.commands),
            events=list(self.events),
            fills=list(self.fills),
            funds_actions=list(self.funds_actions),
            requests=dict(self.requests),
            reports=dict(self.reports),
            unmatched=list(self.unmatched),
            controls=self.controls,
        )


class MemoryUnitOfWork:
    """Works on a copy of the book; commit puts the copy in place."""

    def __init__(self, store: MemoryOrderStore) -> None:
        self.store = store
        self.book = store.book.copy()
        self.committed = False

    async def __aenter__(self) -> MemoryUnitOfWork:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def commit(self) -> None:
        self.store.book = self.book
        self.store.commits += 1
        self.committed = True
        self.book = self.book.copy()

    async def lock_order(self, user_id: str, order_id: str, *, skip_locked: bool = False) -> Order | None:
        order = self.book.orders.get(order_id)
        return order if order is not None and order.user_id == user_id else None

    async def lock_orders(self, orders: Sequence[Order]) -> dict[str, Order]:
        return {
            o.order_id: current
            for o in orders
            if (current := await self.lock_order(o.user_id, o.order_id)) is not None
        }

    async def delete_reserved(self, user_id: str, order_id: str) -> None:
        if await self.lock_order(user_id, order_id) is not None:
            del self.book.orders[order_id]

    async def save(
        self, transition: Transition, audit: AuditEntry, *, command: CommandKind | None = None
    ) -> None:
        after = transition.after
        stored = self.book.orders.get(after.order_id)
        if stored is None or stored.version != transition.before.version:
            raise Aborted(f"order {after.order_id} changed concurrently", reason="CONCURRENT_MODIFICATION")
        self.book.orders[after.order_id] = after
        self.book.audit.append((after.order_id, audit))
        if transition.event is not None:
            self.book.events.append((after.order_id, transition.event.value))
        if transition.fill is not None:
            self.book.fills.append(transition.fill)
        if transition.funds_action is not None:
            self.book.funds_actions.append(transition.funds_action)
        if command is not None:
            self.book.commands.append((command, after.order_id))

    async def save_changes(
        self, changes: Sequence[tuple[Transition, AuditEntry]], *, command: CommandKind | None = None
    ) -> None:
        for transition, audit in changes:
            await self.save(transition, audit, command=command)

    async def audit_only(self, order: Order, audit: AuditEntry) -> None:
        self.book.audit.append((order.order_id, audit))

    async def claim_request(self, order: Order, request_id: str, kind: str, fingerprint: str) -> str | None:
        key = (order.order_id, request_id)
        if key in self.book.requests:
            return self.book.requests[key]
        self.book.requests[key] = fingerprint
        return None

    async def claim_report(self, exec_id: str, order_id: str, exec_type: str) -> bool:
        if exec_id in self.book.reports:
            return False
        self.book.reports[exec_id] = "claimed"
        return True

    async def claim_reports_and_lock(self, reports: Sequence[ReportKey]) -> list[ReportClaim]:
        assert len({(r.user_id, r.exec_id) for r in reports}) == len(reports), "exec ids must differ"
        return [
            ReportClaim(
                claimed=await self.claim_report(r.exec_id, r.order_id, r.exec_type),
                order=await self.lock_order(r.user_id, r.order_id),
                fill_recorded=r.cumulative_quantity > 0
                and await self.fill_recorded(r.order_id, r.cumulative_quantity),
            )
            for r in reports
        ]

    async def note_report_outcome(self, user_id: str, exec_id: str, outcome: str) -> None:
        self.book.reports[exec_id] = outcome

    async def fill_recorded(self, order_id: str, cumulative_quantity: int) -> bool:
        return any(
            f.order_id == order_id and f.cumulative_quantity == cumulative_quantity for f in self.book.fills
        )

    async def record_unmatched(self, envelope: ReportEnvelope) -> None:
        self.book.unmatched.append(envelope)


@dataclass
class MemoryOrderStore:
    book: OrderBook = field(default_factory=OrderBook)
    commits: int = 0
    # Orders each user may still place before ORDER_RATE_LIMITED (None: no limit).
    order_tokens: int | None = None

    def unit_of_work(self) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self)

    async def reserve(
        self, order: Order, limits: RiskLimits, guard: ReservationGuard | None = None
    ) -> Reservation:
        existing = await self.find_by_key(order.user_id, order.client_order_id)
        if existing is not None:
            return Reservation(existing, created=False)
        if guard is not None:
            guard(self.working_orders_of(order))
        if self.order_tokens is not None:
            if self.order_tokens <= 0:
                raise ResourceExhausted(
                    "too many orders", reason="ORDER_RATE_LIMITED", retry_after_seconds=0.1
                )
            self.order_tokens -= 1
        self.book.orders[order.order_id] = order
        self.commits += 1
        return Reservation(order, created=True)

    def working_orders_of(self, new: Order) -> WorkingOrders:
        working = [o for o in self.book.orders.values() if o.user_id == new.user_id and not o.status.terminal]
        in_symbol = [o for o in working if o.symbol == new.symbol]
        return WorkingOrders(
            count=len(working),
            in_product=len([o for o in working if o.product is new.product]),
            open_buy=sum(o.quantity - o.filled_quantity for o in in_symbol if o.side is Side.BUY),
            open_sell=sum(o.quantity - o.filled_quantity for o in in_symbol if o.side is Side.SELL),
        )

    async def find_by_key(self, user_id: str, client_order_id: str) -> Order | None:
        for order in self.book.orders.values():
            if order.user_id == user_id and order.client_order_id == client_order_id:
                return order
        return None

    async def get(self, user_id: str | None, order_id: str) -> Order | None:
        order = self.book.orders.get(order_id)
        if order is None or (user_id is not None and order.user_id != user_id):
            return None
        return order

    async def stuck_orders(self, older_than: datetime, limit: int) -> list[Order]:
        from svc_orders.domain.model import PRE_EXCHANGE

        stuck = [
            o for o in self.book.orders.values() if o.status in PRE_EXCHANGE and o.update_time < older_than
        ]
        return sorted(stuck, key=lambda o: o.update_time)[:limit]

    async def command_queued(self, order_id: str) -> bool:
        return False

    async def load_controls(self) -> TradingControls:
        return self.book.controls

    async def update_controls(
        self, changes: dict[str, Any], request_id: str, audit: AuditEntry
    ) -> TradingControls:
        self.book.controls = replace(self.book.controls, **changes, version=self.book.controls.version + 1)
        return self.book.controls


@dataclass
class MemoryFunds:
    """svc_funds as the OMS sees it: blocks keyed by order id, refusals on demand."""

    cash: Decimal = Decimal("1000000.00")
    shares: dict[str, int] = field(default_factory=dict)
    blocks: dict[str, tuple[str, Decimal]] = field(default_factory=dict)  # order id → (kind, amount)
    released: list[tuple[str, str]] = field(default_factory=list)
    # The next call raises this instead (once).
    fail_next: Exception | None = None
    has_account: bool = True

    def _maybe_fail(self) -> None:
        if not self.has_account:
            raise NotFound("user not found", reason="USER_NOT_FOUND")
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    async def block_funds(self, order: Order, price: Decimal) -> None:
        self._maybe_fail()
        if order.order_id in self.blocks:
            return
        amount = price * order.quantity
        if amount > self.cash:
            raise FailedPrecondition("insufficient funds", reason="INSUFFICIENT_FUNDS")
        self.cash -= amount
        self.blocks[order.order_id] = ("CASH", amount)

    async def block_holdings(self, order: Order) -> None:
        self._maybe_fail()
        if order.order_id in self.blocks:
            return
        free = self.shares.get(order.symbol, 0)
        if order.quantity > free:
            raise FailedPrecondition("insufficient holdings", reason="INSUFFICIENT_HOLDINGS")
        self.shares[order.symbol] = free - order.quantity
        self.blocks[order.order_id] = ("SHARES", Decimal(order.quantity))

    async def block_active(self, user_id: str, order_id: str) -> bool:
        return order_id in self.blocks

    async def adjust_block(
        self, user_id: str, order_id: str, quantity: int, price: Decimal | None, request_id: str
    ) -> None:
        self._maybe_fail()
        kind, amount = self.blocks[order_id]
        wanted = price * quantity if price is not None else Decimal(quantity)
        if kind == "CASH" and wanted - amount > self.cash:
            raise FailedPrecondition("insufficient funds", reason="INSUFFICIENT_FUNDS")
        if kind == "CASH":
            self.cash -= wanted - amount
        self.blocks[order_id] = (kind, wanted)

    async def release_block(self, user_id: str, order_id: str, reason: str) -> None:
        self.released.append((order_id, reason))
        self.blocks.pop(order_id, None)


@dataclass
class MemoryMarket:
    instruments: dict[str, Instrument] = field(default_factory=dict)
    quotes: dict[str, MarketSnapshot] = field(default_factory=dict)

    def list(self, symbol: str, *, last: str, tick: str = "0.05", lot: int = 1) -> None:
        self.instruments[symbol] = Instrument(symbol, Decimal(tick), lot, previous_close=Decimal(last))
        self.quotes[symbol] = MarketSnapshot(last_price=Decimal(last))

    async def instrument(self, symbol: str) -> Instrument:
        if symbol not in self.instruments:
            raise InvalidArgument(
                f"{symbol} is not a known instrument", reason="UNKNOWN_SYMBOL", field="order.symbol"
            )
        return self.instruments[symbol]

    async def snapshot(self, symbol: str) -> MarketSnapshot:
        return self.cached_snapshot(symbol)

    def cached_snapshot(self, symbol: str) -> MarketSnapshot:
        return self.quotes.get(symbol, MarketSnapshot())


@dataclass
class MemoryExchange:
    answers: dict[str, StatusAnswer] = field(default_factory=dict)
    reconciliations: int = 0
    drained: bool = True

    async def order_status(self, order_id: str) -> StatusAnswer:
        return self.answers.get(order_id, StatusAnswer(report=None))

    async def request_reconciliation(self) -> None:
        self.reconciliations += 1

    async def commands_drained(self) -> bool:
        return self.drained


@dataclass
class SteppingClock:
    at: datetime = field(default_factory=lambda: datetime(2026, 1, 5, 4, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def report(exec_id: str, exec_type: str, **fields: Any) -> ExchangeReport:
    from svc_orders.domain.model import ExchangeStatus, ExecType

    if "ord_status" in fields and isinstance(fields["ord_status"], str):
        fields["ord_status"] = ExchangeStatus(fields["ord_status"])
    return ExchangeReport(exec_id=exec_id, exec_type=ExecType(exec_type), **fields)
