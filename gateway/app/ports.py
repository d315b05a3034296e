"""What the edge's use cases need from the services (implemented in `gateway.adapters`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from brokermesh.marketdata.v1 import marketdata_pb2
from brokermesh.orders.v1 import orders_pb2


class CredentialsVerifier(Protocol):
    async def verify_credentials(self, username: str, password: str) -> str:
        """The user id; raises Unauthenticated for an unknown user or a wrong password."""
        ...


class QuoteSnapshots(Protocol):
    async def latest_quotes(self, symbols: Sequence[str]) -> tuple[list[marketdata_pb2.Quote], list[str]]:
        """The latest quote of each known symbol, and the unknown symbols."""
        ...


class OrderUpdates(Protocol):
    def order_updates(self, user_id: str, after_event_id: str) -> AsyncIterator[orders_pb2.OrderEvent]:
        """The user's order events after `after_event_id` (all live ones if empty)."""
        ...


class SpentTickets(Protocol):
    async def spend(self, ticket_id: str) -> bool:
        """True the first time a ticket id is spent, False ever after (for longer than any
        ticket lives); raises Unavailable when it cannot tell (never guesses True)."""
        ...
