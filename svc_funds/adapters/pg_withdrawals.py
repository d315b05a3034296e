"""Withdrawals' read side and registered bank accounts, in PostgreSQL. Withdrawals themselves
are written by the ledger engine (`pg_ledger`), with their journal entries."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from svc_funds.adapters.pg_ledger import WITHDRAWAL_COLUMNS, withdrawal_from_row
from svc_funds.app.ports import BankAccount
from svc_funds.domain.ledger import Withdrawal


class PgWithdrawalQueries:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def bank_account(self, user_id: str) -> BankAccount | None:
        row = await self.pool.fetchrow(
            "SELECT user_id, account_number, ifsc FROM bank_accounts WHERE user_id = $1", user_id
        )
        return None if row is None else BankAccount(row["user_id"], row["account_number"], row["ifsc"])

    async def set_bank_account(self, account: BankAccount) -> bool:
        status = await self.pool.execute(
            "INSERT INTO bank_accounts (user_id, account_number, ifsc) "
            "SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM accounts WHERE user_id = $1) "
            "ON CONFLICT (user_id) DO UPDATE SET account_number = excluded.account_number, "
            "ifsc = excluded.ifsc, updated_at = now()",
            account.user_id,
            account.account_number,
            account.ifsc,
        )
        return bool(status.endswith(" 1"))

    async def withdrawal(self, withdrawal_id: str) -> Withdrawal | None:
        row = await self.pool.fetchrow(
            f"SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE withdrawal_id = $1", withdrawal_id
        )
        return None if row is None else withdrawal_from_row(row)

    async def withdrawals(
        self, user_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> list[Withdrawal]:
        rows = await self.pool.fetch(
            f"SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE user_id = $1 "
            "AND ($2::timestamptz IS NULL OR (created_at, withdrawal_id) < ($2, $3)) "
            "ORDER BY created_at DESC, withdrawal_id DESC LIMIT $4",
            user_id,
            before[0] if before else None,
            before[1] if before else "",
            limit,
        )
        return [withdrawal_from_row(r) for r in rows]

    async def held(self, limit: int) -> list[Withdrawal]:
        rows = await self.pool.fetch(
            f"SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE state = 'HELD' ORDER BY created_at LIMIT $1",
            limit,
        )
        return [withdrawal_from_row(r) for r in rows]

    async def unsettled_proceeds(self, user_id: str) -> Decimal:
        # `positions` holds only the days end of day has not settled yet.
        value = await self.pool.fetchval(
            "SELECT coalesce(sum(f.value - f.charges), 0) FROM fills f WHERE f.user_id = $1 AND f.side = 'SELL' "
            "AND EXISTS (SELECT 1 FROM positions p WHERE p.user_id = f.user_id AND p.trading_day = f.trading_day "
            "AND p.symbol = f.symbol AND p.product = f.product)",
            user_id,
        )
        return max(Decimal(value), Decimal(0))
