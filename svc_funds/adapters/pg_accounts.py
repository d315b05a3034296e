"""Accounts in PostgreSQL."""

from __future__ import annotations

import asyncpg

from svc_funds.app.ports import CreatedAccount
from svc_funds.domain.accounts import Account

_COLUMNS = "user_id, username, display_name, created_at"


def _account(row: asyncpg.Record) -> Account:
    return Account(row["user_id"], row["username"], row["display_name"], row["created_at"])


class PgAccountStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(
        self, user_id: str, username: str, display_name: str, password_hash: str, request_id: str
    ) -> CreatedAccount | None:
        async with self.pool.acquire() as conn, conn.transaction():
            # The UNIQUE constraints on username and request id decide, never a prior SELECT.
            row = await conn.fetchrow(
                "INSERT INTO accounts (user_id, username, display_name, password_hash, create_request_id) "
                f"VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
                user_id,
                username,
                display_name,
                password_hash,
                request_id or None,
            )
            if row is not None:
                await conn.execute("INSERT INTO cash_balances (user_id) VALUES ($1)", user_id)
                return CreatedAccount(_account(row), created=True)
            if request_id:
                earlier = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM accounts WHERE create_request_id = $1 AND username = $2",
                    request_id,
                    username,
                )
                if earlier is not None:
                    return CreatedAccount(_account(earlier), created=False)
        return None

    async def get(self, user_id: str) -> Account | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM accounts WHERE user_id = $1", user_id)
        return None if row is None else _account(row)

    async def credentials(self, username: str) -> tuple[Account, str] | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, password_hash FROM accounts WHERE username = $1", username
        )
        return None if row is None else (_account(row), row["password_hash"])

    async def list(self, after: str, limit: int) -> list[Account]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM accounts WHERE user_id > $1 ORDER BY user_id LIMIT $2", after, limit
        )
        return [_account(r) for r in rows]
