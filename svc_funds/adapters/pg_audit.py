"""The figures the invariant audit compares, read from one REPEATABLE READ snapshot so that
settlements committing meanwhile cannot make a sound ledger look broken."""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from svc_funds.app.ports import AuditFigures
from svc_funds.domain.invariants import AccountKey


def _keyed(rows: list[asyncpg.Record]) -> dict[AccountKey, Decimal]:
    return {(r[0] or "", r[1]): Decimal(r[2]) for r in rows}


# A withdrawal's journal: one hold, then one payout (PAID) or one return (RETURNED), nothing
# while HELD. Journal transactions of a withdrawal carry its id as their request id.
BAD_WITHDRAWALS = """
SELECT w.user_id, w.withdrawal_id,
       w.state || ' with ' || coalesce(j.held, 0) || ' hold(s), ' || coalesce(j.paid, 0) || ' payout(s), '
       || coalesce(j.returned, 0) || ' return(s) in the journal'
FROM withdrawals w LEFT JOIN (
    SELECT request_id,
           count(*) FILTER (WHERE kind = 'WITHDRAWAL') AS held,
           count(*) FILTER (WHERE kind = 'WITHDRAWAL_PAID') AS paid,
           count(*) FILTER (WHERE kind = 'WITHDRAWAL_RETURNED') AS returned
    FROM journal WHERE kind IN ('WITHDRAWAL', 'WITHDRAWAL_PAID', 'WITHDRAWAL_RETURNED') GROUP BY request_id
) j ON j.request_id = w.withdrawal_id
WHERE coalesce(j.held, 0) <> 1
   OR coalesce(j.paid, 0) <> (CASE WHEN w.state = 'PAID' THEN 1 ELSE 0 END)
   OR coalesce(j.returned, 0) <> (CASE WHEN w.state = 'RETURNED' THEN 1 ELSE 0 END)
ORDER BY w.withdrawal_id
"""


class PgAuditStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def figures(self) -> AuditFigures:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            accounts = await conn.fetchval("SELECT count(*) FROM accounts")
            unbalanced = await conn.fetch(
                "SELECT txn_id, unit, sum(amount) FROM entries GROUP BY txn_id, unit HAVING sum(amount) <> 0"
            )
            orphans = await conn.fetch(
                "SELECT e.entry_id, e.user_id FROM entries e "
                "WHERE NOT EXISTS (SELECT 1 FROM journal j WHERE j.txn_id = e.txn_id) ORDER BY e.entry_id"
            )
            balances = _keyed(
                await conn.fetch(
                    "SELECT user_id, 'cash', available FROM cash_balances "
                    "UNION ALL SELECT user_id, 'cash_blocked', blocked FROM cash_balances "
                    "UNION ALL SELECT user_id, 'cash_dues', dues FROM cash_balances "
                    "UNION ALL SELECT user_id, 'shares:' || symbol, free FROM share_balances "
                    "UNION ALL SELECT user_id, 'shares_blocked:' || symbol, blocked FROM share_balances "
                    "UNION ALL SELECT user_id, 'shares_dues:' || symbol, dues FROM share_balances "
                    "UNION ALL SELECT NULL, account, balance FROM house_balances"
                )
            )
            rebuilt = _keyed(
                await conn.fetch("SELECT user_id, account, sum(amount) FROM entries GROUP BY 1, 2")
            )
            last = _keyed(
                await conn.fetch(
                    "SELECT DISTINCT ON (user_id, account) user_id, account, balance_after FROM entries "
                    "ORDER BY user_id, account, entry_id DESC"
                )
            )
            broken_chains = await conn.fetch(
                "SELECT user_id, account, entry_id, previous + amount, balance_after FROM ("
                "  SELECT user_id, account, entry_id, amount, balance_after, coalesce(lag(balance_after) "
                "  OVER (PARTITION BY user_id, account ORDER BY entry_id), 0) AS previous FROM entries"
                ") e WHERE balance_after <> previous + amount ORDER BY entry_id LIMIT 100"
            )
            active = _keyed(
                await conn.fetch(
                    "SELECT user_id, CASE kind WHEN 'CASH' THEN 'cash_blocked' ELSE 'shares_blocked:' || symbol END, "
                    "sum(remaining) FROM blocks WHERE state = 'ACTIVE' GROUP BY 1, 2"
                )
            )
            bad_blocks = await conn.fetch(
                "SELECT user_id, order_id, CASE "
                "WHEN remaining > amount THEN 'remaining ' || remaining || ' exceeds the amount blocked ' || amount "
                "ELSE 'closed with ' || remaining || ' still blocked' END "
                "FROM blocks WHERE remaining > amount OR (state = 'CLOSED' AND remaining <> 0) ORDER BY order_id"
            )
            fills_by_block = await conn.fetch(
                "SELECT b.user_id, b.order_id, b.filled_quantity, coalesce(f.quantity, 0), b.quantity "
                "FROM blocks b LEFT JOIN (SELECT order_id, sum(quantity) AS quantity FROM fills GROUP BY order_id) f "
                "USING (order_id) "
                "WHERE b.filled_quantity <> coalesce(f.quantity, 0) OR b.filled_quantity > b.quantity "
                "ORDER BY b.order_id"
            )
            from_trades = _keyed(
                await conn.fetch(
                    "SELECT user_id, 'shares:' || symbol, sum(q) FROM ("
                    "  SELECT user_id, symbol, CASE side WHEN 'BUY' THEN quantity ELSE -quantity END AS q FROM fills"
                    "  UNION ALL SELECT user_id, split_part(account, ':', 2), amount FROM entries"
                    "  WHERE kind = 'SHARE_DEPOSIT' AND user_id IS NOT NULL"
                    ") t GROUP BY 1, 2"
                )
            )
            in_portfolio = _keyed(
                await conn.fetch(
                    "SELECT user_id, 'shares:' || symbol, sum(q) FROM ("
                    "  SELECT user_id, symbol, quantity AS q FROM holdings"
                    "  UNION ALL SELECT user_id, symbol, buy_quantity - sell_quantity FROM positions"
                    ") t GROUP BY 1, 2"
                )
            )
            parked = await conn.fetch("SELECT exec_id, user_id, reason FROM parked_reports ORDER BY exec_id")
            payouts = await conn.fetchval(
                "SELECT balance FROM house_balances WHERE account = 'house:payouts'"
            )
            held = await conn.fetchval(
                "SELECT coalesce(sum(amount), 0) FROM withdrawals WHERE state = 'HELD'"
            )
            bad_withdrawals = await conn.fetch(BAD_WITHDRAWALS)
        return AuditFigures(
            accounts=accounts,
            unbalanced=[(r[0], r[1], r[2]) for r in unbalanced],
            orphans=[(r[0], r[1] or "") for r in orphans],
            balances=balances,
            rebuilt=rebuilt,
            last_balance_after=last,
            broken_chains=[(r[0] or "", r[1], r[2], r[3], r[4]) for r in broken_chains],
            active_blocks=active,
            bad_blocks=[(r[0], r[1], r[2]) for r in bad_blocks],
            fills_by_block=[(r[0], r[1], r[2], r[3], r[4]) for r in fills_by_block],
            shares_from_trades=from_trades,
            shares_in_portfolio=in_portfolio,
            parked=[(r[0], r[1], r[2]) for r in parked],
            payouts_balance=payouts or Decimal(0),
            withdrawals_held=held,
            bad_withdrawals=[(r[0], r[1], r[2]) for r in bad_withdrawals],
        )
