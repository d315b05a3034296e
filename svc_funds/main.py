"""svc_funds' composition root: settings from the environment → adapters → application →
gRPC and the execution-report consumer; graceful shutdown when `stop` is set."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import time
from decimal import Decimal
from pathlib import Path

from brokermesh.funds.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    funds_pb2,
    funds_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
)
from svc_funds.adapters.exec_reports import ExecReportConsumer
from svc_funds.adapters.marketdata import MarketDataQuotes
from svc_funds.adapters.pg_accounts import PgAccountStore
from svc_funds.adapters.pg_audit import PgAuditStore
from svc_funds.adapters.pg_ledger import PgLedgerStore
from svc_funds.adapters.pg_portfolio import PgPortfolioStore
from svc_funds.adapters.pg_queries import PgFundsQueries
from svc_funds.app.accounts import AccountsApp
from svc_funds.app.audit import AuditApp
from svc_funds.app.engine import LedgerEngine, utc_now
from svc_funds.app.funds import FundsApp
from svc_funds.app.portfolio import PortfolioApp, end_of_day_daily
from svc_funds.domain.charges import (
    BUILT_IN,
    DEFAULT_SCHEDULE,
    ChargesSchedule,
    ScheduleError,
    schedule_from_dict,
)
from svc_funds.transport.servicers import AccountServicer, FundsServicer, PortfolioServicer
from svc_runtime import config, db, messaging, service
from svc_runtime.grpc_server import GrpcServer

log = logging.getLogger(__name__)

SCHEMA = "funds"
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"

# svc_funds' own settings (the shared ones are in svc_runtime.config).
CHARGES = "BROKERMESH_FUNDS_CHARGES"  # `zero`, `india-equity` (default) or a JSON file's path
WRITERS = "BROKERMESH_FUNDS_WRITERS"  # concurrent ledger transactions (default 2)
MAX_BATCH = "BROKERMESH_FUNDS_MAX_BATCH"  # commands per ledger transaction (default 1000)
POOL_SIZE = "BROKERMESH_FUNDS_POOL_SIZE"  # PostgreSQL connections (default 8)
END_OF_DAY = "BROKERMESH_FUNDS_END_OF_DAY"  # `HH:MM` exchange time to close each day; unset: on request only
LINGER_MS = "BROKERMESH_FUNDS_LINGER_MS"  # longest a ledger writer waits for a batch to fill (default 1)


def load_schedule(spec: str) -> ChargesSchedule:
    """A built-in charges schedule by name, or a JSON file of the same shape by path."""
    spec = spec.strip()
    if not spec:
        return DEFAULT_SCHEDULE
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    path = Path(spec)
    if not path.is_file():
        raise ScheduleError(f"charges schedule {spec!r} is neither one of {sorted(BUILT_IN)} nor a JSON file")
    try:
        return schedule_from_dict(json.loads(path.read_text(), parse_float=Decimal))
    except json.JSONDecodeError as exc:
        raise ScheduleError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class FundsSettings:
    common: config.CommonSettings
    marketdata_target: str
    schedule: ChargesSchedule
    writers: int
    max_batch: int
    pool_size: int
    linger_ms: float = 1.0
    end_of_day_at: time | None = None

    @classmethod
    def from_env(cls) -> FundsSettings:
        return cls(
            common=config.CommonSettings.from_env(),
            marketdata_target=os.environ.get(config.MARKETDATA_TARGET, ""),
            schedule=load_schedule(config.env(CHARGES, DEFAULT_SCHEDULE.name)),
            writers=config.env_int(WRITERS, 2),
            max_batch=config.env_int(MAX_BATCH, 1000),
            pool_size=config.env_int(POOL_SIZE, 8),
            linger_ms=config.env_float(LINGER_MS, 1.0),
            end_of_day_at=time.fromisoformat(os.environ[END_OF_DAY]) if os.environ.get(END_OF_DAY) else None,
        )


async def serve(
    settings: FundsSettings, stop: asyncio.Event, on_ready: Callable[[int], Awaitable[None]] | None = None
) -> None:
    common = settings.common
    await db.migrate(common.database_url, SCHEMA, db.RUNTIME_MIGRATIONS, MIGRATIONS)
    pool = await db.create_pool(common.database_url, SCHEMA, min_size=2, max_size=settings.pool_size)
    nc = await messaging.connect(common.nats_url, "svc_funds")
    quotes = MarketDataQuotes(settings.marketdata_target)
    # The ledger engine's writers keep their own connections, planned for keyed access.
    ledger_pool = await db.create_pool(
        common.database_url,
        SCHEMA,
        min_size=settings.writers,
        max_size=settings.writers + 2,
        settings=db.KEYED_ACCESS,
    )
    store = PgLedgerStore(ledger_pool)
    try:
        js = nc.jetstream()
        topology = messaging.Topology.from_env(common.namespace)
        await messaging.ensure_streams(js, topology)

        engine = LedgerEngine(
            store,
            settings.schedule,
            writers=settings.writers,
            max_batch=settings.max_batch,
            linger=settings.linger_ms / 1000,
        )
        queries = PgFundsQueries(pool)
        funds = FundsApp(engine, queries)
        accounts = AccountsApp(PgAccountStore(pool))
        audit = AuditApp(PgAuditStore(pool))
        portfolio = PortfolioApp(PgPortfolioStore(pool), quotes, queries.user_exists, utc_now)

        engine.start()
        consumer = ExecReportConsumer(js, topology, engine)
        consumer.start()
        daily = None
        if settings.end_of_day_at is not None:
            daily = service.supervise(end_of_day_daily(portfolio, settings.end_of_day_at, stop), "end-of-day")

        server = GrpcServer(common.grpc_listen)
        server.add(
            accounts_pb2_grpc.add_AccountServiceServicer_to_server,
            AccountServicer(accounts),
            accounts_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
        )
        server.add(
            funds_pb2_grpc.add_FundsServiceServicer_to_server,
            FundsServicer(funds, audit),
            funds_pb2.DESCRIPTOR.services_by_name["FundsService"].full_name,
        )
        server.add(
            portfolio_pb2_grpc.add_PortfolioServiceServicer_to_server,
            PortfolioServicer(portfolio, funds),
            portfolio_pb2.DESCRIPTOR.services_by_name["PortfolioService"].full_name,
        )
        port = await server.start()
        log.info(
            "svc_funds ready",
            extra={"port": port, "charges": settings.schedule.name, "writers": settings.writers},
        )
        if on_ready is not None:
            await on_ready(port)
        await stop.wait()

        # Stop taking requests, let the consumer finish its batch, then drain the engine.
        await server.stop()
        await consumer.stop()
        await engine.stop()
        if daily is not None:
            await daily
    finally:
        await store.close()
        await quotes.close()
        await nc.close()
        await ledger_pool.close()
        await pool.close()


def main() -> None:
    settings = FundsSettings.from_env()
    service.run("svc_funds", lambda stop: serve(settings, stop), metrics_port=settings.common.metrics_port)
