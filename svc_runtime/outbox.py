"""The transactional outbox: write messages with the state change, publish them after.

`add` runs inside the caller's transaction. `OutboxRelay` publishes committed rows to
JetStream in order, pipelined in batches, and deletes them once every ack is in. A crash
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

import asyncpg
from google.protobuf.message import Message
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
    ) -> None:
        self.pool = pool
        self.js = js
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
            # Pipelined: every publish is on the wire before the first ack is awaited.
            acks = [
                self.js.publish(row["subject"], bytes(row["payload"]), headers=json.loads(row["headers"]))
                for row in rows
            ]
            await asyncio.gather(*acks)
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [row["id"] for row in rows])
        self.published += len(rows)
        return len(rows)
