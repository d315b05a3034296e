"""The ledger engine's PostgreSQL unit of work: locked loads and one bulk write, over raw
asyncpg.

Each load is one statement with `ORDER BY <key> FOR UPDATE`, so rows are locked in key order.
House accounts (the other side of every settlement) are locked last, just before the write,
so that they are held only while a batch writes and commits. All of a batch's writes go in
a single statement, whatever the batch size: one data-modifying CTE per table over its rows
(inserts, `UPDATE … FROM`, upserts of increments), the rows of the busy tables as one JSON
array each and of the rare ones as `unnest` arrays. A batch thus costs BEGIN,
its locked reads, the house accounts' lock if it moves house money, one write and COMMIT.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg

from svc_funds.domain.ledger import (
    Block,
    CashBalance,
    Changes,
    Fill,
    LedgerState,
    ShareBalance,
    StoredRequest,
    Withdrawal,
)
from svc_funds.domain.model import BlockKind, BlockState, Product, Side, WithdrawalState, house_unit
from svc_funds.domain.operations import Needs
from svc_runtime.ids import new_id
from svc_runtime.replica import ReplicaReads

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
    "state, close_reason, created_at, updated_at, tag"
)


def block_from_row(row: asyncpg.Record | dict[str, Any]) -> Block:
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
        tag=row["tag"],
    )


def _block_row(b: Block) -> tuple[Any, ...]:
    return (
        b.order_id, b.user_id, str(b.kind), str(b.side), b.symbol, str(b.product), b.requested_quantity,
        b.requested_price, b.quantity, b.price, b.amount, b.remaining, b.filled_quantity, b.filled_value,
        b.charges, b.released, b.terminal_quantity, b.terminal_reason, str(b.state), b.close_reason,
        b.created_at, b.updated_at, b.tag,
    )  # fmt: skip


def _fill_row(f: Fill) -> tuple[Any, ...]:
    return (
        f.exec_id, f.order_id, f.user_id, f.symbol, str(f.side), str(f.product), f.quantity, f.price, f.value,
        f.charges, f.trading_day, f.executed_at, f.tag,
    )  # fmt: skip


def _updated_block_row(b: Block) -> tuple[Any, ...]:
    return (
        b.order_id, b.quantity, b.price, b.amount, b.remaining, b.filled_quantity, b.filled_value, b.charges,
        b.released, b.terminal_quantity, b.terminal_reason, str(b.state), b.close_reason, b.updated_at,
    )  # fmt: skip


_BLOCK_TYPES = (
    "text", "text", "text", "text", "text", "text", "bigint", "numeric", "bigint", "numeric", "numeric",
    "numeric", "bigint", "numeric", "numeric", "numeric", "bigint", "text", "text", "text", "timestamptz",
    "timestamptz", "text",
)  # fmt: skip


def _unnest(types: tuple[str, ...]) -> str:
    """`unnest({0}::text[], {1}::numeric[], …)`: placeholders filled by `_Writes.add`."""
    return "unnest(" + ", ".join(f"{{{i}}}::{t}[]" for i, t in enumerate(types)) + ")"


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

LOCK_HOUSE = (
    "SELECT account, balance FROM house_balances WHERE account = ANY($1::text[]) ORDER BY account FOR UPDATE"
)

ENSURE_HOUSE = """
INSERT INTO house_balances (account, unit)
SELECT k.account, k.unit FROM unnest($1::text[], $2::text[]) AS k(account, unit)
WHERE NOT EXISTS (SELECT 1 FROM house_balances h WHERE h.account = k.account)
ORDER BY 1
ON CONFLICT DO NOTHING
"""

# The write statement's parts, with `{n}` for the n-th parameter of each part. Rows travel as
# one JSON array of arrays per table (encoded in C by the standard library, where asyncpg
# would encode typed arrays element by element through Python-level checks); money, dates and
# times as text read by their types' own input functions: exact.


def _json_table(columns: str, types: tuple[str, ...]) -> str:
    """A subquery of typed rows from the JSON array of arrays `{0}`, in array order."""
    names = [c.strip() for c in columns.split(",")]
    if len(names) != len(types):
        raise ValueError(f"{len(names)} columns, {len(types)} types")
    casts = ", ".join(f"(r->>{i})::{t} AS {n}" for i, (n, t) in enumerate(zip(names, types, strict=True)))
    return f"(SELECT {casts} FROM jsonb_array_elements({{0}}::jsonb) WITH ORDINALITY AS x(r, n) ORDER BY n)"


W_CASH = (
    "UPDATE cash_balances AS c SET available = u.available, blocked = u.blocked, dues = u.dues, "
    "updated_at = u.updated_at FROM "
    + _json_table(
        "user_id, available, blocked, dues, updated_at",
        ("text", "numeric", "numeric", "numeric", "timestamptz"),
    )
    + " AS u WHERE c.user_id = u.user_id"
)
W_SHARES = (
    "UPDATE share_balances AS s SET free = u.free, blocked = u.blocked, dues = u.dues, updated_at = u.updated_at FROM "
    + _json_table(
        "user_id, symbol, free, blocked, dues, updated_at",
        ("text", "text", "bigint", "bigint", "bigint", "timestamptz"),
    )
    + " AS u WHERE s.user_id = u.user_id AND s.symbol = u.symbol"
)
W_HOUSE = (
    "UPDATE house_balances AS h SET balance = u.balance, updated_at = now() FROM "
    + _unnest(("text", "numeric"))
    + " AS u(account, balance) WHERE h.account = u.account"
)
W_NEW_BLOCKS = (
    f"INSERT INTO blocks ({BLOCK_COLUMNS}) SELECT * FROM {_json_table(BLOCK_COLUMNS, _BLOCK_TYPES)} AS u"
)
# A block's terms (user, kind, side, symbol, product, requested terms, created_at) never change.
UPDATED_BLOCK_COLUMNS = (
    "order_id, quantity, price, amount, remaining, filled_quantity, filled_value, charges, released, "
    "terminal_quantity, terminal_reason, state, close_reason, updated_at"
)
_UPDATED_BLOCK_TYPES = (
    "text", "bigint", "numeric", "numeric", "numeric", "bigint", "numeric", "numeric", "numeric", "bigint", "text",
    "text", "text", "timestamptz",
)  # fmt: skip
W_BLOCKS = (
    "UPDATE blocks AS b SET quantity = u.quantity, price = u.price, amount = u.amount, remaining = u.remaining, "
    "filled_quantity = u.filled_quantity, filled_value = u.filled_value, charges = u.charges, "
    "released = u.released, terminal_quantity = u.terminal_quantity, terminal_reason = u.terminal_reason, "
    "state = u.state, close_reason = u.close_reason, updated_at = u.updated_at FROM "
    + _json_table(UPDATED_BLOCK_COLUMNS, _UPDATED_BLOCK_TYPES)
    + " AS u WHERE b.order_id = u.order_id"
)
JOURNAL_COLUMNS = "txn_id, kind, user_id, order_id, exec_id, request_id, description, created_at, tag"
W_JOURNAL = f"INSERT INTO journal ({JOURNAL_COLUMNS}) SELECT * FROM " + _json_table(
    JOURNAL_COLUMNS, ("text", "text", "text", "text", "text", "text", "text", "timestamptz", "text")
)
# Entry ids come from the identity column as the ordered rows are inserted: per account,
# in posting order (every account posted to is locked by this transaction).
ENTRY_COLUMNS = (
    "txn_id, user_id, account, unit, amount, balance_after, kind, order_id, exec_id, request_id, description, "
    "created_at, tag"
)
W_ENTRIES = f"INSERT INTO entries ({ENTRY_COLUMNS}) SELECT * FROM " + _json_table(
    ENTRY_COLUMNS,
    (
        "text",
        "text",
        "text",
        "text",
        "numeric",
        "numeric",
        "text",
        "text",
        "text",
        "text",
        "text",
        "timestamptz",
        "text",
    ),
)
W_REQUESTS = (
    "INSERT INTO requests (key, user_id, fingerprint, response) SELECT k, u, f, r::jsonb FROM "
    + _unnest(("text", "text", "text", "text"))
    + " AS t(k, u, f, r)"
)
FILL_COLUMNS = "exec_id, order_id, user_id, symbol, side, product, quantity, price, value, charges, trading_day, executed_at, tag"
W_FILLS = f"INSERT INTO fills ({FILL_COLUMNS}) SELECT * FROM " + _json_table(
    FILL_COLUMNS,
    (
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "bigint",
        "numeric",
        "numeric",
        "numeric",
        "date",
        "timestamptz",
        "text",
    ),
)
W_PARKED = "INSERT INTO parked_reports (exec_id, order_id, user_id, reason, report) SELECT * FROM " + _unnest(
    ("text", "text", "text", "text", "bytea")
)
POSITION_COLUMNS = "user_id, trading_day, symbol, product, buy_quantity, buy_value, sell_quantity, sell_value"
W_POSITIONS = (
    f"INSERT INTO positions AS p ({POSITION_COLUMNS}) SELECT * FROM "
    + _json_table(
        POSITION_COLUMNS, ("text", "date", "text", "text", "bigint", "numeric", "bigint", "numeric")
    )
    + " AS u ORDER BY 1, 2, 3, 4 ON CONFLICT (user_id, trading_day, symbol, product) DO UPDATE SET "
    "buy_quantity = p.buy_quantity + excluded.buy_quantity, buy_value = p.buy_value + excluded.buy_value, "
    "sell_quantity = p.sell_quantity + excluded.sell_quantity, sell_value = p.sell_value + excluded.sell_value"
)
W_HOLDINGS = (
    "INSERT INTO holdings AS h (user_id, symbol, quantity, cost, updated_at) "
    "SELECT k.user_id, k.symbol, k.quantity, k.cost, now() FROM "
    + _unnest(("text", "text", "bigint", "numeric"))
    + " AS k(user_id, symbol, quantity, cost) ORDER BY 1, 2 ON CONFLICT (user_id, symbol) DO UPDATE SET "
    "quantity = h.quantity + excluded.quantity, cost = h.cost + excluded.cost, updated_at = excluded.updated_at"
)


WITHDRAWAL_COLUMNS = (
    "withdrawal_id, user_id, request_id, amount, account_number, ifsc, state, failure, bank_reference, "
    "created_at, updated_at"
)
W_WITHDRAWALS = (
    f"INSERT INTO withdrawals AS w ({WITHDRAWAL_COLUMNS}) SELECT * FROM "
    + _json_table(
        WITHDRAWAL_COLUMNS,
        (
            "text",
            "text",
            "text",
            "numeric",
            "text",
            "text",
            "text",
            "text",
            "text",
            "timestamptz",
            "timestamptz",
        ),
    )
    + " AS u ON CONFLICT (withdrawal_id) DO UPDATE SET state = excluded.state, failure = excluded.failure, "
    "bank_reference = excluded.bank_reference, updated_at = excluded.updated_at"
)
LOCK_WITHDRAWALS = (
    f"SELECT {WITHDRAWAL_COLUMNS} FROM withdrawals WHERE withdrawal_id = ANY($1::text[]) "
    "ORDER BY withdrawal_id FOR UPDATE"
)


def withdrawal_from_row(r: asyncpg.Record) -> Withdrawal:
    return Withdrawal(
        r["withdrawal_id"],
        r["user_id"],
        r["request_id"],
        r["amount"],
        r["account_number"],
        r["ifsc"],
        WithdrawalState(r["state"]),
        r["failure"],
        r["bank_reference"],
        r["created_at"],
        r["updated_at"],
    )


def _withdrawal_row(w: Withdrawal) -> tuple[Any, ...]:
    return (
        w.withdrawal_id, w.user_id, w.request_id, w.amount, w.account_number, w.ifsc, str(w.state), w.failure,
        w.bank_reference, w.created_at, w.updated_at,
    )  # fmt: skip


def _json_value(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):  # and datetime
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _json_rows(rows: list[tuple[Any, ...]]) -> str:
    return json.dumps(rows, default=_json_value, separators=(",", ":"))


class _Writes:
    """One statement made of data-modifying CTEs, each over its own rows (JSON or arrays)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, template: str, *arrays: Any) -> None:
        first = len(self.args) + 1
        self.parts.append(template.format(*(f"${first + i}" for i in range(len(arrays)))))
        self.args.extend(arrays)

    def sql(self) -> str:
        return "WITH " + ", ".join(f"w{i} AS ({part})" for i, part in enumerate(self.parts)) + " SELECT 1"


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def writes_for(changes: Changes, house_opening: Mapping[str, Decimal]) -> _Writes:
    """The batch's changes as one write statement. House balances and their entries'
    balances come from the book relative to the start of the batch: `house_opening` (the
    locked balances) is added to them."""
    w = _Writes()
    if changes.cash:
        w.add(
            W_CASH,
            _json_rows([(b.user_id, b.available, b.blocked, b.dues, b.updated_at) for b in changes.cash]),
        )
    if changes.shares:
        w.add(
            W_SHARES,
            _json_rows(
                [(b.user_id, b.symbol, b.free, b.blocked, b.dues, b.updated_at) for b in changes.shares]
            ),
        )
    if changes.house:
        w.add(
            W_HOUSE,
            list(changes.house),
            [house_opening[code] + moved for code, moved in changes.house.items()],
        )
    if changes.new_blocks:
        w.add(W_NEW_BLOCKS, _json_rows([_block_row(b) for b in changes.new_blocks]))
    if changes.updated_blocks:
        w.add(W_BLOCKS, _json_rows([_updated_block_row(b) for b in changes.updated_blocks]))
    if changes.journal:
        journal: list[tuple[Any, ...]] = []
        entries: list[tuple[Any, ...]] = []
        for txn in changes.journal:
            txn_id = new_id("txn")
            at = txn.created_at.isoformat()  # once per transaction, not per entry
            journal.append(
                (
                    txn_id,
                    txn.kind,
                    txn.user_id,
                    txn.order_id,
                    txn.exec_id,
                    txn.request_id,
                    txn.description,
                    at,
                    txn.tag,
                )
            )
            entries.extend(
                (
                    txn_id,
                    e.user_id,
                    e.account,
                    e.unit,
                    str(e.amount),
                    str(
                        e.balance_after
                        if e.user_id is not None
                        else house_opening[e.account] + e.balance_after
                    ),
                    e.kind,
                    txn.order_id,
                    txn.exec_id,
                    txn.request_id,
                    e.description,
                    at,
                    txn.tag,
                )
                for e in txn.entries
            )
        w.add(W_JOURNAL, _json_rows(journal))
        w.add(W_ENTRIES, _json_rows(entries))
    if changes.requests:
        w.add(
            W_REQUESTS,
            *_columns(
                [(r.key, r.user_id, r.fingerprint, json.dumps(r.response)) for r in changes.requests], 4
            ),
        )
    if changes.fills:
        w.add(
            W_FILLS,
            _json_rows([_fill_row(f) for f in changes.fills]),
        )
    _rare_writes(w, changes)
    if changes.positions:
        w.add(
            W_POSITIONS,
            _json_rows(
                [
                    (k[0], k[1], k[2], str(k[3]), d.buy_quantity, d.buy_value, d.sell_quantity, d.sell_value)
                    for k, d in changes.positions.items()
                ]
            ),
        )
    if changes.holdings:
        w.add(
            W_HOLDINGS,
            *_columns([(k[0], k[1], h.quantity, h.cost) for k, h in changes.holdings.items()], 4),
        )
    return w


def _rare_writes(w: _Writes, changes: Changes) -> None:
    """Parked reports and withdrawals: rows most batches do not have."""
    if changes.parked:
        w.add(
            W_PARKED,
            *_columns([(p.exec_id, p.order_id, p.user_id, p.reason, p.raw) for p in changes.parked], 5),
        )
    if changes.withdrawals:
        w.add(W_WITHDRAWALS, _json_rows([_withdrawal_row(x) for x in changes.withdrawals]))


# Everything a batch reads, in one round trip: one branch per kind of row, run in this
# order by the Append node, so rows are locked blocks → cash → shares, each in key order.
# Rows come back in one shape: (kind, key, key 2, three numbers, a time, JSON text, a block).
LOAD = """
SELECT 'b' AS t, b.order_id AS k1, NULL AS k2, NULL::numeric AS a, NULL::numeric AS b, NULL::numeric AS c,
       NULL::timestamptz AS ts, NULL AS j, b::blocks AS blk
  FROM (SELECT * FROM blocks WHERE order_id = ANY($1::text[]) ORDER BY order_id FOR UPDATE) b
UNION ALL
SELECT 'c', c.user_id, NULL, c.available, c.blocked, c.dues, c.updated_at, NULL, NULL
  FROM (SELECT * FROM cash_balances WHERE user_id = ANY($2::text[]) ORDER BY user_id FOR UPDATE) c
UNION ALL
SELECT 's', s.user_id, s.symbol, s.free, s.blocked, s.dues, s.updated_at, NULL, NULL
  FROM (SELECT s.* FROM share_balances s JOIN unnest($3::text[], $4::text[]) AS k(user_id, symbol)
        USING (user_id, symbol) ORDER BY s.user_id, s.symbol FOR UPDATE OF s) s
UNION ALL
SELECT 'r', r.key, r.user_id, NULL, NULL, NULL, NULL, json_build_array(r.fingerprint, r.response)::text, NULL
  FROM requests r WHERE r.key = ANY($5::text[])
UNION ALL
SELECT 'x', f.exec_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM fills f WHERE f.exec_id = ANY($6::text[])
UNION ALL
SELECT 'x', p.exec_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM parked_reports p
  WHERE p.exec_id = ANY($6::text[])
"""


class PgLedgerUnitOfWork:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        # Whose balances this transaction changed (every entry of a user changes one).
        self.users: set[str] = set()

    async def load(self, needs: Needs, *, read_blocks: bool = True) -> LedgerState:
        state = LedgerState()
        share_keys = sorted(needs.shares)
        rows = await self.conn.fetch(
            LOAD,
            sorted(needs.orders) if read_blocks else [],
            sorted(needs.users),
            [k[0] for k in share_keys],
            [k[1] for k in share_keys],
            sorted(needs.request_keys),
            sorted(needs.exec_ids),
        )
        for r in rows:
            kind = r["t"]
            if kind == "b":
                block = block_from_row(r["blk"])  # a `blocks` row, decoded by asyncpg
                state.blocks[block.order_id] = block
            elif kind == "c":
                state.cash[r["k1"]] = CashBalance(r["k1"], r["a"], r["b"], r["c"], r["ts"])
            elif kind == "s":
                key = (r["k1"], r["k2"])
                state.shares[key] = ShareBalance(
                    r["k1"], r["k2"], int(r["a"]), int(r["b"]), int(r["c"]), r["ts"]
                )
            elif kind == "r":
                fingerprint, response = json.loads(r["j"])
                state.requests[r["k1"]] = StoredRequest(r["k1"], r["k2"], fingerprint, response)
            else:
                state.seen_exec_ids.add(r["k1"])
        # Rows the first read could not name or did not find: a block's owner or share
        # balance, a share balance or house account used for the first time. Rare, and
        # taken after the others (a deadlock this may cause is detected and retried).
        needs.add_block_owners(list(state.blocks.values()))
        missing_users = sorted(needs.users - state.cash.keys())
        if missing_users:
            state.cash.update(await self._lock_cash(missing_users))
        missing_shares = sorted(needs.shares - state.shares.keys())
        if missing_shares:
            state.shares.update(await self._lock_shares(missing_shares))
        if needs.withdrawals:  # after the user rows, as every batch takes them
            rows = await self.conn.fetch(LOCK_WITHDRAWALS, sorted(needs.withdrawals))
            state.withdrawals = {r["withdrawal_id"]: withdrawal_from_row(r) for r in rows}
        # House accounts are locked only when the batch writes (see `save`): their
        # movements start from zero here and are rebased on the locked balances.
        state.house = dict.fromkeys(needs.house, Decimal(0))
        return state

    async def _lock_cash(self, user_ids: list[str]) -> dict[str, CashBalance]:
        rows = await self.conn.fetch(
            "SELECT user_id, available, blocked, dues, updated_at FROM cash_balances "
            "WHERE user_id = ANY($1::text[]) ORDER BY user_id FOR UPDATE",
            user_ids,
        )
        return {
            r["user_id"]: CashBalance(r["user_id"], r["available"], r["blocked"], r["dues"], r["updated_at"])
            for r in rows
        }

    async def _lock_shares(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], ShareBalance]:
        users, symbols = [k[0] for k in keys], [k[1] for k in keys]
        await self.conn.execute(ENSURE_SHARES, users, symbols)
        rows = await self.conn.fetch(LOCK_SHARES, users, symbols)
        return {
            (r["user_id"], r["symbol"]): ShareBalance(
                r["user_id"], r["symbol"], r["free"], r["blocked"], r["dues"], r["updated_at"]
            )
            for r in rows
        }

    async def _lock_house(self, codes: list[str]) -> dict[str, Decimal]:
        """Lock house accounts in key order and read their balances, creating missing ones."""
        rows = await self.conn.fetch(LOCK_HOUSE, codes)
        if len(rows) < len(codes):  # an account used for the first time
            await self.conn.execute(ENSURE_HOUSE, codes, [house_unit(c) for c in codes])
            rows = await self.conn.fetch(LOCK_HOUSE, codes)
        return {r["account"]: r["balance"] for r in rows}

    async def save(self, changes: Changes) -> None:
        # Every settlement moves money through the same few house accounts, so their row
        # locks serialize settling batches. Taking them here, after the batch has run in
        # Python, holds them for the write and the commit only: a second batch computes
        # while the first one writes.
        opening = await self._lock_house(sorted(changes.house)) if changes.house else {}
        self.users.update(c.user_id for c in changes.cash)
        self.users.update(s.user_id for s in changes.shares)
        self.users.update(b.user_id for b in (*changes.new_blocks, *changes.updated_blocks))
        writes = writes_for(changes, opening)
        if writes.parts:
            await self.conn.execute(writes.sql(), *writes.args)


class PgLedgerStore:
    """Hands each ledger transaction a connection. Writers keep theirs between batches
    instead of returning it to the pool, whose reset on release costs a round trip; a
    transaction leaves no session state behind, so nothing needs resetting."""

    def __init__(self, pool: asyncpg.Pool, reads: ReplicaReads | None = None) -> None:
        self.pool = pool
        self._kept: list[asyncpg.Connection] = []
        # Told whose balances each committed transaction changed, for reads from a replica.
        self.reads = reads

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[PgLedgerUnitOfWork]:
        conn = self._kept.pop() if self._kept else await self.pool.acquire()
        try:
            async with conn.transaction():
                work = PgLedgerUnitOfWork(conn)
                yield work
            if self.reads is not None:
                self.reads.wrote(*work.users)
        finally:
            if conn.is_closed():
                await self.pool.release(conn)
            else:
                self._kept.append(conn)

    async def close(self) -> None:
        while self._kept:
            await self.pool.release(self._kept.pop())

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, _RETRYABLE)
