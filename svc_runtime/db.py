"""PostgreSQL access: one schema per service, SQL-file migrations and asyncpg pools.

Each service owns one schema (`orders`, `funds`, `exec`, `marketdata`) and sees only it
(its connections' search_path). Statements go through asyncpg directly: SQLAlchemy's
asyncio engine costs 2–3× the CPU per statement (docs/architecture.md, "Decisions").
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def asyncpg_dsn(url: str) -> str:
    """`postgresql://…` for asyncpg, whatever driver suffix the URL carries."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "postgres":
        scheme = "postgresql"
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def _check_schema(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    return schema


# Planner settings for connections whose every statement reaches rows by key (a batch's
# locked reads and its one write): index lookups and nested loops only, one plan per
# statement. Left to its statistics, the planner picks a sequential scan and hash join for
# a table that is small or was empty when a connection first planned a statement, and a
# cached generic plan then scans the whole (growing, churned) table on every call.
KEYED_ACCESS = {
    "enable_seqscan": "off",
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
    "plan_cache_mode": "force_generic_plan",
}


async def create_pool(
    url: str,
    schema: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    settings: dict[str, str] | None = None,
    **options: Any,
) -> asyncpg.Pool:
    """A raw asyncpg pool whose connections see only `schema`, for hot paths. `settings` are
    more server settings for its connections (e.g. `KEYED_ACCESS`). `options` go to
    `asyncpg.create_pool` (e.g. `reset=` to skip the reset round trip on release for code
    that leaves no session state behind)."""
    return await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": _check_schema(schema), **(settings or {})},
        **options,
    )


async def keep_session(connection: asyncpg.Connection) -> None:
    """A pool's `reset=` for code that leaves no session state on pooled connections
    (settings, cursors, session locks, LISTEN): a release without asyncpg's reset, four
    statements (UNLISTEN, advisory unlock, RESET ALL, CLOSE ALL) per release. asyncpg still
    rolls back a transaction left open."""


RUNTIME_MIGRATIONS = Path(__file__).parent / "migrations"


async def migrate(url: str, schema: str, *migration_dirs: Path) -> list[str]:
    """Apply `NNN_*.sql` files from `migration_dirs` not yet applied to `schema`, each in its
    own transaction, in file-name order. Replicas starting together serialize on an advisory
    lock. Pass `RUNTIME_MIGRATIONS` too for the shared tables (the outbox).
    Returns the versions applied now."""
    _check_schema(schema)
    files = sorted((f for d in migration_dirs for f in d.glob("*.sql")), key=lambda f: f.name)
    applied_now: list[str] = []
    lock_key = int.from_bytes(hashlib.sha256(f"migrate:{schema}".encode()).digest()[:8], "big", signed=True)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
                "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
            }
            for file in files:
                version = file.stem
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                    await conn.execute(file.read_text())
                    await conn.execute(
                        f'INSERT INTO "{schema}".schema_migrations (version) VALUES ($1)', version
                    )
                applied_now.append(version)
                log.info("applied migration", extra={"schema": schema, "version": version})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    finally:
        await conn.close()
    return applied_now


async def create_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url` if missing; return its URL."""
    if not _SCHEMA_NAME.match(name):
        raise ValueError(f"bad database name {name!r}")
    conn = await asyncpg.connect(asyncpg_dsn(with_database(url, "postgres")))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(url, name)
