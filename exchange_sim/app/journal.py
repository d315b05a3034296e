"""What the exchange keeps across restarts, like a real venue: every counterparty's order as
it last stood (working orders go back into the books, finished ones still answer status
requests) and every ClOrdID a counterparty has used (a resend after the restart is still
recognised). The journal behind `OrderJournal` makes each change durable before the report
that announces it leaves (order_entry), so nothing a counterparty was told is ever lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SavedOrder:
    """One order as it stands; prices in ticks, quantities in shares."""

    exchange_order_id: str
    session: str
    cl_ord_id: str
    cl_ord_ids: tuple[str, ...]
    orig_cl_ord_id: str
    account: str
    owner: str
    symbol: str
    side: int
    order_type: str
    tif: str
    price: int | None
    stop_price: int | None
    quantity: int
    leaves: int
    cum: int
    notional: int
    status: str
    text: str
    fingerprint: str
    seq: int  # arrival order: restored orders keep their time priority
    updated: float  # unix seconds of the last change
    expire_date: str = ""  # ISO date of a GTD order
    max_floor: int = 0  # display quantity of an iceberg order


@dataclass(frozen=True, slots=True)
class SavedRequest:
    """A ClOrdID a counterparty used, with what its request said."""

    session: str
    cl_ord_id: str
    fingerprint: str
    at: float  # unix seconds


@dataclass
class Saved:
    # Unix seconds since which the journal holds every order: finished orders that ended
    # before this may be forgotten (retention), working ones never are.
    since: float
    orders: list[SavedOrder] = field(default_factory=list)
    requests: list[SavedRequest] = field(default_factory=list)


class OrderJournal(Protocol):
    def load(self) -> Saved:
        """Everything kept, with finished orders past retention already left out."""
        ...

    def append(self, orders: Sequence[SavedOrder], requests: Sequence[SavedRequest]) -> None:
        """Durable when it returns."""
        ...
