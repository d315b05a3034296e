"""The ledger's invariants (I1–I4, docs/architecture.md §5), as comparisons of figures read from a
consistent snapshot: what the journal says against what the materialized balances, blocks,
fills and portfolio say."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from svc_funds.domain.model import CASH_DUES, SHARES_DUES, split_share_account

ZERO = Decimal(0)

# (user_id or "" for house accounts, account code)
AccountKey = tuple[str, str]


@dataclass(frozen=True)
class Violation:
    invariant: str
    user_id: str
    detail: str


def unbalanced_transactions(sums: Iterable[tuple[str, str, Decimal]]) -> list[Violation]:
    """I1: every journal transaction sums to zero in each unit. `sums` are (txn, unit, sum)."""
    return [
        Violation("I1", "", f"journal transaction {txn} sums to {total} {unit}, not zero")
        for txn, unit, total in sums
        if total != 0
    ]


def compare_balances(
    materialized: Mapping[AccountKey, Decimal], rebuilt: Mapping[AccountKey, Decimal], what: str
) -> list[Violation]:
    """I1: each account's balance equals the sum of its journal entries (the rebuild)."""
    out = []
    for key in sorted(set(materialized) | set(rebuilt)):
        have, want = materialized.get(key, ZERO), rebuilt.get(key, ZERO)
        if have != want:
            user_id, account = key
            out.append(
                Violation(
                    "I1", user_id, f"{what} {account}: balance {have} but its journal entries sum to {want}"
                )
            )
    return out


def check_signs(balances: Mapping[AccountKey, Decimal]) -> list[Violation]:
    """I2: nothing a user holds is negative; dues (what a user owes) are reported too, since
    they mean a fill cost more than was blocked and available."""
    out = []
    for (user_id, account), value in sorted(balances.items()):
        if not user_id:
            continue
        kind = split_share_account(account)[0]
        if account == CASH_DUES or kind == SHARES_DUES:
            if value > 0:
                out.append(Violation("I2", user_id, f"{account} is positive ({value})"))
            elif value < 0:
                out.append(
                    Violation(
                        "I2", user_id, f"{account}: the user owes {-value} after a fill beyond the block"
                    )
                )
        elif value < 0:
            out.append(Violation("I2", user_id, f"{account} is negative ({value})"))
    return out


def compare_totals(
    expected: Mapping[AccountKey, Decimal],
    actual: Mapping[AccountKey, Decimal],
    invariant: str,
    describe: str,
) -> list[Violation]:
    """Generic per-key comparison: `describe` is formatted with account, expected, actual."""
    out = []
    for key in sorted(set(expected) | set(actual)):
        want, have = expected.get(key, ZERO), actual.get(key, ZERO)
        if want != have:
            user_id, account = key
            out.append(
                Violation(invariant, user_id, describe.format(account=account, expected=want, actual=have))
            )
    return out
