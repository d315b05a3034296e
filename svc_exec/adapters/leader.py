"""One active executor per FIX session: replicas take turns through a PostgreSQL lock.

Two processes on one FIX session (and one message store) would corrupt its sequence
numbers, so only the holder of a session-level advisory lock starts the initiator and
consumes commands; standbys wait for it. The lock lives on a dedicated connection and
disappears with the holder's process or connection, so a kill -9 hands over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

import asyncpg

from svc_runtime import aio
from svc_runtime.db import asyncpg_dsn

log = logging.getLogger(__name__)


class SessionLease:
    def __init__(self, database_url: str, session_key: str) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.session_key = session_key
        self.key = int.from_bytes(
            hashlib.sha256(f"fix:{session_key}".encode()).digest()[:8], "big", signed=True
        )
        self.conn: asyncpg.Connection | None = None
        self.lost = asyncio.Event()

    async def acquire(self, stop: asyncio.Event, poll: float = 1.0) -> bool:
        """Wait until this process holds the session, or `stop` is set."""
        announced = False
        while not stop.is_set():
            try:
                if self.conn is None or self.conn.is_closed():
                    self.conn = await asyncpg.connect(self.dsn)
                if await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                    self.conn.add_termination_listener(lambda _conn: self.lost.set())
                    log.info("holding the FIX session", extra={"session": self.session_key})
                    return True
                if not announced:
                    log.info(
                        "another executor holds the FIX session; standing by",
                        extra={"session": self.session_key},
                    )
                    announced = True
            except (OSError, asyncpg.PostgresError):
                log.warning("cannot reach PostgreSQL for the session lease", exc_info=True)
                self.conn = None
            with contextlib.suppress(TimeoutError):
                await aio.within(stop.wait(), poll)
        return False

    async def release(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await self.conn.close()
        self.conn = None
