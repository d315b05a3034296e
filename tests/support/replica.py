"""A PostgreSQL primary with a streaming replica of its own, for tests of reads from a
replica: two embedded servers, the second cloned from the first with pg_basebackup and
started as a hot standby. Both load pg_stat_statements, so a test can see which server ran
what."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg

from svc_runtime import db
from svc_runtime.infra.postgres import EmbeddedPostgres
from tests.support.infra import scratch_dir, unique_name
from tests.support.polling import eventually

SETTINGS = {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all"}


@dataclass
class Replicated:
    primary_url: str
    replica_url: str

    async def database(self) -> tuple[str, str]:
        """A new database (with pg_stat_statements) on the primary: its URL there and on the
        replica, once the replica has it."""
        name = unique_name("r_")
        url = await db.create_database(self.primary_url, name)
        conn = await asyncpg.connect(db.asyncpg_dsn(url))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()
        replica_url = db.with_database(self.replica_url, name)

        async def replayed() -> bool:
            try:
                conn = await asyncpg.connect(db.asyncpg_dsn(replica_url))
            except asyncpg.InvalidCatalogNameError:
                return False
            await conn.close()
            return True

        await eventually(replayed, timeout=30)
        return url, replica_url


@contextmanager
def primary_and_replica() -> Iterator[Replicated]:
    root = scratch_dir("brokermesh-replica-")
    primary = EmbeddedPostgres(root / "primary")
    replica = EmbeddedPostgres(root / "replica")
    handles = []
    try:
        handles.append(primary.start(settings=SETTINGS))
        replica.clone_as_standby(primary, handles[0].port)
        handles.append(replica.start(settings=SETTINGS))
        yield Replicated(handles[0].url, handles[1].url)
    finally:
        for handle in reversed(handles):
            handle.stop()
        for server in (replica, primary):
            server.remove()
        shutil.rmtree(root, ignore_errors=True)


async def calls(url: str, pattern: str) -> int:
    """How often the server at `url` has run statements like `pattern` (SQL LIKE) in its
    database."""
    conn = await asyncpg.connect(db.asyncpg_dsn(url))
    try:
        value = await conn.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = current_database() AND s.query LIKE $1",
            pattern,
        )
        return int(value)
    finally:
        await conn.close()


async def replay(replica_url: str, *, paused: bool) -> None:
    """Pause the replica's WAL replay (it lags from then on), or resume it."""
    conn = await asyncpg.connect(db.asyncpg_dsn(replica_url))
    try:
        await conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")
    finally:
        await conn.close()
