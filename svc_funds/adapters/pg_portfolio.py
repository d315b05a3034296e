"""Portfolio rows and the end-of-day run in PostgreSQL."""

from __future__ import annotations

from datetime import date

import asyncpg

from svc_funds.app.ports import DAILY_PNL_DAYS, RECENT_DAYS, EndOfDayFold, EndOfDayResult, PortfolioRows
from svc_funds.domain.model import Product
from svc_funds.domain.portfolio import ZERO, HoldingRow, HoldingState, PositionRow

_POSITION_COLUMNS = (
    "user_id, trading_day, symbol, product, buy_quantity, buy_value, sell_quantity, sell_value"
)


def _position(r: asyncpg.Record, *, charges: bool = False) -> PositionRow:
    return PositionRow(
        r["user_id"],
        r["trading_day"],
        r["symbol"],
        Product(r["product"]),
        r["buy_quantity"],
        r["buy_value"],
        r["sell_quantity"],
        r["sell_value"],
        r["charges"] if charges else ZERO,
    )


# A position's charges are those of its fills (same user, day, symbol and product).
POSITIONS_WITH_CHARGES = f"""
SELECT {", ".join("p." + c.strip() for c in _POSITION_COLUMNS.split(","))},
       coalesce((SELECT sum(f.charges) FROM fills f WHERE f.user_id = p.user_id AND f.trading_day = p.trading_day
                 AND f.symbol = p.symbol AND f.product = p.product), 0) AS charges
FROM positions p WHERE p.user_id = $1 ORDER BY p.trading_day, p.symbol, p.product
"""


# The positions one tag's orders made: their fills of the days not settled yet, summed the
# way settlement sums them into `positions`.
TAGGED_POSITIONS = """
SELECT f.user_id, f.trading_day, f.symbol, f.product,
       coalesce(sum(f.quantity) FILTER (WHERE f.side = 'BUY'), 0)::bigint AS buy_quantity,
       coalesce(sum(f.value) FILTER (WHERE f.side = 'BUY'), 0) AS buy_value,
       coalesce(sum(f.quantity) FILTER (WHERE f.side = 'SELL'), 0)::bigint AS sell_quantity,
       coalesce(sum(f.value) FILTER (WHERE f.side = 'SELL'), 0) AS sell_value,
       sum(f.charges) AS charges
FROM fills f
WHERE f.user_id = $1 AND f.tag = $2 AND EXISTS (
    SELECT 1 FROM positions p WHERE p.user_id = f.user_id AND p.trading_day = f.trading_day
    AND p.symbol = f.symbol AND p.product = f.product)
GROUP BY f.user_id, f.trading_day, f.symbol, f.product
ORDER BY f.trading_day, f.symbol, f.product
"""


class PgPortfolioStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def rows(self, user_id: str, tag: str = "") -> PortfolioRows:
        if tag:
            tagged = await self.pool.fetch(TAGGED_POSITIONS, user_id, tag)
            return PortfolioRows([], [_position(r, charges=True) for r in tagged], {})
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            holdings = await conn.fetch(
                "SELECT user_id, symbol, quantity, cost, realized_pnl FROM holdings "
                "WHERE user_id = $1 AND quantity > 0 ORDER BY symbol",
                user_id,
            )
            positions = await conn.fetch(POSITIONS_WITH_CHARGES, user_id)
            blocked = await conn.fetch(
                "SELECT symbol, blocked FROM share_balances WHERE user_id = $1 AND blocked > 0", user_id
            )
            recent = await conn.fetch(
                "SELECT trading_day, symbol, sum(buy_quantity - sell_quantity) AS net FROM settled_positions "
                "WHERE user_id = $1 AND product = 'CNC' "
                "  AND trading_day >= (SELECT coalesce(max(trading_day), 'epoch'::date) FROM eod_runs) - $2::int "
                "GROUP BY trading_day, symbol",
                user_id,
                RECENT_DAYS,
            )
            daily = await conn.fetch(
                "SELECT trading_day, sum(realized_pnl) AS realized_pnl FROM realized_pnl_days "
                "WHERE user_id = $1 GROUP BY trading_day ORDER BY trading_day DESC LIMIT $2",
                user_id,
                DAILY_PNL_DAYS,
            )
        return PortfolioRows(
            holdings=[
                HoldingRow(r["user_id"], r["symbol"], r["quantity"], r["cost"], r["realized_pnl"])
                for r in holdings
            ],
            positions=[_position(r, charges=True) for r in positions],
            blocked_shares={r["symbol"]: r["blocked"] for r in blocked},
            daily_realized=[(r["trading_day"], r["realized_pnl"]) for r in daily],
            recent_buys=[(r["trading_day"], r["symbol"], r["net"]) for r in recent],
        )

    async def run_end_of_day(self, day: date, fold: EndOfDayFold) -> EndOfDayResult:
        async with self.pool.acquire() as conn, conn.transaction():
            # Claiming the day first makes a concurrent or repeated run a no-op.
            claimed = await conn.fetchval(
                "INSERT INTO eod_runs (trading_day, positions_settled) VALUES ($1, 0) "
                "ON CONFLICT DO NOTHING RETURNING true",
                day,
            )
            if not claimed:
                return EndOfDayResult(already_closed=True, positions_settled=0)
            positions = [
                _position(r)
                for r in await conn.fetch(
                    f"SELECT {_POSITION_COLUMNS} FROM positions WHERE trading_day <= $1 "
                    "ORDER BY user_id, trading_day, symbol, product FOR UPDATE",
                    day,
                )
            ]
            keys = sorted({(p.user_id, p.symbol) for p in positions})
            users, symbols = [k[0] for k in keys], [k[1] for k in keys]
            # Every holding touched exists and is locked before it is rewritten, so a share
            # deposit racing with this run adds to the result instead of being overwritten.
            await conn.execute(
                "INSERT INTO holdings (user_id, symbol, quantity, cost) "
                "SELECT user_id, symbol, 0, 0 FROM unnest($1::text[], $2::text[]) AS k(user_id, symbol) "
                "ORDER BY 1, 2 ON CONFLICT DO NOTHING",
                users,
                symbols,
            )
            rows = await conn.fetch(
                "SELECT h.user_id, h.symbol, h.quantity, h.cost, h.realized_pnl FROM holdings h "
                "JOIN unnest($1::text[], $2::text[]) AS k(user_id, symbol) USING (user_id, symbol) "
                "ORDER BY h.user_id, h.symbol FOR UPDATE OF h",
                users,
                symbols,
            )
            holdings = {
                (r["user_id"], r["symbol"]): HoldingState(r["quantity"], r["cost"], r["realized_pnl"])
                for r in rows
            }
            settlement = fold(holdings, positions)
            anomalies = settlement.anomalies
            if settlement.realized:
                items_pnl = sorted(settlement.realized.items())
                await conn.execute(
                    "INSERT INTO realized_pnl_days AS r (user_id, trading_day, symbol, realized_pnl) "
                    "SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::numeric[]) "
                    "ON CONFLICT (user_id, trading_day, symbol) "
                    "DO UPDATE SET realized_pnl = r.realized_pnl + EXCLUDED.realized_pnl",
                    [k[0] for k, _ in items_pnl],
                    [k[1] for k, _ in items_pnl],
                    [k[2] for k, _ in items_pnl],
                    [v for _, v in items_pnl],
                )
            if holdings:
                items = sorted(holdings.items())
                await conn.execute(
                    "UPDATE holdings AS h SET quantity = u.quantity, cost = u.cost, realized_pnl = u.realized_pnl, "
                    "updated_at = now() "
                    "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::numeric[], $5::numeric[]) "
                    "AS u(user_id, symbol, quantity, cost, realized_pnl) "
                    "WHERE h.user_id = u.user_id AND h.symbol = u.symbol",
                    [k[0] for k, _ in items],
                    [k[1] for k, _ in items],
                    [h.quantity for _, h in items],
                    [h.cost for _, h in items],
                    [h.realized_pnl for _, h in items],
                )
            if positions:
                # Exactly the rows locked above: a position a fill opens meanwhile waits for
                # the next run.
                await conn.execute(
                    f"WITH moved AS (DELETE FROM positions p USING unnest($2::text[], $3::date[], $4::text[], $5::text[]) "
                    "AS k(user_id, trading_day, symbol, product) "
                    "WHERE (p.user_id, p.trading_day, p.symbol, p.product) = (k.user_id, k.trading_day, k.symbol, k.product) "
                    f"RETURNING {', '.join('p.' + c.strip() for c in _POSITION_COLUMNS.split(','))}) "
                    f"INSERT INTO settled_positions ({_POSITION_COLUMNS}, settled_by) SELECT *, $1 FROM moved",
                    day,
                    [p.user_id for p in positions],
                    [p.trading_day for p in positions],
                    [p.symbol for p in positions],
                    [str(p.product) for p in positions],
                )
            await conn.execute(
                "UPDATE eod_runs SET positions_settled = $2 WHERE trading_day = $1", day, len(positions)
            )
        return EndOfDayResult(already_closed=False, positions_settled=len(positions), anomalies=anomalies)
