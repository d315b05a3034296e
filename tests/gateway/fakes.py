"""Fakes at the gateway's ports, for tests without the servers behind them."""

from __future__ import annotations

from svc_runtime.errors import Unavailable


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
