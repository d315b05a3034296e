"""What the executor's use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

from svc_exec.domain.commands import Amendment, NewOrder, ReplaceOrder
from svc_exec.domain.model import Addressed, Side, VenueIncident
from svc_exec.domain.orders import OrderSnapshot, OrderView


class Recorded(Enum):
    """Where a command stands after recording it."""

    FRESH = "fresh"  # recorded now: send it
    SENT = "sent"  # recorded and sent before: never again
    UNSURE = "unsure"  # recorded before, send not confirmed: look in the FIX store
    ABANDONED = "abandoned"  # the sweeper gave up on the order before it arrived
    UNKNOWN_ORDER = "unknown_order"  # a cancel or replace for an order never sent


@dataclass(frozen=True)
class Recording:
    outcome: Recorded
    cl_ord_id: str = ""
    orig_cl_ord_id: str = ""
    recorded_at: datetime | None = None


@dataclass(frozen=True)
class SessionProgress:
    next_target_seq: int
    store_created: str


@dataclass(frozen=True)
class StoredIncident:
    id: int
    venue: str
    kind: str
    reason: str
    text: str
    raw: str
    order_id: str
    recorded_at: datetime


class ExecStore(Protocol):
    """svc_exec's PostgreSQL state. Each method is one transaction."""

    async def record_new_orders(self, orders: Sequence[NewOrder]) -> dict[str, Recording]: ...

    async def record_amendment(self, command: Amendment) -> Recording: ...

    async def new_order_sent(self, order_id: str) -> bool | None:
        """Whether the order's New is marked sent; None for an order never recorded or
        abandoned."""
        ...

    async def now(self) -> datetime:
        """The store's clock (the one `sent_at` is stamped with)."""
        ...

    async def unanswered_cancels(self, sent_before: datetime) -> list[tuple[str, str]]:
        """(order id, ClOrdID) of each cancel sent before `sent_before` that is its still
        working order's latest command, neither executed nor refused by the venue."""
        ...

    async def mark_sent(self, command_ids: Sequence[str]) -> None: ...

    async def mark_refused(self, cl_ord_id: str) -> None: ...

    async def order_of(self, cl_ord_id: str) -> str | None: ...

    async def load_view(self, order_id: str) -> OrderView | None: ...

    async def current_cl_ord_id(self, order_id: str) -> str | None: ...

    async def working_orders(self, limit: int) -> list[OrderView]: ...

    async def abandon_if_unknown(self, order_id: str) -> bool: ...

    async def load_progress(self, session_id: str) -> SessionProgress | None: ...

    async def record_incident(self, key: str, venue: str, incident: VenueIncident, order_id: str) -> bool: ...

    async def incidents(self, limit: int) -> tuple[list[StoredIncident], int]: ...

    async def save_progress(
        self, session_id: str, progress: SessionProgress, snapshots: Sequence[OrderSnapshot]
    ) -> None: ...


class OrderEntry(Protocol):
    """The FIX order-entry session. `send_*` return False when quickfix could not put the
    message on the wire (it may still hold it in its store for a resend)."""

    @property
    def logged_on(self) -> bool: ...

    async def wait_logged_on(self, timeout: float) -> bool: ...

    def send_new_order(self, cl_ord_id: str, order: NewOrder) -> bool: ...

    def send_cancel(self, cl_ord_id: str, orig_cl_ord_id: str, order: Amendment) -> bool: ...

    def send_replace(self, cl_ord_id: str, orig_cl_ord_id: str, order: ReplaceOrder) -> bool: ...

    def send_status_request(
        self,
        cl_ord_id: str,
        symbol: str,
        side: Side,
        request_id: str,
        *,
        exchange_order_id: str = "",
        account: str = "",
    ) -> bool: ...

    @property
    def has_mass_status(self) -> bool:
        """Whether the venue's FIX version has OrderMassStatusRequest (4.3 on)."""
        ...

    def send_mass_status_request(self, request_id: str) -> bool: ...

    def in_store(self, cl_ord_id: str, msg_type: str, since: datetime | None) -> bool | None:
        """Whether the outgoing store holds a message of `msg_type` for `cl_ord_id`; None if
        the store cannot tell (another store type, or reset since `since`)."""
        ...


class ReportSink(Protocol):
    """JetStream: publish reports with their dedup ids."""

    async def publish(self, reports: Sequence[Addressed]) -> None:
        """Publish and return once every report is acknowledged."""
        ...

    async def send(self, reports: Sequence[Addressed]) -> Awaitable[None]:
        """Put every report on the wire, in order; the returned awaitable completes once
        all are acknowledged (and raises if any is not)."""
        ...


class InboundCursor(Protocol):
    """The FIX session's incoming sequence, as far as publication is concerned."""

    @property
    def session_key(self) -> str: ...

    @property
    def store_created(self) -> str: ...

    def expected_target(self) -> int: ...

    def published(self, seq: int) -> None: ...

    def safe_next(self, expected_target: int) -> int: ...
