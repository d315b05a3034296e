"""Price alerts and their fired events in PostgreSQL (schema `marketdata`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from svc_marketdata.app.alerts import AlertEventRecord
from svc_marketdata.domain.alerts import Alert, AlertState, Condition


class PgAlertStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def active(self) -> list[Alert]:
        rows = await self.pool.fetch("SELECT * FROM price_alerts WHERE state = 'ACTIVE' AND NOT deleted")
        return [_alert(r) for r in rows]

    async def create(self, alert: Alert, request_id: str) -> Alert:
        row = await self.pool.fetchrow(
            "INSERT INTO price_alerts (alert_id, user_id, request_id, symbol, condition, threshold, note, "
            "create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (user_id, request_id) DO NOTHING RETURNING *",
            alert.alert_id,
            alert.user_id,
            request_id,
            alert.symbol,
            alert.condition.value,
            alert.threshold,
            alert.note,
            alert.create_time,
        )
        if row is None:  # the same key again: the alert it created
            row = await self.pool.fetchrow(
                "SELECT * FROM price_alerts WHERE user_id = $1 AND request_id = $2", alert.user_id, request_id
            )
        return _alert(row)

    async def count(self, user_id: str) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM price_alerts WHERE user_id = $1 AND NOT deleted", user_id
            )
        )

    async def of_user(self, user_id: str) -> list[Alert]:
        rows = await self.pool.fetch(
            "SELECT * FROM price_alerts WHERE user_id = $1 AND NOT deleted ORDER BY create_time DESC, alert_id",
            user_id,
        )
        return [_alert(r) for r in rows]

    async def delete(self, user_id: str, alert_id: str) -> bool:
        # Kept, marked deleted: a fired alert's event refers to it.
        result = await self.pool.execute(
            "UPDATE price_alerts SET deleted = true WHERE alert_id = $1 AND user_id = $2 AND NOT deleted",
            alert_id,
            user_id,
        )
        return result != "UPDATE 0"

    async def fire(self, alert: Alert, price: Decimal, at: datetime) -> AlertEventRecord | None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE price_alerts SET state = 'FIRED', fire_time = $2, fired_price = $3 "
                "WHERE alert_id = $1 AND state = 'ACTIVE' AND NOT deleted RETURNING *",
                alert.alert_id,
                at,
                price,
            )
            if row is None:
                return None
            fired = _alert(row)
            event_id = await conn.fetchval(
                "INSERT INTO price_alert_events (alert_id, user_id) VALUES ($1, $2) RETURNING event_id",
                fired.alert_id,
                fired.user_id,
            )
        return AlertEventRecord(event_id, fired)

    async def events_after(self, user_id: str, event_id: int, limit: int) -> list[AlertEventRecord]:
        rows = await self.pool.fetch(
            "SELECT e.event_id, a.* FROM price_alert_events e JOIN price_alerts a USING (alert_id) "
            "WHERE e.user_id = $1 AND e.event_id > $2 ORDER BY e.event_id LIMIT $3",
            user_id,
            event_id,
            limit,
        )
        return [AlertEventRecord(r["event_id"], _alert(r)) for r in rows]

    async def last_event_id(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(event_id), 0) FROM price_alert_events"))


def _alert(row: asyncpg.Record) -> Alert:
    return Alert(
        alert_id=row["alert_id"],
        user_id=row["user_id"],
        symbol=row["symbol"],
        condition=Condition(row["condition"]),
        threshold=row["threshold"],
        note=row["note"],
        state=AlertState(row["state"]),
        create_time=row["create_time"],
        fire_time=row["fire_time"],
        fired_price=row["fired_price"],
    )
