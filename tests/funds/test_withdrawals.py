"""Withdrawals through svc_funds' gRPC API, paid by the simulated bank: held at once, paid out
or returned exactly once, never more than is withdrawable, and audited."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import grpc
import pytest

from brokermesh.funds.v1 import funds_pb2
from svc_funds.settings import BANK_SIM_DELAY_MS
from svc_runtime import db
from tests.funds.conftest import StartFunds
from tests.funds.support import FundsClient, dec, rpc_error
from tests.funds.test_acceptance import client_of
from tests.support.polling import eventually

FAILING_ACCOUNT = "999900000001"


async def with_bank_account(funds: FundsClient, deposit: str, number: str = "50100012345678") -> str:
    user = await funds.open_account(deposit)
    await funds.funds.SetBankAccount(
        funds_pb2.SetBankAccountRequest(
            bank_account=funds_pb2.BankAccount(
                name=f"users/{user}/bankAccount", account_number=number, ifsc="hdfc0000001"
            )
        )
    )
    return user


async def withdraw(funds: FundsClient, user: str, amount: str, request_id: str) -> funds_pb2.Withdrawal:
    return await funds.funds.CreateWithdrawal(
        funds_pb2.CreateWithdrawalRequest(parent=f"users/{user}", amount=dec(amount), request_id=request_id)
    )


async def state_of(funds: FundsClient, withdrawal: funds_pb2.Withdrawal) -> funds_pb2.Withdrawal:
    return await funds.funds.GetWithdrawal(funds_pb2.GetWithdrawalRequest(name=withdrawal.name))


async def settled(funds: FundsClient, withdrawal: funds_pb2.Withdrawal) -> funds_pb2.Withdrawal:
    async def done() -> funds_pb2.Withdrawal | None:
        now = await state_of(funds, withdrawal)
        return None if now.state == funds_pb2.WITHDRAWAL_STATE_HELD else now

    result: funds_pb2.Withdrawal = await eventually(done, timeout=20)
    return result


async def test_a_withdrawal_is_held_then_paid_out_once(start_funds: StartFunds) -> None:
    funds = await start_funds(bank_delay_ms=300)
    user = await with_bank_account(funds, "10000.00")
    held = await withdraw(funds, user, "2500.25", "w-1")
    assert held.state == funds_pb2.WITHDRAWAL_STATE_HELD
    assert held.bank_account.account_number == "50100012345678" and held.bank_account.ifsc == "HDFC0000001"
    balance = await funds.get_funds(user)
    assert (balance.available.value, balance.total.value) == ("7499.75", "7499.75")

    paid = await settled(funds, held)
    assert paid.state == funds_pb2.WITHDRAWAL_STATE_PAID and paid.bank_reference
    again = await withdraw(funds, user, "2500.25", "w-1")  # a retry: the same withdrawal, as it is now
    assert (again.withdrawal_id, again.state) == (held.withdrawal_id, funds_pb2.WITHDRAWAL_STATE_PAID)
    assert (await funds.get_funds(user)).available.value == "7499.75"
    kinds = await funds.sql(
        "SELECT kind, count(*) AS n FROM journal WHERE request_id = $1 GROUP BY kind ORDER BY kind",
        held.withdrawal_id,
    )
    assert [(r["kind"], r["n"]) for r in kinds] == [("WITHDRAWAL", 1), ("WITHDRAWAL_PAID", 1)]
    [bank] = await funds.sql("SELECT balance FROM house_balances WHERE account = 'house:payouts'")
    assert bank["balance"] == 0
    listed = await funds.funds.ListWithdrawals(funds_pb2.ListWithdrawalsRequest(parent=f"users/{user}"))
    assert [w.withdrawal_id for w in listed.withdrawals] == [held.withdrawal_id]
    assert await funds.violations() == []


async def test_a_withdrawal_the_bank_refuses_comes_back_to_available_cash(start_funds: StartFunds) -> None:
    funds = await start_funds(bank_failing_accounts=(FAILING_ACCOUNT,))
    user = await with_bank_account(funds, "1000.00", number=FAILING_ACCOUNT)
    held = await withdraw(funds, user, "400.00", "w-1")
    returned = await settled(funds, held)
    assert returned.state == funds_pb2.WITHDRAWAL_STATE_RETURNED and "refused" in returned.failure
    assert (await funds.get_funds(user)).available.value == "1000.00"
    entries = [e for e in await funds.entries(user) if e.kind.startswith("WITHDRAWAL")]
    assert sorted((e.kind, e.amount.value) for e in entries) == [
        ("WITHDRAWAL", "-400.00"),
        ("WITHDRAWAL_RETURNED", "400.00"),
    ]
    assert await funds.violations() == []


async def test_withdrawals_are_refused_beyond_the_withdrawable_cash_or_without_an_account(
    funds: FundsClient,
) -> None:
    user = await with_bank_account(funds, "1000.00")
    await funds.block_funds(user, "ord_w1", 1, "300.00")
    short = await rpc_error(withdraw(funds, user, "700.01", "w-1"))
    assert (short.code, short.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert short.metadata["available"] == "700.00"
    no_account = await funds.open_account("1000.00")
    missing = await rpc_error(withdraw(funds, no_account, "1.00", "w-1"))
    assert (missing.code, missing.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_BANK_ACCOUNT")
    bad = await rpc_error(
        funds.funds.SetBankAccount(
            funds_pb2.SetBankAccountRequest(
                bank_account=funds_pb2.BankAccount(
                    name=f"users/{user}/bankAccount", account_number="12AB", ifsc="HDFC0000001"
                )
            )
        )
    )
    assert (bad.code, bad.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BANK_ACCOUNT")
    assert Decimal((await funds.get_funds(user)).available.value) == Decimal("700.00")


async def test_the_audit_notices_a_withdrawal_whose_state_its_journal_does_not_bear_out(
    funds: FundsClient,
) -> None:
    user = await with_bank_account(funds, "1000.00")
    held = await withdraw(funds, user, "100.00", "w-1")
    await settled(funds, held)
    # A withdrawal's record changed behind the ledger's back: it says RETURNED, while the
    # journal holds its payout and no return.
    await funds.sql("UPDATE withdrawals SET state = 'RETURNED' WHERE withdrawal_id = $1", held.withdrawal_id)
    found = await funds.violations()
    assert any("I4" in v and held.withdrawal_id in v for v in found), found
    await funds.sql("UPDATE withdrawals SET state = 'PAID' WHERE withdrawal_id = $1", held.withdrawal_id)
    assert await funds.violations() == []


@pytest.mark.e2e
@pytest.mark.slow
async def test_kill_9_after_the_bank_was_asked_still_pays_out_exactly_once(make_stack) -> None:  # type: ignore[no-untyped-def]
    # The bank takes its time: the payout is asked for, then svc_funds dies before it answers.
    stack = await make_stack(["svc_funds"], extra_env={BANK_SIM_DELAY_MS: "600000"})
    funds = client_of(stack)
    user = await with_bank_account(funds, "5000.00")
    held = await withdraw(funds, user, "1234.56", "w-kill")
    await eventually(
        lambda: funds.sql("SELECT 1 FROM bank_sim_payouts WHERE withdrawal_id = $1", held.withdrawal_id)
    )
    await stack.kill("svc_funds")
    await funds.close()
    # The bank pays while the broker is down; the restarted service must settle it once.
    conn = await asyncpg.connect(
        db.asyncpg_dsn(stack.plan.database_url), server_settings={"search_path": "funds"}
    )
    try:
        await conn.execute(
            "UPDATE bank_sim_payouts SET settles_at = clock_timestamp() WHERE withdrawal_id = $1",
            held.withdrawal_id,
        )
    finally:
        await conn.close()
    await stack.start_service("svc_funds")
    funds = client_of(stack)
    paid = await settled(funds, held)
    assert paid.state == funds_pb2.WITHDRAWAL_STATE_PAID
    retried = await withdraw(funds, user, "1234.56", "w-kill")
    assert (retried.withdrawal_id, retried.state) == (held.withdrawal_id, funds_pb2.WITHDRAWAL_STATE_PAID)
    [row] = await funds.sql(
        "SELECT count(*) FILTER (WHERE kind = 'WITHDRAWAL') AS held, "
        "count(*) FILTER (WHERE kind = 'WITHDRAWAL_PAID') AS paid FROM journal WHERE request_id = $1",
        held.withdrawal_id,
    )
    assert (row["held"], row["paid"]) == (1, 1)
    assert (await funds.get_funds(user)).available.value == "3765.44"
    assert await funds.violations() == []
    await funds.close()
