"""svc_funds' composition root: settings from the environment → adapters → application →
gRPC and the execution-report consumer, on the service host (which drains it on SIGTERM)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
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
from svc_funds.settings import FundsSettings
from svc_funds.transport.servicers import AccountServicer, FundsServicer, PortfolioServicer
from svc_runtime import db, messaging, replica, service
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.host import Host
from svc_runtime.market_clock import Calendar

log = logging.getLogger(__name__)

SERVICE = "svc_funds"
SCHEMA = "funds"
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


async def serve(
    settings: FundsSettings, stop: asyncio.Event, on_ready: Callable[[int], Awaitable[None]] | None = None
) -> None:
    common = settings.common
    async with Host(SERVICE, stop) as host:
        await db.migrate(common.database_url, SCHEMA, db.RUNTIME_MIGRATIONS, MIGRATIONS)
        pool = host.hold(
            await db.create_pool(
                common.database_url, SCHEMA, min_size=2, max_size=settings.pool_size, reset=db.keep_session
            ),
            what="pool",
        )
        reads = await replica.from_env(pool, SCHEMA)
        if reads is not None:
            host.hold(reads, what="replica pool")
        # svc_funds leaves no session state on pooled connections: released without a reset.
        # The ledger engine's writers keep their own connections, planned for keyed access.
        ledger_pool = host.hold(
            await db.create_pool(
                common.database_url,
                SCHEMA,
                min_size=settings.writers,
                max_size=settings.writers + 2,
                settings=db.KEYED_ACCESS,
                reset=db.keep_session,
            ),
            what="ledger pool",
        )
        nc = host.hold(await messaging.connect(common.nats_url, SERVICE), what="nats")
        quotes = host.hold(MarketDataQuotes(settings.marketdata_target), what="market-data quotes")
        store = host.hold(PgLedgerStore(ledger_pool, reads), what="ledger store")
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

        # The engine drains what is queued once the consumer feeding it has stopped (the
        # host stops resources in the reverse order of their start).
        engine.start()
        host.hold(engine, engine.stop, what="ledger engine")
        consumer = ExecReportConsumer(js, topology, engine, market=market)
        consumer.start()
        host.hold(consumer, consumer.stop, what="execution-report consumer")
        host.task(PayoutLoop(engine, withdrawal_queries, bank).run(stop), "payouts")
        if settings.end_of_day_at is not None:
            host.task(end_of_day_daily(portfolio, settings.end_of_day_at, stop, market.wall_at), "end-of-day")

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
        port = await host.serve_grpc(server)
        log.info(
            "svc_funds ready",
            extra={"port": port, "charges": settings.schedule.name, "writers": settings.writers},
        )
        if on_ready is not None:
            await on_ready(port)
        await host.until_stopped()


def main() -> None:
    settings = FundsSettings.from_env()
    service.run(SERVICE, lambda stop: serve(settings, stop), metrics_port=settings.common.metrics_port)
