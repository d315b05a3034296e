"""What SQLAlchemy's asyncio engine costs a statement beside asyncpg's own pool: CPU per
statement (this process; the server's share is the same for both) for the order path's
commonest statement shape, a keyed single-row read, and for a keyed read-modify-write
transaction, in the same run, alternating rounds.

    python -m bench.sqlalchemy_cost [--statements 3000] [--rounds 3]

Uses BROKERMESH_DATABASE_URL when set, else starts an embedded PostgreSQL of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from svc_runtime.db import asyncpg_dsn
from svc_runtime.infra.postgres import EmbeddedPostgres

ROWS = 1000
SELECT = "SELECT order_id, user_id, quantity, version FROM bench_orders WHERE order_id = $1"
UPDATE = "UPDATE bench_orders SET version = version + 1 WHERE order_id = $1"
SA_SELECT = sqlalchemy.text(
    "SELECT order_id, user_id, quantity, version FROM bench_orders WHERE order_id = :id"
)
SA_UPDATE = sqlalchemy.text("UPDATE bench_orders SET version = version + 1 WHERE order_id = :id")


async def _prepare(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "DROP TABLE IF EXISTS bench_orders; CREATE TABLE bench_orders (order_id text PRIMARY KEY, "
        "user_id text NOT NULL, quantity bigint NOT NULL, version int NOT NULL)"
    )
    await pool.executemany(
        "INSERT INTO bench_orders VALUES ($1, $2, $3, 0)", [(f"o{i}", f"u{i % 50}", i) for i in range(ROWS)]
    )


def _asyncpg_cases(pool: asyncpg.Pool) -> dict[str, Callable[[int], Awaitable[None]]]:
    async def read(i: int) -> None:
        await pool.fetchrow(SELECT, f"o{i % ROWS}")

    async def read_modify_write(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchrow(SELECT + " FOR UPDATE", f"o{i % ROWS}")
            await conn.execute(UPDATE, f"o{i % ROWS}")

    return {"read": read, "read_modify_write": read_modify_write}


def _sqlalchemy_cases(engine: AsyncEngine) -> dict[str, Callable[[int], Awaitable[None]]]:
    locked = sqlalchemy.text(str(SA_SELECT) + " FOR UPDATE")

    async def read(i: int) -> None:
        async with engine.connect() as conn:
            (await conn.execute(SA_SELECT, {"id": f"o{i % ROWS}"})).first()

    async def read_modify_write(i: int) -> None:
        async with engine.begin() as conn:
            (await conn.execute(locked, {"id": f"o{i % ROWS}"})).first()
            await conn.execute(SA_UPDATE, {"id": f"o{i % ROWS}"})

    return {"read": read, "read_modify_write": read_modify_write}


async def _cpu_per_call(call: Callable[[int], Awaitable[None]], count: int) -> float:
    """Microseconds of this process's CPU per call, calls made one after another."""
    for i in range(50):  # warm the pool and statement caches
        await call(i)
    started = time.process_time()
    for i in range(count):
        await call(i)
    return (time.process_time() - started) / count * 1e6


async def _measure(url: str, statements: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=2, max_size=2)
    engine = create_async_engine(
        url.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=2, max_overflow=0
    )
    try:
        await _prepare(pool)
        drivers = {"asyncpg": _asyncpg_cases(pool), "sqlalchemy": _sqlalchemy_cases(engine)}
        figures: dict[str, dict[str, list[float]]] = {
            case: {d: [] for d in drivers} for case in ("read", "read_modify_write")
        }
        for _ in range(rounds):
            for case in figures:
                for driver, cases in drivers.items():
                    figures[case][driver].append(await _cpu_per_call(cases[case], statements))
        return figures
    finally:
        await engine.dispose()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("BROKERMESH_DATABASE_URL")
    handle = None
    with tempfile.TemporaryDirectory(prefix="bench-sqlalchemy-") as scratch:
        if not url:
            handle = EmbeddedPostgres(Path(scratch) / "postgres").start()
            url = handle.url
        try:
            figures = asyncio.run(_measure(url, args.statements, args.rounds))
        finally:
            if handle is not None:
                handle.stop()
    print(f"CPU of this process per call (µs), median of {args.rounds} rounds of {args.statements}:")
    for case, drivers in figures.items():
        base = statistics.median(drivers["asyncpg"])
        other = statistics.median(drivers["sqlalchemy"])
        print(f"  {case:18} asyncpg {base:7.1f}   sqlalchemy {other:7.1f}   ratio {other / base:4.2f}×")


if __name__ == "__main__":
    main()
