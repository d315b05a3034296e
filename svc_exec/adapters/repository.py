"""svc_exec's PostgreSQL state (schema `exec`), on raw asyncpg: the command path records a
batch per transaction and this is the hot path of every order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from svc_exec.app.ports import Recorded, Recording, SessionProgress, StoredIncident
from svc_exec.domain.commands import Amendment, NewOrder, ReplaceOrder, next_cl_ord_id
from svc_exec.domain.model import OrdStatus, Side, VenueIncident
from svc_exec.domain.orders import OrderSnapshot, OrderView

_RECORD_NEW = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bigint[], $8::numeric[])
        AS t(command_id, order_id, user_id, request_id, symbol, side, order_qty, limit_price)
), fresh AS (
    INSERT INTO orders (order_id, user_id, request_id, symbol, side, order_qty, limit_price)
    SELECT order_id, user_id, request_id, symbol, side, order_qty, limit_price FROM input
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id
)
INSERT INTO commands (command_id, order_id, kind, cl_ord_id, cl_ord_seq)
SELECT i.command_id, i.order_id, 'new', i.order_id, 0 FROM input i JOIN fresh f USING (order_id)
RETURNING command_id
"""

_EXISTING_NEW = """
SELECT o.order_id, o.abandoned, c.state, c.recorded_at
FROM orders o LEFT JOIN commands c ON c.order_id = o.order_id AND c.kind = 'new'
WHERE o.order_id = ANY($1::text[])
"""

_CURRENT_CL_ORD = """
SELECT cl_ord_id FROM commands
WHERE order_id = $1 AND NOT refused
ORDER BY cl_ord_seq DESC LIMIT 1
"""

_SAVE_VIEWS = """
UPDATE orders o SET
    exchange_order_id = u.exchange_order_id,
    order_qty = u.order_qty,
    limit_price = u.limit_price,
    cum_qty = GREATEST(o.cum_qty, u.cum_qty),
    notional = CASE WHEN u.cum_qty >= o.cum_qty THEN u.notional ELSE o.notional END,
    ord_status = u.ord_status,
    updated_at = now()
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::numeric[], $5::bigint[], $6::numeric[], $7::text[])
    AS u(order_id, exchange_order_id, order_qty, limit_price, cum_qty, notional, ord_status)
WHERE o.order_id = u.order_id
"""

_SAVE_PROGRESS = """
INSERT INTO fix_sessions (session_id, next_target_seq, store_created) VALUES ($1, $2, $3)
ON CONFLICT (session_id) DO UPDATE
SET next_target_seq = EXCLUDED.next_target_seq, store_created = EXCLUDED.store_created, updated_at = now()
"""


class PgExecStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record_new_orders(self, orders: Sequence[NewOrder]) -> dict[str, Recording]:
        # One row per order even if a batch carries the same command twice.
        unique: dict[str, NewOrder] = {}
        for order in orders:
            unique.setdefault(order.meta.order_id, order)
        rows = list(unique.values())
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = {
                r["command_id"]
                for r in await conn.fetch(
                    _RECORD_NEW,
                    [o.meta.command_id for o in rows],
                    [o.meta.order_id for o in rows],
                    [o.meta.user_id for o in rows],
                    [o.meta.request_id for o in rows],
                    [o.symbol for o in rows],
                    [o.side.value for o in rows],
                    [o.quantity for o in rows],
                    [o.limit_price for o in rows],
                )
            }
            others = [o.meta.order_id for o in rows if o.meta.command_id not in fresh]
            existing = {r["order_id"]: r for r in await conn.fetch(_EXISTING_NEW, others)} if others else {}
        result: dict[str, Recording] = {}
        for order in orders:
            command_id, order_id = order.meta.command_id, order.meta.order_id
            if command_id in fresh and unique[order_id] is order:
                result[command_id] = Recording(Recorded.FRESH, order.cl_ord_id)
                continue
            row = existing.get(order_id)
            if row is None or unique[order_id] is not order:
                # The same order twice in one batch: the first one sends it.
                result[command_id] = Recording(Recorded.SENT, order.cl_ord_id)
            elif row["abandoned"]:
                result[command_id] = Recording(Recorded.ABANDONED, order.cl_ord_id)
            elif row["state"] == "sent":
                result[command_id] = Recording(Recorded.SENT, order.cl_ord_id)
            else:
                result[command_id] = Recording(
                    Recorded.UNSURE, order.cl_ord_id, recorded_at=row["recorded_at"]
                )
        return result

    async def record_amendment(self, command: Amendment) -> Recording:
        kind = "replace" if isinstance(command, ReplaceOrder) else "cancel"
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT cl_ord_id, orig_cl_ord_id, state, recorded_at FROM commands WHERE command_id = $1",
                command.meta.command_id,
            )
            if row is not None:
                outcome = Recorded.SENT if row["state"] == "sent" else Recorded.UNSURE
                return Recording(outcome, row["cl_ord_id"], row["orig_cl_ord_id"] or "", row["recorded_at"])
            # The row lock orders concurrent amendments of one order.
            counter = await conn.fetchval(
                "UPDATE orders SET cl_ord_counter = cl_ord_counter + 1, updated_at = now() "
                "WHERE order_id = $1 AND NOT abandoned RETURNING cl_ord_counter",
                command.meta.order_id,
            )
            if counter is None:
                return Recording(Recorded.UNKNOWN_ORDER)
            orig = await conn.fetchval(_CURRENT_CL_ORD, command.meta.order_id)
            cl_ord_id = next_cl_ord_id(command.meta.order_id, counter)
            await conn.execute(
                "INSERT INTO commands (command_id, order_id, kind, cl_ord_id, cl_ord_seq, orig_cl_ord_id) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                command.meta.command_id,
                command.meta.order_id,
                kind,
                cl_ord_id,
                counter,
                orig,
            )
            return Recording(Recorded.FRESH, cl_ord_id, orig or command.meta.order_id)

    async def new_order_sent(self, order_id: str) -> bool | None:
        state = await self.pool.fetchval(
            "SELECT c.state FROM commands c JOIN orders o USING (order_id) "
            "WHERE c.order_id = $1 AND c.kind = 'new' AND NOT o.abandoned",
            order_id,
        )
        return None if state is None else state == "sent"

    async def now(self) -> datetime:
        return await self.pool.fetchval("SELECT now()")

    async def unanswered_cancels(self, sent_before: datetime) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT c.order_id, c.cl_ord_id FROM commands c JOIN orders o USING (order_id) "
            "WHERE c.kind = 'cancel' AND c.state = 'sent' AND NOT c.refused AND c.sent_at < $1 "
            "AND NOT o.abandoned AND o.ord_status NOT IN ('2', '4', '8', 'C') "
            "AND c.cl_ord_seq = (SELECT max(cl_ord_seq) FROM commands WHERE order_id = c.order_id)",
            sent_before,
        )
        return [(r["order_id"], r["cl_ord_id"]) for r in rows]

    async def mark_sent(self, command_ids: Sequence[str]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # A mark lost in a database crash costs only a look into the FIX store when the
            # command comes back: no need to wait for the disk.
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute(
                "UPDATE commands SET state = 'sent', sent_at = now() WHERE command_id = ANY($1::text[]) "
                "AND state = 'recorded'",
                list(command_ids),
            )

    async def mark_refused(self, cl_ord_id: str) -> None:
        await self.pool.execute(
            "UPDATE commands SET refused = true WHERE cl_ord_id = $1 AND kind <> 'new'", cl_ord_id
        )

    async def order_of(self, cl_ord_id: str) -> str | None:
        return await self.pool.fetchval("SELECT order_id FROM commands WHERE cl_ord_id = $1", cl_ord_id)

    async def load_view(self, order_id: str) -> OrderView | None:
        row = await self.pool.fetchrow("SELECT * FROM orders WHERE order_id = $1 AND NOT abandoned", order_id)
        return _view(row) if row is not None else None

    async def current_cl_ord_id(self, order_id: str) -> str | None:
        return await self.pool.fetchval(_CURRENT_CL_ORD, order_id)

    async def working_orders(self, limit: int) -> list[OrderView]:
        rows = await self.pool.fetch(
            "SELECT * FROM orders WHERE ord_status NOT IN ('2', '4', '8', 'C') AND NOT abandoned "
            "ORDER BY created_at LIMIT $1",
            limit,
        )
        return [_view(r) for r in rows]

    async def abandon_if_unknown(self, order_id: str) -> bool:
        inserted = await self.pool.fetchval(
            "INSERT INTO orders (order_id, user_id, symbol, side, order_qty, abandoned) "
            "VALUES ($1, '', '', '', 0, true) ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
            order_id,
        )
        if inserted is not None:
            return True
        return bool(await self.pool.fetchval("SELECT abandoned FROM orders WHERE order_id = $1", order_id))

    async def record_incident(self, key: str, venue: str, incident: VenueIncident, order_id: str) -> bool:
        """Store an incident; False if this one (same key) was stored before."""
        row_id = await self.pool.fetchval(
            _RECORD_INCIDENT,
            key,
            venue,
            incident.kind,
            incident.reason,
            incident.text,
            incident.raw,
            incident.cl_ord_id,
            order_id,
            incident.ref_msg_type,
            incident.ref_seq,
        )
        return row_id is not None

    async def incidents(self, limit: int) -> tuple[list[StoredIncident], int]:
        rows = await self.pool.fetch("SELECT * FROM venue_incidents ORDER BY id DESC LIMIT $1", limit)
        total = await self.pool.fetchval("SELECT count(*) FROM venue_incidents")
        return [
            StoredIncident(
                r["id"],
                r["venue"],
                r["kind"],
                r["reason"],
                r["text"],
                r["raw"],
                r["order_id"],
                r["recorded_at"],
            )
            for r in rows
        ], int(total)

    async def load_progress(self, session_id: str) -> SessionProgress | None:
        row = await self.pool.fetchrow(
            "SELECT next_target_seq, store_created FROM fix_sessions WHERE session_id = $1", session_id
        )
        return SessionProgress(row["next_target_seq"], row["store_created"]) if row else None

    async def save_progress(
        self, session_id: str, progress: SessionProgress, snapshots: Sequence[OrderSnapshot]
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if snapshots:
                await conn.execute(
                    _SAVE_VIEWS,
                    [s.order_id for s in snapshots],
                    [s.exchange_order_id for s in snapshots],
                    [s.order_qty for s in snapshots],
                    [s.limit_price for s in snapshots],
                    [s.cum_qty for s in snapshots],
                    [s.notional for s in snapshots],
                    [s.status.value for s in snapshots],
                )
            await conn.execute(_SAVE_PROGRESS, session_id, progress.next_target_seq, progress.store_created)


_RECORD_INCIDENT = """
INSERT INTO venue_incidents
    (incident_key, venue, kind, reason, text, raw, cl_ord_id, order_id, ref_msg_type, ref_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (incident_key) DO NOTHING
RETURNING id
"""


def _view(row: asyncpg.Record) -> OrderView:
    return OrderView(
        order_id=row["order_id"],
        user_id=row["user_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        order_qty=row["order_qty"],
        limit_price=row["limit_price"],
        request_id=row["request_id"],
        exchange_order_id=row["exchange_order_id"],
        cum_qty=row["cum_qty"],
        notional=Decimal(row["notional"]),
        status=OrdStatus(row["ord_status"]),
    )
