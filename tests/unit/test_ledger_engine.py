"""LedgerEngine (svc_funds/app/engine.py) over an in-memory ledger store: batching, a
refused command failing alone, idempotent retries, settlement of a fill, and the retry and
isolation paths of a failing transaction. Real concurrency and crashes stay with tests/funds/."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from svc_funds.app.engine import LedgerEngine
from svc_funds.domain.charges import ZERO_SCHEDULE
from svc_funds.domain.ledger import Block
from svc_funds.domain.model import BlockState, Product, Side
from svc_funds.domain.operations import (
    AdjustBlock,
    ApplyReport,
    BlockCash,
    BlockShares,
    Deposit,
    ExecReport,
    ReleaseBlock,
    ReportResult,
    Withdraw,
)
from svc_runtime.errors import ServiceError, Unavailable
from tests.unit.funds_fakes import Conflict, MemoryLedger

NOW = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)
D = Decimal


@pytest.fixture
async def ledger() -> MemoryLedger:
    ledger = MemoryLedger()
    ledger.open("u1", "10000.00", NOW)
    ledger.open("u2", "500.00", NOW)
    ledger.give_shares("u1", "TCS", 10, NOW)
    return ledger


@pytest.fixture
async def engine(ledger: MemoryLedger) -> AsyncIterator[LedgerEngine]:
    engine = LedgerEngine(ledger, ZERO_SCHEDULE, clock=lambda: NOW, writers=1)
    engine.start()
    yield engine
    await engine.stop()


def buy_block(order_id: str, user: str = "u1", quantity: int = 10, price: str = "100.00") -> BlockCash:
    return BlockCash(user, order_id, "INFY", quantity, D(price), Product.CNC)


async def test_a_cash_block_moves_available_to_blocked(engine: LedgerEngine, ledger: MemoryLedger) -> None:
    block = await engine.execute(buy_block("o1"))
    assert isinstance(block, Block) and block.remaining == D("1000.00")
    assert (ledger.cash["u1"].available, ledger.cash["u1"].blocked) == (D("9000.00"), D("1000.00"))


async def test_a_repeated_block_is_the_same_block_and_other_terms_are_refused(
    engine: LedgerEngine, ledger: MemoryLedger
) -> None:
    await engine.execute(buy_block("o1"))
    again = await engine.execute(buy_block("o1"))
    assert isinstance(again, Block) and again.order_id == "o1"
    assert ledger.cash["u1"].blocked == D("1000.00")
    with pytest.raises(ServiceError) as refused:
        await engine.execute(buy_block("o1", quantity=11))
    assert refused.value.reason == "BLOCK_TERMS_DIFFER"


async def test_in_one_batch_a_refused_command_fails_alone(engine: LedgerEngine, ledger: MemoryLedger) -> None:
    results = await engine.execute_all(
        [buy_block("o1"), buy_block("o2", user="u2"), buy_block("o3", quantity=5)]
    )
    assert isinstance(results[1], ServiceError) and results[1].reason == "INSUFFICIENT_FUNDS"
    assert isinstance(results[0], Block) and isinstance(results[2], Block)
    assert ledger.cash["u2"].blocked == D("0.00") and ledger.cash["u1"].blocked == D("1500.00")
    assert ledger.transactions == 1


async def test_concurrent_submissions_share_a_transaction(engine: LedgerEngine, ledger: MemoryLedger) -> None:
    await asyncio.gather(*(engine.execute(buy_block(f"o{i}", quantity=1)) for i in range(20)))
    assert ledger.cash["u1"].blocked == D("2000.00")
    assert ledger.transactions < 20


async def test_a_sell_blocks_shares_and_a_release_gives_them_back(
    engine: LedgerEngine, ledger: MemoryLedger
) -> None:
    await engine.execute(BlockShares("u1", "s1", "TCS", 4, Product.CNC))
    assert (ledger.shares[("u1", "TCS")].free, ledger.shares[("u1", "TCS")].blocked) == (6, 4)
    with pytest.raises(ServiceError) as refused:
        await engine.execute(BlockShares("u1", "s2", "TCS", 7, Product.CNC))
    assert refused.value.reason == "INSUFFICIENT_HOLDINGS"
    closed = await engine.execute(ReleaseBlock("u1", "s1", "CANCELLED"))
    assert isinstance(closed, Block) and closed.state is BlockState.CLOSED
    assert ledger.shares[("u1", "TCS")].free == 10


async def test_a_fill_spends_the_block_and_credits_shares_once(
    engine: LedgerEngine, ledger: MemoryLedger
) -> None:
    await engine.execute(buy_block("o1"))
    report = ExecReport(
        exec_id="x1",
        order_id="o1",
        user_id="u1",
        symbol="INFY",
        side=Side.BUY,
        fill_quantity=10,
        fill_price=D("99.00"),
        cumulative_quantity=10,
        terminal="FILLED",
        executed_at=NOW,
    )
    first = await engine.execute(ApplyReport(report))
    assert isinstance(first, ReportResult) and first.filled and first.closed
    assert ledger.cash["u1"].available == D("9010.00") and ledger.cash["u1"].blocked == D("0.00")
    assert ledger.shares[("u1", "INFY")].free == 10
    repeat = await engine.execute(ApplyReport(report))
    assert isinstance(repeat, ReportResult) and repeat.duplicate
    assert ledger.shares[("u1", "INFY")].free == 10 and len(ledger.fills) == 1


async def test_adjusting_a_block_is_once_per_request_id(engine: LedgerEngine, ledger: MemoryLedger) -> None:
    await engine.execute(buy_block("o1"))
    await engine.execute(AdjustBlock("u1", "o1", 20, None, "r1"))
    await engine.execute(AdjustBlock("u1", "o1", 20, None, "r1"))
    assert ledger.cash["u1"].blocked == D("2000.00")


async def test_deposits_and_withdrawals_are_once_per_request_id(
    engine: LedgerEngine, ledger: MemoryLedger
) -> None:
    await engine.execute(Deposit("u2", D("100.00"), "d1"))
    await engine.execute(Deposit("u2", D("100.00"), "d1"))
    assert ledger.cash["u2"].available == D("600.00")
    with pytest.raises(ServiceError) as refused:
        await engine.execute(Withdraw("u2", D("601.00"), "w1"))
    assert refused.value.reason == "INSUFFICIENT_FUNDS"


async def test_a_conflicting_transaction_is_run_again(engine: LedgerEngine, ledger: MemoryLedger) -> None:
    ledger.failures = [Conflict("serialization failure"), Conflict("deadlock detected")]
    await engine.execute(Deposit("u1", D("1.00"), "d1"))
    assert ledger.cash["u1"].available == D("10001.00")
    assert ledger.failures == []


async def test_an_order_blocked_before_is_found_by_reading_blocks(
    engine: LedgerEngine, ledger: MemoryLedger
) -> None:
    """A batch of new blocks skips reading blocks; the unique key tells it one exists."""
    await engine.execute(buy_block("o1"))
    again = await engine.execute_all([buy_block("o1"), buy_block("o2")])
    assert all(isinstance(r, Block) for r in again)
    assert ledger.cash["u1"].blocked == D("2000.00")


async def test_a_failing_submission_is_isolated_from_the_others(
    engine: LedgerEngine, ledger: MemoryLedger
) -> None:
    # The batch fails, then the first submission alone fails again: only it is refused.
    ledger.failures = [RuntimeError("disk full"), RuntimeError("disk full")]
    failing, fine = await asyncio.gather(
        engine.execute(Deposit("u1", D("1.00"), "d1")),
        engine.execute(Deposit("u2", D("1.00"), "d2")),
        return_exceptions=True,
    )
    assert isinstance(failing, RuntimeError) and not isinstance(fine, BaseException)
    assert ledger.cash["u2"].available == D("501.00") and ledger.cash["u1"].available == D("10000.00")


async def test_a_stopped_engine_refuses_new_commands(ledger: MemoryLedger) -> None:
    engine = LedgerEngine(ledger, ZERO_SCHEDULE, clock=lambda: NOW, writers=1)
    engine.start()
    await engine.stop()
    with pytest.raises(Unavailable):
        await engine.execute(buy_block("o1"))
