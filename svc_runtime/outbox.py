"""The transactional outbox: write messages with the state change, publish them after.

`add` runs inside the caller's transaction. `OutboxRelay` publishes committed rows to
JetStream in order, pipelined in batches, and deletes them once every ack is in. Rows on
subjects no stream keeps (live feeds such as order events, whose record is a table) go out
on core NATS, confirmed by a round trip to the server before their rows are deleted. A crash
between publish and delete republishes with the same `Nats-Msg-Id`; JetStream's dedup
window and the consumers' unique keys absorb the repeat. Only one relay of a service
publishes at a time (a transaction-scoped advisory lock), which keeps the order of
messages the order of commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable

import asyncpg
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from svc_runtime import aio
from svc_runtime.messaging import headers_for

log = logging.getLogger(__name__)

INSERT_SQL = "INSERT INTO outbox (msg_id, subject, payload, headers) VALUES ($1, $2, $3, $4::jsonb)"


def headers_json(message: Message, msg_id: str, subject: str) -> str:
    """The `headers` column of `message`'s row, for callers that write the row themselves
    (inside a larger statement)."""
    return json.dumps(headers_for(message, msg_id, subject))


async def add(conn: asyncpg.Connection, subject: str, message: Message, msg_id: str) -> None:
    """Queue `message` for publication, in the caller's transaction."""
    await conn.execute(
        INSERT_SQL, msg_id, subject, message.SerializeToString(), headers_json(message, msg_id, subject)
    )


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        *,
        schema: str,
        batch_size: int = 500,
        idle_poll: float = 0.5,
        nc: NatsClient | None = None,
        stored: Callable[[str], bool] = lambda subject: True,
        flush_timeout: float = 10.0,
    ) -> None:
        self.pool = pool
        self.js = js
        # `nc` publishes what `stored` says no stream keeps.
        self.nc = nc
        self.stored = stored
        self.flush_timeout = flush_timeout
        self.schema = schema
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self.published = 0
        self._channel = f"outbox_{schema}"
        self._lock_key = int.from_bytes(
            hashlib.sha256(f"outbox:{schema}".encode()).digest()[:8], "big", signed=True
        )

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    async def run(self) -> None:
        listener = await self.pool.acquire()
        try:
            await listener.add_listener(self._channel, self._on_notify)
            while not self._stopped.is_set():
                try:
                    moved = await self.relay_once()
                except Exception:
                    log.warning("outbox relay failed; retrying", exc_info=True)
                    await asyncio.sleep(0.5)
                    continue
                if moved < self.batch_size:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await aio.within(self._wake.wait(), self.idle_poll)
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(self._channel, self._on_notify)
            await self.pool.release(listener)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows were published."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self._lock_key):
                return 0
            rows = await conn.fetch(
                "SELECT id, msg_id, subject, payload, headers FROM outbox ORDER BY id LIMIT $1",
                self.batch_size,
            )
            if not rows:
                return 0
            await self._publish(rows)
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows])
        self.published += len(rows)
        return len(rows)

    async def _publish(self, rows: list[asyncpg.Record]) -> None:
        """Every row on the wire, in order, before the first ack is awaited (pipelined);
        returns once each is acknowledged by its stream or, for a live subject, flushed to
        the server."""
        acks = []
        live = 0
        for row in rows:
            subject, payload, headers = row["subject"], bytes(row["payload"]), json.loads(row["headers"])
            if self.nc is not None and not self.stored(subject):
                await self.nc.publish(subject, payload, headers=headers)
                live += 1
            else:
                acks.append(self.js.publish(subject, payload, headers=headers))
        await asyncio.gather(*acks)
        if live:
            assert self.nc is not None
            await self.nc.flush(self.flush_timeout)
