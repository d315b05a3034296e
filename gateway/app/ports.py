"""What the edge's use cases need from the services (implemented in `gateway.adapters`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from brokermesh.marketdata.v1 import marketdata_pb2
from gateway.domain.sessions import SessionRecord


class CredentialsVerifier(Protocol):
    async def verify_credentials(self, username: str, password: str) -> str:
        """The user id; raises Unauthenticated for an unknown user or a wrong password."""
        ...


class QuoteSnapshots(Protocol):
    async def latest_quotes(self, symbols: Sequence[str]) -> tuple[list[marketdata_pb2.Quote], list[str]]:
        """The latest quote of each known symbol, and the unknown symbols."""
        ...


class SpentTickets(Protocol):
    async def spend(self, ticket_id: str) -> bool:
        """True the first time a ticket id is spent, False ever after (for longer than any
        ticket lives); raises Unavailable when it cannot tell (never guesses True)."""
        ...


class SessionRecords(Protocol):
    """Sessions shared by every gateway process. Each method raises Unavailable when it
    cannot tell (never guesses)."""

    async def begin(self, session: str, record: SessionRecord) -> None: ...

    async def get(self, session: str) -> tuple[SessionRecord, int] | None:
        """The record and its revision, or None for a session unknown (or long over)."""
        ...

    async def replace(self, session: str, record: SessionRecord, revision: int) -> bool:
        """Write `record` if the session is still at `revision`; False if another write won."""
        ...

    async def revoke(self, session: str, until: float) -> None:
        """End the session for every process (its tokens are refused, its streams end)."""
        ...


class RequestRatePort(Protocol):
    """A token bucket per caller: `rate` requests per second, bursts of `burst` (across every
    gateway process, where shared)."""

    rate: float
    burst: int

    @property
    def window_seconds(self) -> float: ...

    async def take(self, key: str, now: float) -> float:
        """0.0 if the request may proceed (and is counted), else seconds until it may."""
        ...

    def remaining(self, key: str, now: float) -> tuple[int, float]:
        """Whole requests `key` may still make at once, and seconds until its burst is full."""
        ...


class StreamSlotsPort(Protocol):
    """At most `per_user` open streams per user (across every gateway process, where shared)."""

    per_user: int

    async def take(self, user_id: str) -> bool:
        """A slot for a new stream of the user; False when the user has `per_user` open."""
        ...

    def release(self, user_id: str) -> None:
        """Give back one of the user's slots (the stream ended)."""
        ...

    def open_streams(self, user_id: str) -> int: ...
