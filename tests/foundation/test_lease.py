"""Leases over a real PostgreSQL: one holder at a time, a standby takes over when the holder's
connection goes, and a holder that lost its lock learns it at its next confirmation (fencing)
instead of acting on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from svc_runtime.db import asyncpg_dsn
from svc_runtime.lease import Lease, as_singleton
from tests.support.polling import eventually


async def test_one_holder_at_a_time_and_a_cut_off_holder_stops_acting(database_url: str) -> None:
    stop = asyncio.Event()
    first, second = Lease(database_url, "test:sweeper"), Lease(database_url, "test:sweeper")
    try:
        assert await first.acquire(stop)
        # The work and the lease's own watch confirm at the same time, on one connection.
        assert all(await asyncio.gather(*(first.confirm() for _ in range(5))))
        # The other waits while the first holds it.
        waiting = asyncio.create_task(second.acquire(stop, poll=0.05))
        await asyncio.sleep(0.3)
        assert not waiting.done()

        # The first holder's connection is cut (as by a network fault or an operator).
        await _cut(database_url, first)
        assert await asyncio.wait_for(waiting, 10)
        assert await second.confirm()
        # The cut-off holder finds out before acting again, and says so.
        assert not await first.confirm()
        assert first.lost.is_set()
    finally:
        stop.set()
        await first.release()
        await second.release()


async def test_a_singleton_runs_on_one_replica_and_moves_when_its_holder_goes(database_url: str) -> None:
    stop = asyncio.Event()
    running: list[str] = []
    started: list[str] = []
    overlaps: list[list[str]] = []
    leases = {name: Lease(database_url, "test:singleton") for name in ("a", "b")}

    def work(name: str) -> Callable[[asyncio.Event], Awaitable[None]]:
        async def run(ended: asyncio.Event) -> None:
            running.append(name)
            started.append(name)
            if len(running) > 1:
                overlaps.append(list(running))
            try:
                await ended.wait()
            finally:
                running.remove(name)

        return run

    tasks = {
        name: asyncio.create_task(as_singleton(lease, work(name), stop)) for name, lease in leases.items()
    }
    try:
        await eventually(lambda: len(running) == 1)
        await asyncio.sleep(0.5)
        assert len(running) == 1, running
        # The holder's connection is cut: its work is stopped (within the lease's confirmation
        # interval) and started again under a new hold (the other replica's, or its own again
        # once it reconnects); never two at once.
        await _cut(database_url, leases[running[0]])
        await eventually(lambda: len(started) == 2 and len(running) == 1, timeout=10)
        assert not overlaps, overlaps
        assert not any(task.done() for task in tasks.values())
    finally:
        stop.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def _cut(database_url: str, lease: Lease) -> None:
    """End the lease's connection from the server's side."""
    assert lease.conn is not None
    pid = lease.conn.get_server_pid()
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
