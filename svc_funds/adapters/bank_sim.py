"""A simulated bank for payouts: it accepts every payout and answers a moment later, paid or
(for the accounts it is told to refuse) failed. Its book is its own table, so like a real bank
it remembers what it was asked across restarts of svc_funds, and asking twice pays once."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta

import asyncpg

from svc_funds.app.ports import PayoutInstruction, PayoutOutcome

FAILURE = "the beneficiary bank refused the credit: account closed or frozen"


class SimulatedBank:
    def __init__(
        self, pool: asyncpg.Pool, *, failing_accounts: Collection[str] = (), delay: timedelta = timedelta(0)
    ) -> None:
        self.pool = pool
        self.failing_accounts = frozenset(failing_accounts)
        self.delay = delay

    async def send(self, instruction: PayoutInstruction) -> None:
        await self.pool.execute(
            "INSERT INTO bank_sim_payouts (withdrawal_id, account_number, amount, succeeds, settles_at) "
            "VALUES ($1, $2, $3, $4, clock_timestamp() + $5::interval) ON CONFLICT (withdrawal_id) DO NOTHING",
            instruction.withdrawal_id,
            instruction.account_number,
            instruction.amount,
            instruction.account_number not in self.failing_accounts,
            self.delay,
        )

    async def outcome(self, withdrawal_id: str) -> PayoutOutcome | None:
        row = await self.pool.fetchrow(
            "SELECT succeeds FROM bank_sim_payouts WHERE withdrawal_id = $1 AND settles_at <= clock_timestamp()",
            withdrawal_id,
        )
        if row is None:
            return None
        if row["succeeds"]:
            return PayoutOutcome(paid=True, bank_reference=f"SIMB{withdrawal_id.upper()}")
        return PayoutOutcome(paid=False, failure=FAILURE)
