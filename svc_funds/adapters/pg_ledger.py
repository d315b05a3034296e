"""The ledger engine's PostgreSQL unit of work: locked loads and bulk writes over raw asyncpg.

Each load is one statement with `ORDER BY <key> FOR UPDATE`, so rows are locked in key order;
each write is one statement whatever the batch size: binary COPY for rows that are only
ever inserted (journal, entries, blocks, fills), `UPDATE … FROM unnest(…)` or an upsert of
increments for the rest.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg

from svc_funds.domain.ledger import Block, CashBalance, Changes, ShareBalance, StoredRequest
from svc_funds.domain.model import BlockKind, BlockState, Product, Side, house_unit
from svc_runtime.ids import new_id

_RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.PostgresConnectionError,
    ConnectionError,
    TimeoutError,
)

BLOCK_COLUMNS = (
    "order_id, user_id, kind, side, symbol, product, requested_quantity, requested_price, quantity, price, "
    "amount, remaining, filled_quantity, filled_value, charges, released, terminal_quantity, terminal_reason, "
    "state, close_reason, created_at, updated_at"
)


def block_from_row(row: asyncpg.Record) -> Block:
    return Block(
        order_id=row["order_id"],
        user_id=row["user_id"],
        kind=BlockKind(row["kind"]),
        side=Side(row["side"]),
        symbol=row["symbol"],
        product=Product(row["product"]),
        requested_quantity=row["requested_quantity"],
        requested_price=row["requested_price"],
        quantity=row["quantity"],
        price=row["price"],
        amount=row["amount"],
        remaining=row["remaining"],
        filled_quantity=row["filled_quantity"],
        filled_value=row["filled_value"],
        charges=row["charges"],
        released=row["released"],
        terminal_quantity=row["terminal_quantity"],
        terminal_reason=row["terminal_reason"],
        state=BlockState(row["state"]),
        close_reason=row["close_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _block_arrays(blocks: list[Block]) -> list[list[Any]]:
    return [
        [b.order_id for b in blocks],
        [b.user_id for b in blocks],
        [str(b.kind) for b in blocks],
        [str(b.side) for b in blocks],
        [b.symbol for b in blocks],
        [str(b.product) for b in blocks],
        [b.requested_quantity for b in blocks],
        [b.requested_price for b in blocks],
        [b.quantity for b in blocks],
        [b.price for b in blocks],
        [b.amount for b in blocks],
        [b.remaining for b in blocks],
        [b.filled_quantity for b in blocks],
        [b.filled_value for b in blocks],
        [b.charges for b in blocks],
        [b.released for b in blocks],
        [b.terminal_quantity for b in blocks],
        [b.terminal_reason for b in blocks],
        [str(b.state) for b in blocks],
        [b.close_reason for b in blocks],
        [b.created_at for b in blocks],
        [b.updated_at for b in blocks],
    ]


_BLOCK_UNNEST = (
    "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], "
    "$8::numeric[], $9::bigint[], $10::numeric[], $11::numeric[], $12::numeric[], $13::bigint[], "
    "$14::numeric[], $15::numeric[], $16::numeric[], $17::bigint[], $18::text[], $19::text[], $20::text[], "
    "$21::timestamptz[], $22::timestamptz[])"
)

BLOCK_COLUMN_LIST = [c.strip() for c in BLOCK_COLUMNS.split(",")]

UPDATE_BLOCKS = f"""
UPDATE blocks AS b SET
    quantity = u.quantity, price = u.price, amount = u.amount, remaining = u.remaining,
    filled_quantity = u.filled_quantity, filled_value = u.filled_value, charges = u.charges,
    released = u.released, terminal_quantity = u.terminal_quantity, terminal_reason = u.terminal_reason,
    state = u.state, close_reason = u.close_reason, updated_at = u.updated_at
FROM {_BLOCK_UNNEST} AS u({BLOCK_COLUMNS})
WHERE b.order_id = u.order_id
"""

ENSURE_SHARES = """
INSERT INTO share_balances (user_id, symbol)
SELECT k.user_id, k.symbol FROM unnest($1::text[], $2::text[]) AS k(user_id, symbol)
WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.user_id = k.user_id)
  AND NOT EXISTS (SELECT 1 FROM share_balances s WHERE s.user_id = k.user_id AND s.symbol = k.symbol)
ORDER BY 1, 2
ON CONFLICT DO NOTHING
"""

LOCK_SHARES = """
SELECT s.user_id, s.symbol, s.free, s.blocked, s.dues, s.updated_at
FROM share_balances s JOIN unnest($1::text[], $2::text[]) AS k(user_id, symbol) USING (user_id, symbol)
ORDER BY s.user_id, s.symbol
FOR UPDATE OF s
"""

ENSURE_HOUSE = """
INSERT INTO house_balances (account, unit)
SELECT k.account, k.unit FROM unnest($1::text[], $2::text[]) AS k(account, unit)
WHERE NOT EXISTS (SELECT 1 FROM house_balances h WHERE h.account = k.account)
ORDER BY 1
ON CONFLICT DO NOTHING
"""

JOURNAL_COLUMNS = [
    "txn_id",
    "kind",
    "user_id",
    "order_id",
    "exec_id",
    "request_id",
    "description",
    "created_at",
]
ENTRY_COLUMNS = [
    "txn_id",
    "user_id",
    "account",
    "unit",
    "amount",
    "balance_after",
    "kind",
    "order_id",
    "exec_id",
    "request_id",
    "description",
    "created_at",
]

FILL_COLUMNS = [
    "exec_id",
    "order_id",
    "user_id",
    "symbol",
    "side",
    "product",
    "quantity",
    "price",
    "value",
    "charges",
    "trading_day",
    "executed_at",
]

UPSERT_POSITIONS = """
INSERT INTO positions AS p (user_id, trading_day, symbol, product, buy_quantity, buy_value, sell_quantity,
                            sell_value)
SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::bigint[], $6::numeric[],
                     $7::bigint[], $8::numeric[])
ORDER BY 1, 2, 3, 4
ON CONFLICT (user_id, trading_day, symbol, product) DO UPDATE SET
    buy_quantity = p.buy_quantity + excluded.buy_quantity,
    buy_value = p.buy_value + excluded.buy_value,
    sell_quantity = p.sell_quantity + excluded.sell_quantity,
    sell_value = p.sell_value + excluded.sell_value
"""

UPSERT_HOLDINGS = """
INSERT INTO holdings AS h (user_id, symbol, quantity, cost, updated_at)
SELECT k.user_id, k.symbol, k.quantity, k.cost, now()
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::numeric[]) AS k(user_id, symbol, quantity, cost)
ORDER BY 1, 2
ON CONFLICT (user_id, symbol) DO UPDATE SET
    quantity = h.quantity + excluded.quantity, cost = h.cost + excluded.cost, updated_at = excluded.updated_at
"""


class PgLedgerUnitOfWork:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock_blocks(self, order_ids: list[str]) -> dict[str, Block]:
        if not order_ids:
            return {}
        rows = await self.conn.fetch(
            f"SELECT {BLOCK_COLUMNS} FROM blocks WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE",
            order_ids,
        )
        return {row["order_id"]: block_from_row(row) for row in rows}

    async def lock_cash(self, user_ids: list[str]) -> dict[str, CashBalance]:
        if not user_ids:
            return {}
        rows = await self.conn.fetch(
            "SELECT user_id, available, blocked, dues, updated_at FROM cash_balances "
            "WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE",
            user_ids,
        )
        return {
            r["user_id"]: CashBalance(r["user_id"], r["available"], r["blocked"], r["dues"], r["updated_at"])
            for r in rows
        }

    async def lock_shares(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], ShareBalance]:
        if not keys:
            return {}
        users, symbols = [k[0] for k in keys], [k[1] for k in keys]
        await self.conn.execute(ENSURE_SHARES, users, symbols)
        rows = await self.conn.fetch(LOCK_SHARES, users, symbols)
        return {
            (r["user_id"], r["symbol"]): ShareBalance(
                r["user_id"], r["symbol"], r["free"], r["blocked"], r["dues"], r["updated_at"]
            )
            for r in rows
        }

    async def lock_house(self, codes: list[str]) -> dict[str, Decimal]:
        if not codes:
            return {}
        await self.conn.execute(ENSURE_HOUSE, codes, [house_unit(c) for c in codes])
        rows = await self.conn.fetch(
            "SELECT account, balance FROM house_balances WHERE account = ANY($1::text[]) ORDER BY account FOR UPDATE",
            codes,
        )
        return {r["account"]: r["balance"] for r in rows}

    async def find_requests(self, keys: list[str]) -> dict[str, StoredRequest]:
        if not keys:
            return {}
        rows = await self.conn.fetch(
            "SELECT key, user_id, fingerprint, response::text AS response FROM requests WHERE key = ANY($1::text[])",
            keys,
        )
        return {
            r["key"]: StoredRequest(r["key"], r["user_id"], r["fingerprint"], json.loads(r["response"]))
            for r in rows
        }

    async def find_seen_reports(self, exec_ids: list[str]) -> set[str]:
        if not exec_ids:
            return set()
        rows = await self.conn.fetch(
            "SELECT exec_id FROM fills WHERE exec_id = ANY($1::text[]) "
            "UNION ALL SELECT exec_id FROM parked_reports WHERE exec_id = ANY($1::text[])",
            exec_ids,
        )
        return {r["exec_id"] for r in rows}

    async def save(self, changes: Changes) -> None:
        conn = self.conn
        if changes.cash:
            c = changes.cash
            await conn.execute(
                "UPDATE cash_balances AS c SET available = u.available, blocked = u.blocked, dues = u.dues, "
                "updated_at = u.updated_at "
                "FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[], $5::timestamptz[]) "
                "AS u(user_id, available, blocked, dues, updated_at) WHERE c.user_id = u.user_id",
                [b.user_id for b in c],
                [b.available for b in c],
                [b.blocked for b in c],
                [b.dues for b in c],
                [b.updated_at for b in c],
            )
        if changes.shares:
            s = changes.shares
            await conn.execute(
                "UPDATE share_balances AS s SET free = u.free, blocked = u.blocked, dues = u.dues, "
                "updated_at = u.updated_at "
                "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::timestamptz[]) "
                "AS u(user_id, symbol, free, blocked, dues, updated_at) "
                "WHERE s.user_id = u.user_id AND s.symbol = u.symbol",
                [b.user_id for b in s],
                [b.symbol for b in s],
                [b.free for b in s],
                [b.blocked for b in s],
                [b.dues for b in s],
                [b.updated_at for b in s],
            )
        if changes.house:
            await conn.execute(
                "UPDATE house_balances AS h SET balance = u.balance, updated_at = now() "
                "FROM unnest($1::text[], $2::numeric[]) AS u(account, balance) WHERE h.account = u.account",
                list(changes.house),
                list(changes.house.values()),
            )
        if changes.new_blocks:
            await conn.copy_records_to_table(
                "blocks",
                records=zip(*_block_arrays(changes.new_blocks), strict=True),
                columns=BLOCK_COLUMN_LIST,
            )
        if changes.updated_blocks:
            await conn.execute(UPDATE_BLOCKS, *_block_arrays(changes.updated_blocks))
        if changes.journal:
            await self._write_journal(changes)
        if changes.requests:
            r = changes.requests
            await conn.execute(
                "INSERT INTO requests (key, user_id, fingerprint, response) "
                "SELECT k, u, f, r::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(k, u, f, r)",
                [x.key for x in r],
                [x.user_id for x in r],
                [x.fingerprint for x in r],
                [json.dumps(x.response) for x in r],
            )
        if changes.fills:
            await conn.copy_records_to_table(
                "fills",
                records=[
                    (
                        x.exec_id,
                        x.order_id,
                        x.user_id,
                        x.symbol,
                        str(x.side),
                        str(x.product),
                        x.quantity,
                        x.price,
                        x.value,
                        x.charges,
                        x.trading_day,
                        x.executed_at,
                    )
                    for x in changes.fills
                ],
                columns=FILL_COLUMNS,
            )
        if changes.parked:
            p = changes.parked
            await conn.execute(
                "INSERT INTO parked_reports (exec_id, order_id, user_id, reason, report) "
                "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])",
                [x.exec_id for x in p],
                [x.order_id for x in p],
                [x.user_id for x in p],
                [x.reason for x in p],
                [x.raw for x in p],
            )
        if changes.positions:
            keys = list(changes.positions)
            deltas = [changes.positions[k] for k in keys]
            await conn.execute(
                UPSERT_POSITIONS,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [str(k[3]) for k in keys],
                [d.buy_quantity for d in deltas],
                [d.buy_value for d in deltas],
                [d.sell_quantity for d in deltas],
                [d.sell_value for d in deltas],
            )
        if changes.holdings:
            keys2 = list(changes.holdings)
            holdings = [changes.holdings[k] for k in keys2]
            await conn.execute(
                UPSERT_HOLDINGS,
                [k[0] for k in keys2],
                [k[1] for k in keys2],
                [h.quantity for h in holdings],
                [h.cost for h in holdings],
            )

    async def _write_journal(self, changes: Changes) -> None:
        journal: list[tuple[Any, ...]] = []
        entries: list[tuple[Any, ...]] = []
        for txn in changes.journal:
            txn_id = new_id("txn")
            journal.append(
                (
                    txn_id,
                    txn.kind,
                    txn.user_id,
                    txn.order_id,
                    txn.exec_id,
                    txn.request_id,
                    txn.description,
                    txn.created_at,
                )
            )
            entries.extend(
                (
                    txn_id,
                    e.user_id,
                    e.account,
                    e.unit,
                    e.amount,
                    e.balance_after,
                    e.kind,
                    txn.order_id,
                    txn.exec_id,
                    txn.request_id,
                    e.description,
                    txn.created_at,
                )
                for e in txn.entries
            )
        await self.conn.copy_records_to_table("journal", records=journal, columns=JOURNAL_COLUMNS)
        # COPY assigns the identity entry ids row by row: per account, in posting order.
        await self.conn.copy_records_to_table("entries", records=entries, columns=ENTRY_COLUMNS)


class PgLedgerStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[PgLedgerUnitOfWork]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PgLedgerUnitOfWork(conn)

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, _RETRYABLE)
