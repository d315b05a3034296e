"""The ledger's self-check: invariants I1–I4 (docs/architecture.md §5) from svc_funds' side,
every violation named.

- I1 double entry: each journal transaction sums to zero per unit; each account's balance
  equals the sum of its entries (the journal rebuilds every balance) and the balance-after of
  its latest entry, and each entry's balance-after is the one before it plus its amount; each
  user's shares of a symbol equal their fills plus share deposits, and equal their holdings
  plus unsettled positions.
- I2 nothing negative (and no dues: a fill beyond its block and the free balance).
- I3 blocks: a user's blocked cash and blocked shares equal what their active blocks still
  hold; a closed block holds nothing.
  Withdrawals held for the bank (`house:payouts`) equal the withdrawals still HELD.
- I4 exactly once: a block's filled quantity equals the sum of its fills (one per exec id, by
  the primary key) and never exceeds the order's quantity; no execution report is left
  parked unapplied; each withdrawal was held once and paid out or returned at most once, as
  its state says.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from svc_funds.app.ports import AuditStore
from svc_funds.domain import invariants
from svc_funds.domain.invariants import AccountKey, Violation
from svc_funds.domain.model import CASH_BLOCKED, SHARES, SHARES_BLOCKED, split_share_account


@dataclass(frozen=True)
class AuditResult:
    violations: list[Violation]
    accounts_checked: int


def _share_totals(balances: dict[AccountKey, Decimal]) -> dict[AccountKey, Decimal]:
    """Free + blocked + owed shares per (user, `shares:S`)."""
    totals: dict[AccountKey, Decimal] = {}
    for (user_id, account), value in balances.items():
        kind, symbol = split_share_account(account)
        if user_id and symbol and kind.startswith(SHARES):
            key = (user_id, f"{SHARES}:{symbol}")
            totals[key] = totals.get(key, Decimal(0)) + value
    return {k: v for k, v in totals.items() if v}


class AuditApp:
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    async def check(self) -> AuditResult:
        f = await self.store.figures()
        out: list[Violation] = []
        out += invariants.unbalanced_transactions(f.unbalanced)
        out += [
            Violation("I1", user_id, f"ledger entry {entry_id} belongs to no journal transaction")
            for entry_id, user_id in f.orphans
        ]
        out += invariants.compare_balances(
            {k: v for k, v in f.balances.items() if v or k in f.rebuilt}, f.rebuilt, "account"
        )
        for key, after in sorted(f.last_balance_after.items()):
            have = f.balances.get(key)
            if have is not None and have != after:
                out.append(
                    Violation(
                        "I1", key[0], f"account {key[1]}: balance {have} but its latest entry left {after}"
                    )
                )
        out += [
            Violation(
                "I1",
                user_id,
                f"account {account}: entry {entry_id} left {recorded}, the entry before it and its amount make {expected}",
            )
            for user_id, account, entry_id, expected, recorded in f.broken_chains
        ]
        shares = _share_totals(f.balances)
        out += invariants.compare_totals(
            {k: v for k, v in f.shares_from_trades.items() if v},
            shares,
            "I1",
            "{account}: fills and share deposits come to {expected}, the ledger holds {actual}",
        )
        out += invariants.compare_totals(
            {k: v for k, v in f.shares_in_portfolio.items() if v},
            shares,
            "I1",
            "{account}: holdings and unsettled positions come to {expected}, the ledger holds {actual}",
        )
        out += invariants.check_signs(f.balances)
        blocked = {
            k: v
            for k, v in f.balances.items()
            if k[0] and v and (k[1] == CASH_BLOCKED or k[1].startswith(SHARES_BLOCKED + ":"))
        }
        out += invariants.compare_totals(
            {k: v for k, v in f.active_blocks.items() if v},
            blocked,
            "I3",
            "{account}: active blocks hold {expected}, the balance is {actual}",
        )
        out += [
            Violation("I3", user_id, f"block {order_id}: {what}") for user_id, order_id, what in f.bad_blocks
        ]
        for user_id, order_id, filled, fills, quantity in f.fills_by_block:
            if filled != fills:
                out.append(
                    Violation(
                        "I4", user_id, f"order {order_id}: block counts {filled} filled, fills sum to {fills}"
                    )
                )
            if filled > quantity:
                out.append(
                    Violation(
                        "I4", user_id, f"order {order_id}: filled {filled} exceeds the quantity {quantity}"
                    )
                )
        out += [
            Violation("I4", user_id, f"execution report {exec_id} is parked unapplied: {reason}")
            for exec_id, user_id, reason in f.parked
        ]
        if f.payouts_balance != f.withdrawals_held:
            out.append(
                Violation(
                    "I3",
                    "",
                    f"house:payouts holds {f.payouts_balance}, withdrawals still HELD come to {f.withdrawals_held}",
                )
            )
        out += [
            Violation("I4", user_id, f"withdrawal {withdrawal_id}: {what}")
            for user_id, withdrawal_id, what in f.bad_withdrawals
        ]
        return AuditResult(out, f.accounts)
