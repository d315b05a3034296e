"""GTTs in PostgreSQL (table `gtts`, schema `orders`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from svc_orders.domain.gtt import Direction, Gtt, GttStatus
from svc_orders.domain.model import OrderSpec, OrderType, Product, Side, TimeInForce


def _gtt(row: asyncpg.Record) -> Gtt:
    return Gtt(
        gtt_id=row["gtt_id"],
        user_id=row["user_id"],
        client_request_id=row["client_request_id"],
        trigger_price=row["trigger_price"],
        direction=Direction(row["direction"]),
        order=OrderSpec(
            symbol=row["symbol"],
            side=Side(row["side"]),
            type=OrderType(row["order_type"]),
            time_in_force=TimeInForce(row["time_in_force"]),
            product=Product(row["product"]),
            quantity=row["quantity"],
            limit_price=row["limit_price"],
        ),
        status=GttStatus(row["status"]),
        create_time=row["create_time"],
        expire_time=row["expire_time"],
        order_id=row["order_id"],
        status_reason=row["status_reason"],
        trigger_time=row["trigger_time"],
        triggered_at_price=row["triggered_at_price"],
    )


class PostgresGttStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, gtt: Gtt) -> Gtt:
        """Record `gtt` unless its (user, key) exists; either way, the GTT of that key."""
        o = gtt.order
        await self.pool.execute(
            "INSERT INTO gtts (gtt_id, user_id, client_request_id, symbol, trigger_price, direction, side, "
            "order_type, time_in_force, product, quantity, limit_price, status, create_time, expire_time) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) "
            "ON CONFLICT (user_id, client_request_id) DO NOTHING",
            gtt.gtt_id,
            gtt.user_id,
            gtt.client_request_id,
            o.symbol,
            gtt.trigger_price,
            gtt.direction.value,
            o.side.value,
            o.type.value,
            o.time_in_force.value,
            o.product.value,
            o.quantity,
            o.limit_price,
            gtt.status.value,
            gtt.create_time,
            gtt.expire_time,
        )
        row = await self.pool.fetchrow(
            "SELECT * FROM gtts WHERE user_id = $1 AND client_request_id = $2",
            gtt.user_id,
            gtt.client_request_id,
        )
        return _gtt(row)

    async def get(self, user_id: str, gtt_id: str) -> Gtt | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM gtts WHERE gtt_id = $1 AND user_id = $2", gtt_id, user_id
        )
        return _gtt(row) if row else None

    async def for_user(self, user_id: str, limit: int = 500) -> list[Gtt]:
        rows = await self.pool.fetch(
            "SELECT * FROM gtts WHERE user_id = $1 ORDER BY gtt_id DESC LIMIT $2", user_id, limit
        )
        return [_gtt(r) for r in rows]

    async def live(self) -> list[Gtt]:
        """ACTIVE GTTs, and TRIGGERED ones whose order is not placed yet."""
        rows = await self.pool.fetch(
            "SELECT * FROM gtts WHERE status = 'ACTIVE' OR (status = 'TRIGGERED' AND order_id = '')"
        )
        return [_gtt(r) for r in rows]

    async def end(self, gtt_id: str, status: GttStatus, reason: str) -> Gtt | None:
        """ACTIVE → CANCELLED or EXPIRED; None when it was no longer ACTIVE."""
        row = await self.pool.fetchrow(
            "UPDATE gtts SET status = $2, status_reason = $3 WHERE gtt_id = $1 AND status = 'ACTIVE' RETURNING *",
            gtt_id,
            status.value,
            reason,
        )
        return _gtt(row) if row else None

    async def fire(self, gtt_id: str, last_price: Decimal, when: datetime) -> Gtt | None:
        """ACTIVE → TRIGGERED; None when something else fired, cancelled or expired it first."""
        row = await self.pool.fetchrow(
            "UPDATE gtts SET status = 'TRIGGERED', trigger_time = $3, triggered_at_price = $2 "
            "WHERE gtt_id = $1 AND status = 'ACTIVE' RETURNING *",
            gtt_id,
            last_price,
            when,
        )
        return _gtt(row) if row else None

    async def placed(self, gtt_id: str, order_id: str, reason: str) -> None:
        """The fired GTT's order was placed (`order_id`), or refused for good (`reason`)."""
        await self.pool.execute(
            "UPDATE gtts SET order_id = $2, status = CASE WHEN $2 = '' THEN 'FAILED' ELSE status END, "
            "status_reason = $3 WHERE gtt_id = $1 AND status = 'TRIGGERED' AND order_id = ''",
            gtt_id,
            order_id,
            reason,
        )
