"""Withdrawals: money out to the user's registered bank account.

A withdrawal is held first (one ledger transaction takes it from available cash to
`house:payouts` and records the withdrawal as HELD); the payout loop then asks the bank to
pay it and, when the bank answers, settles it exactly once: paid out (to `house:bank`) or
returned to the user. Every step's state is in PostgreSQL, and every step is safe to repeat
(the bank is asked by withdrawal id; settling a withdrawal that is no longer HELD changes
nothing), so a crash between any two steps is finished by the next loop, here or in a
replica.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from decimal import Decimal

from prometheus_client import Counter

from svc_funds.app.engine import LedgerEngine
from svc_funds.app.ports import BankAccount, PayoutInstruction, Payouts, WithdrawalQueries
from svc_funds.domain import operations as ops
from svc_funds.domain.ledger import Withdrawal
from svc_funds.domain.model import WithdrawalState
from svc_runtime import aio
from svc_runtime.errors import FailedPrecondition, NotFound
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)

WITHDRAWALS_SETTLED = Counter(
    "funds_withdrawals_settled_total", "Withdrawals the bank answered, by outcome", ["outcome"]
)
PAYOUT_ERRORS = Counter("funds_payout_errors_total", "Failed calls to the payout bank, by step", ["step"])


def _not_found(withdrawal_id: str) -> NotFound:
    return NotFound(
        f"withdrawal {withdrawal_id} not found",
        reason="WITHDRAWAL_NOT_FOUND",
        metadata={"withdrawal_id": withdrawal_id},
    )


class WithdrawalsApp:
    def __init__(self, engine: LedgerEngine, queries: WithdrawalQueries) -> None:
        self.engine = engine
        self.queries = queries

    async def set_bank_account(self, account: BankAccount) -> BankAccount:
        if not await self.queries.set_bank_account(account):
            raise NotFound(
                f"user {account.user_id} not found",
                reason="USER_NOT_FOUND",
                metadata={"user_id": account.user_id},
            )
        return account

    async def bank_account(self, user_id: str) -> BankAccount:
        account = await self.queries.bank_account(user_id)
        if account is None:
            raise FailedPrecondition(
                f"user {user_id} has no registered bank account",
                reason="NO_BANK_ACCOUNT",
                metadata={"user_id": user_id},
            )
        return account

    async def request(self, user_id: str, amount: Decimal, request_id: str) -> Withdrawal:
        """Hold `amount` for a payout; a retry with the same request id answers with the
        same withdrawal, as it is now."""
        account = await self.bank_account(user_id)
        # Read before the hold: a sale settling meanwhile only lowers it (more withdrawable
        # than this says is never allowed: new proceeds arrive after this read, as cash the
        # hold may then use — the gap is one sale's proceeds for one request's duration).
        withheld = await self.queries.unsettled_proceeds(user_id)
        result = await self.engine.execute(
            ops.RequestWithdrawal(
                user_id,
                amount,
                request_id,
                new_id("wd"),
                account.account_number,
                account.ifsc,
                withheld,
            )
        )
        assert isinstance(result, Withdrawal)
        current = await self.queries.withdrawal(result.withdrawal_id)
        return current or result

    async def get(self, user_id: str, withdrawal_id: str) -> Withdrawal:
        found = await self.queries.withdrawal(withdrawal_id)
        if found is None or found.user_id != user_id:
            raise _not_found(withdrawal_id)
        return found

    async def list(self, user_id: str, before: tuple[datetime, str] | None, limit: int) -> list[Withdrawal]:
        return await self.queries.withdrawals(user_id, before, limit)


class PayoutLoop:
    """Sends HELD withdrawals to the bank and settles those it has answered."""

    def __init__(
        self, engine: LedgerEngine, queries: WithdrawalQueries, payouts: Payouts, *, interval: float = 0.2
    ) -> None:
        self.engine = engine
        self.queries = queries
        self.payouts = payouts
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        # The database or the bank may be down: the next round tries again.
        await aio.every(
            self.interval,
            stop,
            self.once,
            what="payout round",
            log=log,
            on_error=PAYOUT_ERRORS.labels("round").inc,
        )

    async def once(self) -> int:
        """One round over the HELD withdrawals; returns how many it settled."""
        settled = 0
        for w in await self.queries.held(limit=200):
            await self.payouts.send(PayoutInstruction(w.withdrawal_id, w.account_number, w.ifsc, w.amount))
            outcome = await self.payouts.outcome(w.withdrawal_id)
            if outcome is None:
                continue
            done = await self.engine.execute(
                ops.SettleWithdrawal(
                    w.user_id, w.withdrawal_id, outcome.paid, outcome.bank_reference, outcome.failure
                )
            )
            assert isinstance(done, Withdrawal)
            if done.state is WithdrawalState.RETURNED:
                log.warning(
                    "withdrawal returned by the bank",
                    extra={"withdrawal_id": w.withdrawal_id, "failure": outcome.failure},
                )
            WITHDRAWALS_SETTLED.labels(str(done.state)).inc()
            settled += 1
        return settled
