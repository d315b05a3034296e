"""Read models: balances, ledger history and blocks, straight from PostgreSQL."""

from __future__ import annotations

import asyncpg

from svc_funds.adapters.pg_ledger import BLOCK_COLUMNS, block_from_row
from svc_funds.app.ports import EntryRow, FundsRow
from svc_funds.domain.ledger import Block
from svc_funds.domain.model import BlockState
from svc_runtime.replica import ReplicaReads


class PgFundsQueries:
    def __init__(self, pool: asyncpg.Pool, reads: ReplicaReads | None = None) -> None:
        self.pool = pool
        # Ledger pages may come from a streaming replica (svc_runtime.replica).
        self.reads = reads

    async def funds(self, user_id: str) -> FundsRow | None:
        row = await self.pool.fetchrow(
            "SELECT user_id, available, blocked, dues, updated_at FROM cash_balances WHERE user_id = $1",
            user_id,
        )
        if row is None:
            return None
        return FundsRow(row["user_id"], row["available"], row["blocked"], row["dues"], row["updated_at"])

    async def user_exists(self, user_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT true FROM accounts WHERE user_id = $1", user_id))

    async def entries(self, user_id: str, before: int | None, limit: int) -> list[EntryRow]:
        pool = self.pool if self.reads is None else self.reads.pool_for(user_id)
        rows = await pool.fetch(
            "SELECT entry_id, txn_id, user_id, account, unit, amount, balance_after, kind, order_id, exec_id, "
            "request_id, description, created_at, tag FROM entries "
            "WHERE user_id = $1 AND ($2::bigint IS NULL OR entry_id < $2) ORDER BY entry_id DESC LIMIT $3",
            user_id,
            before,
            limit,
        )
        return [EntryRow(**dict(r)) for r in rows]

    async def block(self, order_id: str) -> Block | None:
        row = await self.pool.fetchrow(f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE order_id = $1", order_id)
        return None if row is None else block_from_row(row)

    async def blocks(
        self, user_id: str | None, state: BlockState | None, after: str, limit: int
    ) -> list[Block]:
        rows = await self.pool.fetch(
            f"SELECT {BLOCK_COLUMNS} FROM blocks "
            "WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR state = $2) AND order_id > $3 "
            "ORDER BY order_id LIMIT $4",
            user_id,
            None if state is None else str(state),
            after,
            limit,
        )
        return [block_from_row(r) for r in rows]
