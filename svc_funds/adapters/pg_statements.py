"""What statements and contract notes are made of, read from the journal in one snapshot."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal

import asyncpg

from svc_funds.app.ports import ContractRows, StatementRows
from svc_funds.domain.model import CURRENCY, Side
from svc_funds.domain.statements import ContractFill, Movement

# A journal transaction's net effect on the user's rupee accounts (cash, blocked, dues).
MOVEMENTS = """
SELECT e.txn_id, min(e.created_at) AS posted_at, j.kind, j.description, coalesce(j.order_id, '') AS order_id,
       sum(e.amount) AS amount
FROM entries e JOIN journal j USING (txn_id)
WHERE e.user_id = $1 AND e.unit = $2 AND e.created_at >= $3 AND e.created_at < $4
GROUP BY e.txn_id, j.kind, j.description, j.order_id
HAVING sum(e.amount) <> 0
ORDER BY min(e.entry_id)
"""
SUM_BEFORE = (
    "SELECT coalesce(sum(amount), 0) FROM entries WHERE user_id = $1 AND unit = $2 AND created_at < $3"
)
FILLS = """
SELECT exec_id, order_id, symbol, side, product, quantity, price, value, executed_at
FROM fills WHERE user_id = $1 AND trading_day = $2 ORDER BY executed_at, exec_id
"""
CHARGES = """
SELECT exec_id, description AS name, -sum(amount) AS amount FROM entries
WHERE user_id = $1 AND kind = 'CHARGES' AND exec_id = ANY($2::text[]) GROUP BY exec_id, description
"""
FILLS_NET = "SELECT coalesce(sum(amount), 0) FROM entries WHERE user_id = $1 AND unit = $2 AND exec_id = ANY($3::text[])"


class PgStatementQueries:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def statement_rows(self, user_id: str, start: datetime, end: datetime) -> StatementRows:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            opening = await conn.fetchval(SUM_BEFORE, user_id, CURRENCY, start)
            rows = await conn.fetch(MOVEMENTS, user_id, CURRENCY, start, end)
            closing = await conn.fetchval(SUM_BEFORE, user_id, CURRENCY, end)
        movements = [
            Movement(r["txn_id"], r["posted_at"], r["kind"], r["description"], r["order_id"], r["amount"])
            for r in rows
        ]
        return StatementRows(Decimal(opening), movements, Decimal(closing))

    async def contract_rows(self, user_id: str, day: date) -> ContractRows:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            fills = await conn.fetch(FILLS, user_id, day)
            exec_ids = [f["exec_id"] for f in fills]
            charges = await conn.fetch(CHARGES, user_id, exec_ids)
            net = await conn.fetchval(FILLS_NET, user_id, CURRENCY, exec_ids)
        by_fill: dict[str, dict[str, Decimal]] = defaultdict(dict)
        for c in charges:
            by_fill[c["exec_id"]][c["name"]] = c["amount"]
        return ContractRows(
            [
                ContractFill(
                    f["exec_id"],
                    f["order_id"],
                    f["symbol"],
                    Side(f["side"]),
                    f["product"],
                    f["quantity"],
                    f["price"],
                    f["value"],
                    f["executed_at"],
                    by_fill.get(f["exec_id"], {}),
                )
                for f in fills
            ],
            Decimal(net),
        )
