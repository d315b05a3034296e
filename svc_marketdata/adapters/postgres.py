"""The instrument master in PostgreSQL (schema `marketdata`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg

from svc_marketdata.domain.instruments import Instrument

SCHEMA = "marketdata"
MIGRATIONS = Path(__file__).parent / "migrations"


class PgInstrumentRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def load(self) -> list[Instrument]:
        rows = await self.pool.fetch(
            "SELECT symbol, company_name, sector, tick_size, lot_size, previous_close, isin "
            "FROM instruments WHERE listed ORDER BY symbol"
        )
        return [
            Instrument(
                symbol=r["symbol"],
                company_name=r["company_name"],
                sector=r["sector"],
                tick_size=r["tick_size"],
                lot_size=r["lot_size"],
                previous_close=r["previous_close"],
                isin=r["isin"],
            )
            for r in rows
        ]

    async def replace(self, instruments: Sequence[Instrument]) -> None:
        symbols = [i.symbol for i in instruments]
        columns = (
            symbols,
            [i.company_name for i in instruments],
            [i.sector for i in instruments],
            [i.tick_size for i in instruments],
            [i.lot_size for i in instruments],
            [i.previous_close for i in instruments],
            [i.isin for i in instruments],
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO instruments AS i
                    (symbol, company_name, sector, tick_size, lot_size, previous_close, isin, listed, updated_at)
                SELECT *, true, now()
                FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::bigint[],
                            $6::numeric[], $7::text[])
                ON CONFLICT (symbol) DO UPDATE SET
                    company_name = excluded.company_name,
                    sector = excluded.sector,
                    tick_size = excluded.tick_size,
                    lot_size = excluded.lot_size,
                    previous_close = excluded.previous_close,
                    isin = excluded.isin,
                    listed = true,
                    updated_at = now()
                """,
                *columns,
            )
            await conn.execute(
                "UPDATE instruments SET listed = false, updated_at = now() "
                "WHERE listed AND NOT (symbol = ANY($1::text[]))",
                symbols,
            )
