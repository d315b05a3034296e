"""The ledger's commands on an in-memory book: pure domain logic, no I/O."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from svc_funds.domain import operations as ops
from svc_funds.domain.charges import INDIA_EQUITY, ZERO_SCHEDULE, ChargesSchedule
from svc_funds.domain.ledger import (
    Block,
    Book,
    CashBalance,
    FundsView,
    LedgerError,
    LedgerState,
    ShareBalance,
)
from svc_funds.domain.model import (
    HOUSE_BANK,
    HOUSE_EXCHANGE_CASH,
    BlockState,
    Product,
    Side,
    house_charges,
    house_exchange_shares,
    house_share_deposits,
)
from svc_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ServiceError

D = Decimal
NOW = datetime(2026, 1, 15, 5, 0, tzinfo=UTC)  # 10:30 IST


def make_book(
    cash: dict[str, str] | None = None,
    shares: dict[tuple[str, str], int] | None = None,
    schedule: ChargesSchedule = ZERO_SCHEDULE,
) -> Book:
    state = LedgerState()
    for user, amount in (cash or {}).items():
        state.cash[user] = CashBalance(user, D(amount), D("0.00"), D("0.00"), NOW)
    for (user, symbol), quantity in (shares or {}).items():
        state.shares[(user, symbol)] = ShareBalance(user, symbol, quantity, 0, 0, NOW)
    for user in state.cash:
        for symbol in ("INFY", "TCS"):
            state.shares.setdefault((user, symbol), ShareBalance(user, symbol, 0, 0, 0, NOW))
    state.house = {HOUSE_BANK: D(0), HOUSE_EXCHANGE_CASH: D(0)}
    for symbol in ("INFY", "TCS"):
        state.house[house_exchange_shares(symbol)] = D(0)
        state.house[house_share_deposits(symbol)] = D(0)
    for name in schedule.names:
        state.house[house_charges(name)] = D(0)
    return Book(state, NOW)


def run(book: Book, command: ops.Command, schedule: ChargesSchedule = ZERO_SCHEDULE) -> ops.Result:
    result = ops.execute(book, schedule, command)
    if isinstance(result, ServiceError):
        raise result
    return result


def assert_double_entry(book: Book) -> None:
    """Every transaction sums to zero per unit, and the balances equal the entries."""
    for txn in book.journal:
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for entry in txn.entries:
            sums[entry.unit] += entry.amount
        assert all(v == 0 for v in sums.values()), (txn.kind, dict(sums))


def fill(
    exec_id: str,
    order_id: str,
    quantity: int,
    price: str,
    *,
    user: str = "u1",
    symbol: str = "INFY",
    side: Side = Side.BUY,
    cumulative: int = 0,
    terminal: str | None = None,
) -> ops.ApplyReport:
    return ops.ApplyReport(
        ops.ExecReport(exec_id, order_id, user, symbol, side, quantity, D(price), cumulative, terminal, NOW)
    )


def ended(
    exec_id: str, order_id: str, cumulative: int, why: str = "CANCELED", user: str = "u1"
) -> ops.ApplyReport:
    return ops.ApplyReport(
        ops.ExecReport(exec_id, order_id, user, "INFY", Side.BUY, 0, None, cumulative, why, NOW)
    )


def buy_block(
    order_id: str, quantity: int, price: str, user: str = "u1", product: Product = Product.CNC
) -> ops.BlockCash:
    return ops.BlockCash(user, order_id, "INFY", quantity, D(price), product)


# --- deposits and withdrawals -------------------------------------------------------------
def test_a_deposit_credits_cash_against_the_bank_and_is_idempotent() -> None:
    book = make_book({"u1": "0"})
    first = run(book, ops.Deposit("u1", D("1000.50"), "dep-1"))
    again = run(book, ops.Deposit("u1", D("1000.50"), "dep-1"))
    assert isinstance(first, FundsView) and first.available == D("1000.50")
    assert again == first
    assert book.cash["u1"].available == D("1000.50")
    assert book.house[HOUSE_BANK] == D("-1000.50")
    assert len(book.journal) == 1
    [cash_entry] = [e for e in book.journal[0].entries if e.user_id == "u1"]
    assert cash_entry.account == "cash" and cash_entry.balance_after == D("1000.50")
    assert_double_entry(book)


def test_reusing_a_deposit_request_id_for_another_amount_is_refused_and_changes_nothing() -> None:
    book = make_book({"u1": "0"})
    run(book, ops.Deposit("u1", D("10.00"), "dep-1"))
    before = len(book.journal)
    with pytest.raises(AlreadyExists) as caught:
        run(book, ops.Deposit("u1", D("11.00"), "dep-1"))
    assert caught.value.reason == "REQUEST_ID_REUSED"
    assert len(book.journal) == before and book.cash["u1"].available == D("10.00")


def test_unknown_users_are_not_found() -> None:
    book = make_book({"u1": "0"})
    with pytest.raises(NotFound):
        run(book, ops.Deposit("u2", D("10.00"), "dep-1"))
    assert not book.changes()


def test_a_withdrawal_never_takes_more_than_is_available() -> None:
    book = make_book({"u1": "100.00"})
    run(book, buy_block("o1", 1, "60.00"))
    with pytest.raises(FailedPrecondition) as caught:
        run(book, ops.Withdraw("u1", D("40.01"), "w-1"))
    assert caught.value.reason == "INSUFFICIENT_FUNDS"
    assert caught.value.metadata["available"] == "40.00"
    funds = run(book, ops.Withdraw("u1", D("40.00"), "w-2"))
    assert isinstance(funds, FundsView) and funds.available == 0 and funds.blocked == D("60.00")
    assert_double_entry(book)


# --- blocks -------------------------------------------------------------------------------
def test_blocks_on_one_balance_never_overspend_it() -> None:
    book = make_book({"u1": "100000.00"})
    outcomes = [ops.execute(book, ZERO_SCHEDULE, buy_block(f"o{i}", 1, "150.00")) for i in range(1000)]
    assert sum(isinstance(o, Block) for o in outcomes) == 666
    assert {o.reason for o in outcomes if isinstance(o, ServiceError)} == {"INSUFFICIENT_FUNDS"}
    assert book.cash["u1"].available == D("100.00")
    assert book.cash["u1"].blocked == D("99900.00")
    assert_double_entry(book)


def test_a_block_is_keyed_by_its_order_id() -> None:
    book = make_book({"u1": "1000.00"})
    first = run(book, buy_block("o1", 2, "100.00"))
    again = run(book, buy_block("o1", 2, "100.00"))
    assert again == first
    assert book.cash["u1"].blocked == D("200.00")
    with pytest.raises(AlreadyExists) as caught:
        run(book, buy_block("o1", 3, "100.00"))
    assert caught.value.reason == "BLOCK_TERMS_DIFFER"
    with pytest.raises(AlreadyExists):
        run(book, ops.BlockCash("u2", "o1", "INFY", 2, D("100.00"), Product.CNC))
    assert book.cash["u1"].blocked == D("200.00") and len(book.journal) == 1


def test_a_buy_block_includes_the_most_the_charges_can_be() -> None:
    book = make_book({"u1": "100000.00"}, schedule=INDIA_EQUITY)
    block = run(book, buy_block("o1", 10, "1000.00", product=Product.INTRADAY), INDIA_EQUITY)
    assert isinstance(block, Block)
    expected = D("10000.00") + INDIA_EQUITY.max_charges(Side.BUY, Product.INTRADAY, D("10000.00"))
    assert block.amount == expected and block.amount > D("10000.00")


def test_selling_blocks_free_shares_only() -> None:
    book = make_book({"u1": "0"}, {("u1", "INFY"): 10})
    run(book, ops.BlockShares("u1", "s1", "INFY", 6, Product.CNC))
    with pytest.raises(FailedPrecondition) as caught:
        run(book, ops.BlockShares("u1", "s2", "INFY", 5, Product.CNC))
    assert caught.value.reason == "INSUFFICIENT_HOLDINGS"
    shares = book.shares[("u1", "INFY")]
    assert (shares.free, shares.blocked) == (4, 6)


def test_release_gives_back_the_rest_once() -> None:
    book = make_book({"u1": "1000.00"})
    run(book, buy_block("o1", 4, "100.00"))
    released = run(book, ops.ReleaseBlock("u1", "o1", "REJECTED"))
    assert (
        isinstance(released, Block)
        and released.state is BlockState.CLOSED
        and released.released == D("400.00")
    )
    with pytest.raises(FailedPrecondition) as caught:
        run(book, ops.ReleaseBlock("u1", "o1", "REJECTED"))
    assert caught.value.reason == "BLOCK_CLOSED"
    assert book.cash["u1"].available == D("1000.00") and book.cash["u1"].blocked == 0
    with pytest.raises(NotFound):
        run(book, ops.ReleaseBlock("u2", "o1", "REJECTED"))  # another user's block does not exist for them
    with pytest.raises(NotFound):
        run(book, ops.ReleaseBlock("u1", "nope", "REJECTED"))


def test_adjusting_a_block_moves_only_the_difference_and_is_idempotent() -> None:
    book = make_book({"u1": "1000.00"})
    run(book, buy_block("o1", 4, "100.00"))
    up = run(book, ops.AdjustBlock("u1", "o1", 6, D("110.00"), "m1"))
    assert isinstance(up, Block) and up.remaining == D("660.00") and up.amount == D("660.00")
    assert book.cash["u1"].available == D("340.00")
    assert run(book, ops.AdjustBlock("u1", "o1", 6, D("110.00"), "m1")) == up
    with pytest.raises(AlreadyExists):
        run(book, ops.AdjustBlock("u1", "o1", 7, D("110.00"), "m1"))
    with pytest.raises(FailedPrecondition) as caught:
        run(book, ops.AdjustBlock("u1", "o1", 20, None, "m2"))
    assert caught.value.reason == "INSUFFICIENT_FUNDS"
    run(book, fill("e1", "o1", 2, "105.00"))
    down = run(book, ops.AdjustBlock("u1", "o1", 3, None, "m3"))
    # 2 filled at 105 from 660 leaves 450; 1 more at 110 needs 110: 340 goes back.
    assert isinstance(down, Block) and down.remaining == D("110.00")
    assert book.cash["u1"].available == D("680.00")
    with pytest.raises(InvalidArgument):
        run(book, ops.AdjustBlock("u1", "o1", 2, None, "m4"))
    assert_double_entry(book)


# --- settlement ---------------------------------------------------------------------------
def test_a_buy_fill_spends_the_block_at_the_fill_price_and_the_leftover_is_released_when_filled() -> None:
    book = make_book({"u1": "1000.00"})
    run(book, buy_block("o1", 5, "100.00"))
    first = run(book, fill("e1", "o1", 3, "99.00", cumulative=3))
    assert isinstance(first, ops.ReportResult) and first.filled and not first.closed
    last = run(book, fill("e2", "o1", 2, "98.50", cumulative=5, terminal="FILLED"))
    assert isinstance(last, ops.ReportResult) and last.closed
    block = book.blocks["o1"]
    assert block.state is BlockState.CLOSED and block.released == D("6.00")
    assert book.cash["u1"].available == D("506.00") and book.cash["u1"].blocked == 0
    assert book.shares[("u1", "INFY")].free == 5
    assert book.house[HOUSE_EXCHANGE_CASH] == D("494.00")
    assert_double_entry(book)


def test_each_exec_id_settles_once() -> None:
    book = make_book({"u1": "1000.00"})
    run(book, buy_block("o1", 5, "100.00"))
    run(book, fill("e1", "o1", 2, "100.00", cumulative=2))
    again = run(book, fill("e1", "o1", 2, "100.00", cumulative=2))
    assert isinstance(again, ops.ReportResult) and again.duplicate
    assert book.blocks["o1"].filled_quantity == 2 and len(book.fills) == 1


def test_fills_after_a_cancel_are_applied_and_the_leftover_is_released_after_the_last_one() -> None:
    book = make_book({"u1": "1000.00"})
    run(book, buy_block("o1", 5, "100.00"))
    # The cancel confirmation (CumQty 3) overtakes the fill it counts.
    cancel = run(book, ended("c1", "o1", 3))
    assert isinstance(cancel, ops.ReportResult) and not cancel.closed
    assert book.blocks["o1"].state is BlockState.ACTIVE
    late = run(book, fill("e1", "o1", 3, "100.00", cumulative=3))
    assert isinstance(late, ops.ReportResult) and late.filled and late.closed
    assert book.cash["u1"].available == D("700.00") and book.cash["u1"].blocked == 0
    assert book.blocks["o1"].released == D("200.00")
    # Redelivered cancel: nothing more happens.
    assert run(book, ended("c1", "o1", 3)) == ops.ReportResult("c1")
    assert_double_entry(book)


def test_a_fill_after_the_block_was_released_is_paid_from_available_cash() -> None:
    book = make_book({"u1": "1000.00"})
    run(book, buy_block("o1", 5, "100.00"))
    run(book, ops.ReleaseBlock("u1", "o1", "EXPIRED"))
    run(book, fill("e1", "o1", 2, "100.00", cumulative=2))
    assert book.cash["u1"].available == D("800.00") and book.cash["u1"].blocked == 0
    assert book.shares[("u1", "INFY")].free == 2
    assert book.blocks["o1"].filled_quantity == 2


def test_a_fill_beyond_the_block_and_the_cash_becomes_dues_which_money_coming_in_pays_first() -> None:
    book = make_book({"u1": "550.00"})
    run(book, buy_block("o1", 5, "100.00"))
    run(book, fill("e1", "o1", 5, "120.00", cumulative=5, terminal="FILLED"))  # 600 against 500 blocked
    assert book.cash["u1"].available == 0 and book.cash["u1"].blocked == 0
    assert book.cash["u1"].dues == D("-50.00")
    assert [(s.user_id, s.amount) for s in book.shortfalls] == [("u1", D("50.00"))]
    run(book, ops.Deposit("u1", D("80.00"), "dep"))
    assert book.cash["u1"].dues == 0 and book.cash["u1"].available == D("30.00")
    assert_double_entry(book)


def test_a_sell_fill_delivers_blocked_shares_and_credits_proceeds_less_charges() -> None:
    book = make_book({"u1": "0.00"}, {("u1", "INFY"): 10}, schedule=INDIA_EQUITY)
    run(book, ops.BlockShares("u1", "s1", "INFY", 10, Product.CNC), INDIA_EQUITY)
    run(book, fill("e1", "s1", 10, "1500.00", side=Side.SELL, cumulative=10, terminal="FILLED"), INDIA_EQUITY)
    charges = INDIA_EQUITY.order_charges(Side.SELL, Product.CNC, D("15000.00"))
    assert book.cash["u1"].available == D("15000.00") - sum(charges.values())
    shares = book.shares[("u1", "INFY")]
    assert (shares.free, shares.blocked) == (0, 0)
    assert book.blocks["s1"].state is BlockState.CLOSED
    for name, amount in charges.items():
        assert book.house[house_charges(name)] == amount
    assert_double_entry(book)


def test_charges_are_posted_as_their_own_entries() -> None:
    book = make_book({"u1": "100000.00"}, schedule=INDIA_EQUITY)
    run(book, buy_block("o1", 10, "1000.00", product=Product.INTRADAY), INDIA_EQUITY)
    run(book, fill("e1", "o1", 10, "1000.00", cumulative=10, terminal="FILLED"), INDIA_EQUITY)
    fill_txn = next(t for t in book.journal if t.kind == "FILL")
    kinds = {
        (e.account, e.kind, e.description)
        for e in fill_txn.entries
        if e.kind == "CHARGES" and e.user_id is None
    }
    assert kinds == {
        (house_charges(n), "CHARGES", n)
        for n in ("brokerage", "exchange_txn", "sebi_fee", "gst", "stamp_duty")
    }


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (fill("e1", "o1", 1, "100.00", user="ghost"), "unknown user"),
        (fill("e1", "o1", 1, "100.00", user="u2"), "another user"),
        (fill("e1", "o1", 1, "100.00", symbol="TCS"), "block for INFY"),
        (fill("e1", "o1", 1, "100.00", side=Side.SELL), "a SELL"),
        (fill("e1", "o1", 1, "100.001"), "paise"),
    ],
)
def test_reports_that_cannot_be_applied_are_parked_untouched(report: ops.ApplyReport, reason: str) -> None:
    book = make_book({"u1": "1000.00", "u2": "1000.00"})
    run(book, buy_block("o1", 5, "100.00"))
    result = run(book, report)
    assert isinstance(result, ops.ReportResult) and reason in result.parked
    assert book.blocks["o1"].filled_quantity == 0 and not book.fills
    assert [p.exec_id for p in book.parked] == ["e1"]
    assert run(book, report) == ops.ReportResult("e1", duplicate=True)


def test_a_fill_without_a_block_is_still_applied() -> None:
    book = make_book({"u1": "1000.00"})
    run(book, fill("e1", "unknown-order", 2, "100.00"))
    assert book.cash["u1"].available == D("800.00") and book.shares[("u1", "INFY")].free == 2
    assert book.fills[0].product is Product.CNC


def test_a_refused_command_leaves_no_trace_in_the_batch() -> None:
    book = make_book({"u1": "100.00"})
    run(book, buy_block("o1", 1, "50.00"))
    mark = len(book.journal)
    result = ops.execute(book, ZERO_SCHEDULE, ops.AdjustBlock("u1", "o1", 10, None, "m1"))
    assert isinstance(result, FailedPrecondition)
    assert len(book.journal) == mark
    assert book.blocks["o1"].quantity == 1 and "adjust:o1:m1" not in book.requests
    changes = book.changes()
    assert [b.order_id for b in changes.new_blocks] == ["o1"] and len(changes.journal) == 1


def test_share_deposits_pay_owed_shares_first_and_join_holdings_at_their_cost() -> None:
    book = make_book({"u1": "0"})
    run(book, fill("e1", "x", 3, "100.00", side=Side.SELL))  # a sale of shares the user does not have
    assert book.shares[("u1", "INFY")].dues == -3
    view = run(book, ops.DepositShares("u1", "INFY", 5, D("90.00"), "sd1"))
    assert isinstance(view, ops.SharesView) and (view.free, view.dues) == (2, 0)
    assert book.holdings[("u1", "INFY")].quantity == 5 and book.holdings[("u1", "INFY")].cost == D("450.00")
    assert_double_entry(book)


def test_the_book_refuses_a_movement_that_would_break_a_rule() -> None:
    book = make_book({"u1": "10.00"})
    txn = book.transaction("TEST", user_id="u1")
    with pytest.raises(LedgerError):
        book.move(txn, ("u1", "cash"), ("u1", "cash_blocked"), D("10.01"), kind="X")
    with pytest.raises(LedgerError):
        book.move(txn, ("u1", "cash"), ("u1", "shares:INFY"), D(1), kind="X")
    with pytest.raises(LedgerError):
        book.move(txn, ("u1", "cash"), ("u1", "cash_blocked"), D("0.001"), kind="X")
