"""The instrument master and the candles in PostgreSQL (schema `marketdata`)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from svc_marketdata.domain.candles import Candle
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


class PgCandleStore:
    """Candles in `marketdata.candles`, one row per (symbol, interval, start)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def save(self, candles: Sequence[Candle]) -> None:
        if not candles:
            return
        await self.pool.execute(
            """
            INSERT INTO candles AS c (symbol, period, start_time, open, high, low, close, volume)
            SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::numeric[],
                                 $5::numeric[], $6::numeric[], $7::numeric[], $8::bigint[])
            ON CONFLICT (symbol, period, start_time) DO UPDATE SET
                high = excluded.high, low = excluded.low, close = excluded.close,
                volume = excluded.volume
            """,
            [c.symbol for c in candles],
            [c.interval for c in candles],
            [_utc(c.start) for c in candles],
            [c.open for c in candles],
            [c.high for c in candles],
            [c.low for c in candles],
            [c.close for c in candles],
            [c.volume for c in candles],
        )

    async def latest(self) -> list[Candle]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT ON (symbol, period) symbol, period, start_time, open, high, low, close, volume "
            "FROM candles ORDER BY symbol, period, start_time DESC"
        )
        return [_candle(r) for r in rows]

    async def page(self, symbol: str, interval: str, *, before: int | None, limit: int) -> list[Candle]:
        rows = await self.pool.fetch(
            "SELECT symbol, period, start_time, open, high, low, close, volume FROM candles "
            "WHERE symbol = $1 AND period = $2 AND ($3::timestamptz IS NULL OR start_time < $3) "
            "ORDER BY start_time DESC LIMIT $4",
            symbol,
            interval,
            _utc(before) if before is not None else None,
            limit,
        )
        return [_candle(r) for r in rows]


def _utc(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def _candle(row: asyncpg.Record) -> Candle:
    return Candle(
        symbol=row["symbol"],
        interval=row["period"],
        start=int(row["start_time"].timestamp()),
        open=row["open"],
        high=row["high"],
        low=row["low"],
        close=row["close"],
        volume=row["volume"],
    )
