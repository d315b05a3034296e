"""Withdrawals on an in-memory book: held, then paid out or returned exactly once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from svc_funds.domain import operations as ops
from svc_funds.domain.ledger import Book, CashBalance, Withdrawal
from svc_funds.domain.model import HOUSE_BANK, HOUSE_PAYOUTS, WithdrawalState
from svc_runtime.errors import AlreadyExists, FailedPrecondition, NotFound
from tests.funds.test_ledger import assert_double_entry, buy_block, make_book, run

D = Decimal


def hold(
    amount: str, request_id: str = "w-1", withdrawal_id: str = "wd_1", withheld: str = "0"
) -> ops.Command:
    return ops.RequestWithdrawal(
        "u1", D(amount), request_id, withdrawal_id, "50100012345678", "HDFC0000001", D(withheld)
    )


def payout_book(cash: str = "1000.00") -> Book:
    book = make_book({"u1": cash})
    book.house[HOUSE_PAYOUTS] = D(0)
    return book


def test_a_withdrawal_is_held_from_available_cash_against_the_payouts_account() -> None:
    book = payout_book()
    held = run(book, hold("250.50"))
    assert isinstance(held, Withdrawal) and held.state is WithdrawalState.HELD
    assert book.cash["u1"].available == D("749.50")
    assert book.house[HOUSE_PAYOUTS] == D("250.50")
    assert book.changes().withdrawals[0].withdrawal_id == "wd_1"
    assert_double_entry(book)


def test_a_retried_request_answers_with_the_first_withdrawal_and_holds_once() -> None:
    book = payout_book()
    first = run(book, hold("100.00", withdrawal_id="wd_1"))
    again = run(book, hold("100.00", withdrawal_id="wd_2"))
    assert isinstance(first, Withdrawal) and isinstance(again, Withdrawal)
    assert again.withdrawal_id == first.withdrawal_id == "wd_1"
    assert book.cash["u1"].available == D("900.00") and len(book.journal) == 1
    with pytest.raises(AlreadyExists):
        run(book, hold("101.00", withdrawal_id="wd_3"))


def test_blocked_cash_and_unsettled_sale_proceeds_cannot_be_withdrawn() -> None:
    book = payout_book("1000.00")
    run(book, buy_block("o1", 1, "300.00"))
    with pytest.raises(FailedPrecondition) as caught:
        run(book, hold("500.01", withheld="200.00"))
    assert caught.value.reason == "INSUFFICIENT_FUNDS"
    assert caught.value.metadata["available"] == "500.00"
    assert caught.value.metadata["unsettled_proceeds"] == "200.00"
    assert book.cash["u1"].available == D("700.00") and not book.changes().withdrawals
    assert isinstance(run(book, hold("500.00", withheld="200.00")), Withdrawal)


def test_a_paid_withdrawal_leaves_for_the_bank_once() -> None:
    book = payout_book()
    run(book, hold("100.00"))
    paid = run(book, ops.SettleWithdrawal("u1", "wd_1", True, bank_reference="UTR1"))
    twice = run(book, ops.SettleWithdrawal("u1", "wd_1", True, bank_reference="UTR2"))
    late_refusal = run(book, ops.SettleWithdrawal("u1", "wd_1", False, failure="closed"))
    assert (
        isinstance(paid, Withdrawal) and paid.state is WithdrawalState.PAID and paid.bank_reference == "UTR1"
    )
    assert twice == paid and late_refusal == paid
    assert book.house[HOUSE_PAYOUTS] == 0 and book.house[HOUSE_BANK] == D("100.00")
    assert book.cash["u1"].available == D("900.00")
    assert [t.kind for t in book.journal] == ["WITHDRAWAL", "WITHDRAWAL_PAID"]
    assert_double_entry(book)


def test_a_refused_withdrawal_comes_back_to_available_cash_once() -> None:
    book = payout_book()
    run(book, hold("100.00"))
    returned = run(book, ops.SettleWithdrawal("u1", "wd_1", False, failure="account closed"))
    run(book, ops.SettleWithdrawal("u1", "wd_1", False, failure="account closed"))
    run(book, ops.SettleWithdrawal("u1", "wd_1", True, bank_reference="UTR"))
    assert isinstance(returned, Withdrawal) and returned.state is WithdrawalState.RETURNED
    assert returned.failure == "account closed"
    assert book.cash["u1"].available == D("1000.00") and book.house[HOUSE_PAYOUTS] == 0
    assert [t.kind for t in book.journal] == ["WITHDRAWAL", "WITHDRAWAL_RETURNED"]
    assert_double_entry(book)


def test_settling_another_users_or_an_unknown_withdrawal_is_not_found() -> None:
    book = payout_book()
    run(book, hold("100.00"))
    book.cash["u2"] = CashBalance("u2", D(0), D(0), D(0), book.now)
    with pytest.raises(NotFound):
        run(book, ops.SettleWithdrawal("u2", "wd_1", True))
    with pytest.raises(NotFound):
        run(book, ops.SettleWithdrawal("u1", "wd_9", True))
