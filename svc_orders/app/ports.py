"""The ports the use cases need: storage with a unit of work, svc_funds, market data and
the executor. Adapters implement them; the use cases never see SQL, NATS or gRPC."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from types import TracebackType
from typing import Protocol

from svc_orders.domain.model import (
    ExchangeReport,
    Instrument,
    MarketSnapshot,
    Order,
    OrderSpec,
    Transition,
)
from svc_orders.domain.risk import RiskLimits, TradingControls
from svc_runtime.errors import ServiceError


@dataclass(frozen=True)
class IntradayExposure:
    """The day's INTRADAY trading, as the square-off needs it."""

    working: list[tuple[str, str, str]]  # (user, order id, symbol) of INTRADAY orders still working
    net: dict[tuple[str, str], int]  # (user, symbol) → shares bought − sold (filled)


class IntradayBook(Protocol):
    async def intraday_exposure(self, since: datetime) -> IntradayExposure:
        """INTRADAY orders created at or after `since`: those still working, and the net
        filled quantity per user and symbol."""
        ...


class CommandKind(StrEnum):
    """What the executor is told to do after a change commits."""

    NEW = "new"
    CANCEL = "cancel"
    REPLACE = "replace"
    STATUS = "status"


@dataclass(frozen=True)
class AuditEntry:
    """Who did what, when, from where, and what the market looked like."""

    action: str  # PLACE, CANCEL, MODIFY, EXCHANGE_REPORT, SWEEP, TRADING_CONTROLS
    actor: str
    request_id: str
    client_ip: str = ""
    snapshot: MarketSnapshot = field(default_factory=MarketSnapshot)
    exec_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ReportEnvelope:
    """An execution report with the routing facts around it."""

    report: ExchangeReport
    order_id: str
    user_id: str
    request_id: str
    payload: bytes = b""
    # How many times this report has been delivered (JetStream's count).
    delivery: int = 1


class UnitOfWork(Protocol):
    """One database transaction; nothing is kept unless `commit` is called."""

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...

    # An order is reached by its user and its id together: the user is the distribution key
    # (docs/deployment.md, "Partitioning by user").
    async def lock_order(self, user_id: str, order_id: str, *, skip_locked: bool = False) -> Order | None:
        """The user's order, locked for this transaction; None if absent (or locked, with
        skip_locked)."""
        ...

    async def lock_orders(self, orders: Sequence[Order]) -> dict[str, Order]:
        """The current rows of those of `orders` that exist, by order id, locked for this
        transaction (in id order, so two transactions locking overlapping sets cannot
        deadlock)."""
        ...

    async def insert_order(self, order: Order) -> None:
        """Record an order the broker creates itself (a contingent leg), as it is; nothing
        if its (user, key) exists already."""
        ...

    async def lock_group(self, oco_group: str) -> list[Order]:
        """The orders of an OCO group, locked for this transaction (in id order)."""
        ...

    async def delete_reserved(self, user_id: str, order_id: str) -> None:
        """Forget a reservation (FUNDS_PENDING) whose funds were refused."""
        ...

    async def save(
        self, transition: Transition, audit: AuditEntry, *, command: CommandKind | None = None
    ) -> None:
        """Write a changed order, its fill, its event (with the outbox row), its audit row,
        its funds action and its executor command."""
        ...

    async def save_changes(
        self, changes: Sequence[tuple[Transition, AuditEntry]], *, command: CommandKind | None = None
    ) -> None:
        """`save` for several changes at once, in their order, each with `command`; an
        order may change more than once, each change continuing from the one before."""
        ...

    async def audit_only(self, order: Order, audit: AuditEntry) -> None:
        """Audit an action that did not change the order."""
        ...

    async def claim_request(self, order: Order, request_id: str, kind: str, fingerprint: str) -> str | None:
        """Record a cancel/modify request id on `order`; returns None when new, else the fingerprint
        it was first used with."""
        ...

    async def claim_reports_and_lock(self, reports: Sequence[ReportKey]) -> list[ReportClaim]:
        """For each report, in one step: record its exec id (not claimed if it was seen
        before), lock its order (the user's: a report naming another user's order finds
        none) and say whether a fill at its cumulative quantity (when > 0) is already
        recorded; orders are locked even for reports seen before. The exec ids must differ."""
        ...

    async def note_report_outcome(self, user_id: str, exec_id: str, outcome: str) -> None: ...

    async def record_unmatched(self, envelope: ReportEnvelope) -> None: ...


@dataclass(frozen=True)
class ReportKey:
    """What claiming a report needs of it."""

    exec_id: str
    user_id: str
    order_id: str
    exec_type: str
    cumulative_quantity: int  # of a fill; 0 otherwise


@dataclass(frozen=True)
class ReportClaim:
    claimed: bool  # False: the exec id was seen before
    order: Order | None  # locked; None if there is no such order
    fill_recorded: bool  # a fill at the report's cumulative quantity is already recorded


@dataclass(frozen=True)
class Reservation:
    order: Order
    created: bool


@dataclass(frozen=True)
class WorkingOrders:
    """A user's working orders as the operators' limits count them."""

    count: int  # every working order of the user
    in_product: int  # … of the new order's product
    open_buy: int  # unfilled shares of working BUY orders in the new order's symbol
    open_sell: int


@dataclass(frozen=True)
class Oversold:
    """Shares an OCO group sold beyond its block and not yet bought back."""

    oco_group: str
    user_id: str
    symbol: str
    product: str
    bought_back: int  # shares the broker's earlier buy-back orders ask for (or bought)
    short: int  # shares still to buy back


# Checks a new order against the user's working orders as they stand, raising the refusal.
ReservationGuard = Callable[[WorkingOrders], None]


@dataclass(frozen=True)
class EventRecord:
    event_id: str
    payload: bytes


@dataclass(frozen=True)
class EventPosition:
    """Where an event stands in a user's stream: its sequence number, its transaction, and
    the oldest transaction still running when it was written (whose events may carry a
    lower number yet commit later)."""

    seq: int
    xid: int
    running_xmin: int


class OrderStore(Protocol):
    def unit_of_work(self) -> UnitOfWork: ...

    async def reserve(
        self, order: Order, limits: RiskLimits, guard: ReservationGuard | None = None
    ) -> Reservation:
        """Record a new order as FUNDS_PENDING unless its (user, key) exists, taking one
        token of the user's order rate (ResourceExhausted, nothing written, when empty).
        A `guard` is run first (unless the key exists) on the user's working orders, read
        while no other guarded reservation of that user can run: what it refuses is not
        written, and what it passes counts for the next one."""
        ...

    async def find_by_key(self, user_id: str, client_order_id: str) -> Order | None: ...

    async def get(self, user_id: str | None, order_id: str) -> Order | None: ...

    async def stuck_orders(self, older_than: datetime, limit: int) -> list[Order]: ...

    async def legs_to_send(self, limit: int) -> list[str]:
        """OCO groups with a broker-made leg still waiting to be sent (FUNDS_PENDING)."""
        ...

    async def oversold_groups(self, limit: int) -> list[Oversold]:
        """OCO groups whose legs sold more shares than the group's TARGET blocked, less
        what the broker's buy-back orders for them ask for (or bought, once over)."""
        ...

    async def command_queued(self, order_id: str) -> bool:
        """Whether a command for the order still waits in the outbox."""
        ...

    async def load_controls(self) -> TradingControls: ...


@dataclass(frozen=True)
class BlockQuote:
    """What svc_funds would block for an order now, and what the order would be charged."""

    amount: Decimal  # rupees (BUY) or shares (SELL)
    order_value: Decimal | None
    charges: tuple[tuple[str, Decimal], ...]
    charges_total: Decimal
    available: Decimal  # free cash (BUY) or free shares (SELL)
    refusal: ServiceError | None  # what the block would be refused with


class FundsPort(Protocol):
    async def block_funds(self, order: Order, price: Decimal) -> None: ...

    async def quote_block(self, user_id: str, spec: OrderSpec, price: Decimal | None) -> BlockQuote:
        """The block `spec` would get at `price` (a SELL's price only values it), without
        blocking anything."""
        ...

    async def block_holdings(self, order: Order) -> None: ...

    async def block_active(self, user_id: str, order_id: str) -> bool: ...

    async def adjust_block(
        self, user_id: str, order_id: str, quantity: int, price: Decimal | None, request_id: str
    ) -> None: ...

    async def release_block(self, user_id: str, order_id: str, reason: str) -> None: ...


class MarketPort(Protocol):
    async def instrument(self, symbol: str) -> Instrument:
        """The instrument; InvalidArgument(UNKNOWN_SYMBOL) if there is none."""
        ...

    async def snapshot(self, symbol: str) -> MarketSnapshot:
        """Latest quote, looked up if no tick has been seen yet."""
        ...

    def cached_snapshot(self, symbol: str) -> MarketSnapshot:
        """Latest quote from ticks seen so far, without I/O."""
        ...


@dataclass(frozen=True)
class StatusAnswer:
    """What the executor says about an order: the exchange's report when the order reached
    it; else whether the executor guarantees it will never send it (so its funds can go)."""

    report: ExchangeReport | None
    never_sent: bool = False


class ExchangePort(Protocol):
    async def order_status(self, order_id: str) -> StatusAnswer: ...

    async def request_reconciliation(self) -> None: ...

    async def commands_drained(self) -> bool:
        """True when every command published so far has been taken by the executor."""
        ...


class FamilyHook(Protocol):
    async def after_change(self, uow: UnitOfWork, transition: Transition) -> None:
        """React, in the same transaction, to a saved change of an order of a contingent
        family (brackets and OCO groups)."""
        ...


class Clock(Protocol):
    def now(self) -> datetime: ...
