"""Account statements and contract notes: the ledger's rows → domain documents → CSV or PDF."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta

from svc_funds.app.ports import Document, DocumentFormat, DocumentRenderer, StatementQueries
from svc_funds.domain.model import EXCHANGE_TZ
from svc_funds.domain.statements import (
    ContractNote,
    Statement,
    check_range,
    make_contract_note,
    make_statement,
)
from svc_runtime.errors import NotFound


def _start_of(day: date) -> datetime:
    """Midnight of a trading day (exchange time): days are dates in India Standard Time."""
    return datetime.combine(day, time(0), tzinfo=EXCHANGE_TZ)


class StatementsApp:
    def __init__(
        self,
        queries: StatementQueries,
        renderer: DocumentRenderer,
        user_exists: Callable[[str], Awaitable[bool]],
        charge_names: list[str],
    ) -> None:
        self.queries = queries
        self.renderer = renderer
        self.user_exists = user_exists
        self.charge_names = charge_names

    async def _check_user(self, user_id: str) -> None:
        if not await self.user_exists(user_id):
            raise NotFound(
                f"user {user_id} not found", reason="USER_NOT_FOUND", metadata={"user_id": user_id}
            )

    async def statement(self, user_id: str, start: date, end: date) -> Statement:
        check_range(start, end)
        await self._check_user(user_id)
        rows = await self.queries.statement_rows(
            user_id, _start_of(start), _start_of(end + timedelta(days=1))
        )
        return make_statement(
            user_id,
            start=start,
            end=end,
            opening=rows.opening,
            movements=rows.movements,
            ledger_closing=rows.closing,
        )

    async def contract_note(self, user_id: str, day: date) -> ContractNote:
        await self._check_user(user_id)
        rows = await self.queries.contract_rows(user_id, day)
        return make_contract_note(user_id, day, rows.fills, rows.ledger_net, self.charge_names)

    def render_statement(self, statement: Statement, fmt: DocumentFormat) -> Document:
        return self.renderer.statement(statement, fmt)

    def render_contract_note(self, note: ContractNote, fmt: DocumentFormat) -> Document:
        return self.renderer.contract_note(note, fmt)
