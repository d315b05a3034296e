"""Fakes at the gateway's ports, for tests without the servers behind them."""

from __future__ import annotations

from gateway.domain.sessions import SessionRecord
from svc_runtime.errors import Unauthenticated, Unavailable
from svc_runtime.tokens import RevokedSessions


class MemorySpentTickets:
    def __init__(self) -> None:
        self.spent: set[str] = set()
        self.reachable = True

    async def spend(self, ticket_id: str) -> bool:
        if not self.reachable:
            raise Unavailable("unreachable")
        if ticket_id in self.spent:
            return False
        self.spent.add(ticket_id)
        return True


class MemorySessions:
    """Session records in a dict, revocations straight into the process's revoked set."""

    def __init__(self, revoked: RevokedSessions) -> None:
        self.records: dict[str, tuple[SessionRecord, int]] = {}
        self.revoked = revoked

    async def begin(self, session: str, record: SessionRecord) -> None:
        self.records[session] = (record, 1)

    async def get(self, session: str) -> tuple[SessionRecord, int] | None:
        return self.records.get(session)

    async def replace(self, session: str, record: SessionRecord, revision: int) -> bool:
        held = self.records.get(session)
        if held is None or held[1] != revision:
            return False
        self.records[session] = (record, revision + 1)
        return True

    async def revoke(self, session: str, until: float) -> None:
        self.revoked.add(session, until)


class FakeAccounts:
    """svc_funds' credential check for a few known users (username → user id)."""

    def __init__(self, users: dict[tuple[str, str], str]) -> None:
        self.users = users

    async def verify_credentials(self, username: str, password: str) -> str:
        user_id = self.users.get((username, password))
        if user_id is None:
            raise Unauthenticated("invalid username or password")
        return user_id
