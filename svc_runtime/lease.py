"""Leases: one process at a time does what must not be done twice (svc_exec's FIX session,
svc_orders' sweeper), through a PostgreSQL session-level advisory lock.

The lock lives on a connection of its own and disappears with the holder's process or
connection, so a kill -9 hands over as soon as PostgreSQL notices. Fencing: the holder
confirms on that same connection, before each round of work, that the lock is still its own
(`confirm`); a holder whose connection went away (and whose lock another may now hold) finds
out there, sets `lost` and stops acting, instead of acting on a lease it no longer has.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from svc_runtime import aio
from svc_runtime.db import asyncpg_dsn

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """The advisory lock's key for `name`: stable across processes and versions."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Lease:
    def __init__(self, database_url: str, name: str) -> None:
        self.dsn = asyncpg_dsn(database_url)
        self.name = name
        self.key = lock_key(name)
        self.conn: asyncpg.Connection | None = None
        self.lost = asyncio.Event()
        # One query at a time on the lock's connection (the watch and the work both confirm).
        self._using = asyncio.Lock()

    async def acquire(self, stop: asyncio.Event, poll: float = 1.0) -> bool:
        """Wait until this process holds the lease, or `stop` is set."""
        announced = False
        self.lost.clear()
        while not stop.is_set():
            try:
                if self.conn is None or self.conn.is_closed():
                    self.conn = await asyncpg.connect(self.dsn)
                if await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                    self.conn.add_termination_listener(lambda _conn: self.lost.set())
                    log.info("holding the lease", extra={"lease": self.name})
                    return True
                if not announced:
                    log.info("another process holds the lease; standing by", extra={"lease": self.name})
                    announced = True
            except (OSError, asyncpg.PostgresError):
                log.warning(
                    "cannot reach PostgreSQL for the lease", exc_info=True, extra={"lease": self.name}
                )
                await self._drop()
            with contextlib.suppress(TimeoutError):
                await aio.within(stop.wait(), poll)
        return False

    async def confirm(self) -> bool:
        """Whether the lease is still this process's (its lock held by its connection); the
        fence to check before acting. False also sets `lost`."""
        async with self._using:
            return await self._confirm()

    async def _confirm(self) -> bool:
        try:
            if self.conn is not None and not self.conn.is_closed():
                # A bigint advisory key shows in pg_locks as its high and low 32 bits.
                held = await self.conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND granted AND objsubid = 1 AND classid::bigint = $1 AND objid::bigint = $2",
                    (self.key >> 32) & 0xFFFFFFFF,
                    self.key & 0xFFFFFFFF,
                )
                if held:
                    return True
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("cannot confirm the lease", exc_info=True, extra={"lease": self.name})
        log.error("the lease is no longer held; stopping its work", extra={"lease": self.name})
        self.lost.set()
        await self._drop()
        return False

    async def watch(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Confirm the lease every `interval` until it is lost (`lost` set) or `stop`: a
        holder cut off from PostgreSQL learns it within `interval`, not at its next write."""
        while not stop.is_set() and not self.lost.is_set():
            with contextlib.suppress(TimeoutError):
                await aio.within(stop.wait(), interval)
            if not stop.is_set():
                await self.confirm()

    async def _drop(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            with contextlib.suppress(Exception):
                await self.conn.close()
        self.conn = None

    async def release(self) -> None:
        await self._drop()


async def as_singleton(
    lease: Lease, work: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Run `work` only while holding `lease`, until `stop`: on a standby it waits; a lost
    lease stops the work (the event it is given is set), and the lease is sought again."""
    try:
        while await lease.acquire(stop):
            ended = asyncio.Event()
            watch = asyncio.create_task(_first_of(stop, lease.lost, ended))
            confirming = asyncio.create_task(lease.watch(ended))
            try:
                await work(ended)
            finally:
                ended.set()
                await watch
                await confirming
            await lease.release()
    finally:
        await lease.release()


async def _first_of(stop: asyncio.Event, lost: asyncio.Event, ended: asyncio.Event) -> None:
    """Set `ended` once `stop` or `lost` is."""
    waits = {asyncio.create_task(e.wait()) for e in (stop, lost, ended)}
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    ended.set()
