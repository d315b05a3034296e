"""Account rules and password hashing, and the invariant comparisons: pure logic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from svc_funds.domain import accounts, invariants
from svc_runtime.errors import InvalidArgument


def test_new_accounts_are_validated_field_by_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        accounts.check_new_account("A!", "short", "x" * 101, "")
    assert {v.field for v in caught.value.violations} == {"username", "password", "display_name"}
    ok = accounts.check_new_account("asha.rao", "long enough", "", "r1")
    assert ok.display_name == "asha.rao"


def test_passwords_are_salted_and_verified_in_constant_time() -> None:
    first, second = accounts.hash_password("correct horse"), accounts.hash_password("correct horse")
    assert first != second and first.startswith("scrypt$")
    assert accounts.verify_password("correct horse", first)
    assert not accounts.verify_password("correct horsE", first)
    assert not accounts.verify_password("anything", "not-a-hash")
    assert not accounts.verify_password("not a password", accounts.DUMMY_HASH.replace("scrypt", "md5"))


def test_balance_comparisons_name_each_account_that_differs() -> None:
    found = invariants.compare_balances(
        {("u1", "cash"): Decimal("10.00"), ("u1", "cash_blocked"): Decimal("5.00")},
        {
            ("u1", "cash"): Decimal("10.00"),
            ("u1", "cash_blocked"): Decimal("4.00"),
            ("", "house:bank"): Decimal(1),
        },
        "account",
    )
    assert [(v.invariant, v.user_id) for v in found] == [("I1", ""), ("I1", "u1")]
    assert "cash_blocked" in found[1].detail and "5.00" in found[1].detail


def test_signs_flag_negatives_and_dues() -> None:
    found = invariants.check_signs(
        {
            ("u1", "cash"): Decimal("-0.01"),
            ("u2", "cash_dues"): Decimal("-3.00"),
            ("u3", "shares:INFY"): Decimal(5),
            ("", "house:bank"): Decimal(-100),
        }
    )
    assert [(v.user_id, "owes" in v.detail) for v in found] == [("u1", False), ("u2", True)]


def test_unbalanced_transactions_are_named() -> None:
    found = invariants.unbalanced_transactions(
        [("txn_7", "INR", Decimal("0.01")), ("txn_8", "INFY", Decimal(0))]
    )
    assert [v.detail for v in found] == ["journal transaction txn_7 sums to 0.01 INR, not zero"]
