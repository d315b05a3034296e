"""svc_funds' composition root: settings from the environment → adapters → application →
gRPC and the execution-report consumer; graceful shutdown when `stop` is set."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import time, timedelta
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
from svc_funds.adapters.bank_sim import SimulatedBank
from svc_funds.adapters.documents import DocumentRenderer
from svc_funds.adapters.exec_reports import ExecReportConsumer
from svc_funds.adapters.marketdata import MarketDataQuotes
from svc_funds.adapters.pg_accounts import PgAccountStore
from svc_funds.adapters.pg_audit import PgAuditStore
from svc_funds.adapters.pg_ledger import PgLedgerStore
from svc_funds.adapters.pg_portfolio import PgPortfolioStore
from svc_funds.adapters.pg_queries import PgFundsQueries
from svc_funds.adapters.pg_statements import PgStatementQueries
from svc_funds.adapters.pg_withdrawals import PgWithdrawalQueries
from svc_funds.app.accounts import AccountsApp
from svc_funds.app.audit import AuditApp
from svc_funds.app.engine import LedgerEngine
from svc_funds.app.funds import FundsApp
from svc_funds.app.portfolio import PortfolioApp, end_of_day_daily
from svc_funds.app.statements import StatementsApp
from svc_funds.app.withdrawals import PayoutLoop, WithdrawalsApp
from svc_funds.domain.charges import (
    BUILT_IN,
    DEFAULT_SCHEDULE,
    ChargesSchedule,
    ScheduleError,
    schedule_from_dict,
)
from svc_funds.transport.servicers import AccountServicer, FundsServicer, PortfolioServicer
from svc_runtime import config, db, messaging, replica, service
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.market_clock import Calendar, MarketClock

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
# The simulated payout bank: account numbers it refuses (comma-separated), and how long it
# takes to answer (milliseconds, default 500).
BANK_SIM_FAILING = "BROKERMESH_FUNDS_BANK_SIM_FAILING"
BANK_SIM_DELAY_MS = "BROKERMESH_FUNDS_BANK_SIM_DELAY_MS"


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
    market_clock: MarketClock = field(default_factory=MarketClock)
    bank_failing_accounts: tuple[str, ...] = ()
    bank_delay_ms: float = 500.0

    @classmethod
    def from_env(cls) -> FundsSettings:
        market = MarketClock.from_env()
        return cls(
            common=config.CommonSettings.from_env(),
            marketdata_target=os.environ.get(config.MARKETDATA_TARGET, ""),
            schedule=load_schedule(config.env(CHARGES, DEFAULT_SCHEDULE.name)),
            writers=config.env_int(WRITERS, 2),
            max_batch=config.env_int(MAX_BATCH, 1000),
            pool_size=config.env_int(POOL_SIZE, 8),
            linger_ms=config.env_float(LINGER_MS, 1.0),
            end_of_day_at=_end_of_day_at(market),
            market_clock=market,
            bank_failing_accounts=tuple(
                a.strip() for a in os.environ.get(BANK_SIM_FAILING, "").split(",") if a.strip()
            ),
            bank_delay_ms=config.env_float(BANK_SIM_DELAY_MS, 500.0),
        )


def _end_of_day_at(market: MarketClock) -> time | None:
    """`HH:MM` exchange time; by default 16:00 when the market has sessions (a fast clock),
    else none (run on request)."""
    text = os.environ.get(END_OF_DAY) or ("16:00" if market.fast else "")
    return time.fromisoformat(text) if text and text != "off" else None


async def serve(
    settings: FundsSettings, stop: asyncio.Event, on_ready: Callable[[int], Awaitable[None]] | None = None
) -> None:
    common = settings.common
    await db.migrate(common.database_url, SCHEMA, db.RUNTIME_MIGRATIONS, MIGRATIONS)
    # svc_funds leaves no session state on pooled connections: released without a reset.
    pool = await db.create_pool(
        common.database_url, SCHEMA, min_size=2, max_size=settings.pool_size, reset=db.keep_session
    )
    nc = await messaging.connect(common.nats_url, "svc_funds")
    quotes = MarketDataQuotes(settings.marketdata_target)
    # The ledger engine's writers keep their own connections, planned for keyed access.
    ledger_pool = await db.create_pool(
        common.database_url,
        SCHEMA,
        min_size=settings.writers,
        max_size=settings.writers + 2,
        settings=db.KEYED_ACCESS,
        reset=db.keep_session,
    )
    reads = await replica.from_env(pool, SCHEMA)
    store = PgLedgerStore(ledger_pool, reads)
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
        queries = PgFundsQueries(pool, reads)
        funds = FundsApp(engine, queries)
        accounts = AccountsApp(PgAccountStore(pool))
        audit = AuditApp(PgAuditStore(pool))
        market = settings.market_clock
        portfolio = PortfolioApp(
            PgPortfolioStore(pool), quotes, queries.user_exists, market.now, Calendar.from_env()
        )
        withdrawal_queries = PgWithdrawalQueries(pool)
        withdrawals = WithdrawalsApp(engine, withdrawal_queries)
        statements = StatementsApp(
            PgStatementQueries(pool), DocumentRenderer(), queries.user_exists, list(settings.schedule.names)
        )
        bank = SimulatedBank(
            pool,
            failing_accounts=settings.bank_failing_accounts,
            delay=timedelta(milliseconds=settings.bank_delay_ms),
        )

        engine.start()
        consumer = ExecReportConsumer(js, topology, engine, market=market)
        consumer.start()
        payouts = service.supervise(PayoutLoop(engine, withdrawal_queries, bank).run(stop), "payouts")
        daily = None
        if settings.end_of_day_at is not None:
            daily = service.supervise(
                end_of_day_daily(portfolio, settings.end_of_day_at, stop, market.wall_at), "end-of-day"
            )

        server = GrpcServer(common.grpc_listen)
        server.add(
            accounts_pb2_grpc.add_AccountServiceServicer_to_server,
            AccountServicer(accounts),
            accounts_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
        )
        server.add(
            funds_pb2_grpc.add_FundsServiceServicer_to_server,
            FundsServicer(funds, audit, withdrawals, statements),
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
        await payouts
        await engine.stop()
        if daily is not None:
            await daily
    finally:
        await store.close()
        await quotes.close()
        await nc.close()
        await ledger_pool.close()
        if reads is not None:
            await reads.close()
        await pool.close()


def main() -> None:
    settings = FundsSettings.from_env()
    service.run("svc_funds", lambda stop: serve(settings, stop), metrics_port=settings.common.metrics_port)
