"""The composition root of svc_orders: settings from the environment → adapters →
use cases → gRPC, plus the background loops (outbox relay, execution-report consumer,
sweeper, deferred funds calls, trading-controls refresh), on the service host."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path

from brokermesh.orders.v1 import orders_pb2_grpc
from svc_orders.adapters.controls_feed import follow_controls
from svc_orders.adapters.executor import ExecutorClient
from svc_orders.adapters.funds import FundsClient, PortfolioClient
from svc_orders.adapters.gtt_store import PostgresGttStore
from svc_orders.adapters.marketdata import MarketData
from svc_orders.adapters.nats import OrderEventFeed, exec_report_consumer
from svc_orders.adapters.postgres import SCHEMA, PostgresOrderStore
from svc_orders.app.contingent import ContingentOrders
from svc_orders.app.controls import TradingControlsView
from svc_orders.app.entry import OrderEntry
from svc_orders.app.fanout import OrderEventFanout
from svc_orders.app.funds_actions import FundsActionWorker
from svc_orders.app.gtt import Gtts
from svc_orders.app.queries import OrderQueries, ValidityCheck
from svc_orders.app.reports import ReportProcessor
from svc_orders.app.risk_limits import RiskLimitBook
from svc_orders.app.square_off import SquareOff
from svc_orders.app.sweeper import Sweeper
from svc_orders.app.trailing import TrailingStops
from svc_orders.settings import OrdersSettings
from svc_orders.transport.servicer import OrdersServicer
from svc_runtime import config, db, grpc_client, messaging, replica, service
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.host import Host
from svc_runtime.lease import Lease, as_singleton
from svc_runtime.market_clock import Calendar
from svc_runtime.outbox import OutboxRelay

log = logging.getLogger(__name__)

SERVICE = "svc_orders"
SWEEPER_LEASE = "svc_orders:sweeper"
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"


def _validity_check(settings: OrdersSettings) -> ValidityCheck | None:
    """Checked only when the market closes (a fast clock, or calendar hours at the exchange):
    around the clock, DAY orders rightly work for days."""
    hours = config.env("BROKERMESH_EXCHANGE_HOURS", "").strip().lower()
    if not settings.market_clock.fast and hours != "calendar":
        return None
    grace = config.env_float("BROKERMESH_ORDERS_VALIDITY_GRACE_SECONDS", 10.0)
    return ValidityCheck(settings.market_clock, Calendar.from_env(), grace_seconds=grace)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


async def serve(settings: OrdersSettings, stop: asyncio.Event) -> None:
    common = settings.common
    topology = messaging.Topology.from_env(common.namespace)
    async with Host(SERVICE, stop) as host:
        await db.migrate(common.database_url, SCHEMA, db.RUNTIME_MIGRATIONS, MIGRATIONS)
        pool = host.hold(
            await db.create_pool(
                common.database_url, SCHEMA, min_size=2, max_size=settings.db_pool_size, reset=db.keep_session
            ),
            what="pool",
        )
        nc = await messaging.connect(common.nats_url, SERVICE)

        async def close_nats() -> None:
            # Not drain(): it can wait forever on the pull subscription; every publish that
            # matters was acknowledged already (the outbox deletes rows only after their acks).
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            await nc.close()

        host.hold(nc, close_nats, what="nats")
        js = nc.jetstream()
        await messaging.ensure_streams(js, topology)
        funds_channel = host.hold(grpc_client.channel(settings.funds_target), what="funds channel")
        marketdata_channel = host.hold(
            grpc_client.channel(settings.marketdata_target), what="marketdata channel"
        )
        exec_channel = host.hold(
            grpc_client.channel(settings.exec_target, health_service=grpc_client.EXEC_SERVICE),
            what="exec channel",
        )
        reads = await replica.from_env(pool, SCHEMA)
        if reads is not None:
            host.hold(reads, what="replica pool")

        store = PostgresOrderStore(pool, topology, reads)
        market = MarketData(marketdata_channel, nc, js, topology)
        funds = FundsClient(funds_channel)
        executor = ExecutorClient(exec_channel, js, topology)
        clock = SystemClock()
        controls = TradingControlsView(store)
        await controls.refresh()
        risk_limits = RiskLimitBook(store, PortfolioClient(funds_channel))
        await risk_limits.refresh()

        family = ContingentOrders(store, funds, market, clock)
        entry = OrderEntry(
            store,
            funds,
            market,
            controls,
            settings.limits,
            clock,
            # Leave connections for the report consumer, the relay (one listens), the sweeper,
            # the funds-action worker and reads.
            funds_calls_in_flight=max(2, settings.db_pool_size - 6),
            max_placing=settings.max_placing,
            market_today=settings.market_clock.today,
            risk_limits=risk_limits,
            family=family,
        )
        family.desk = entry  # what OCO groups oversell, the broker buys back through its own entry
        processor = ReportProcessor(
            store, market, executor, clock, park_after=settings.park_after_deliveries, family=family
        )
        sweeper = Sweeper(
            store,
            funds,
            executor,
            market,
            processor,
            clock,
            stuck_after=settings.sweep_after_seconds,
            interval=settings.sweep_interval_seconds,
            family=family,
        )
        sweeper_lease = Lease(common.database_url, SWEEPER_LEASE)
        gtts = Gtts(PostgresGttStore(pool), market, entry, clock)
        trailing_stops = TrailingStops(store, market, entry)
        fanout = OrderEventFanout(settings.stream_queue_size)
        feed = OrderEventFeed(nc, topology, fanout)
        relay = OutboxRelay(pool, js, schema=SCHEMA, nc=nc, stored=topology.stored)
        consumer = exec_report_consumer(js, topology, processor)

        await market.start()
        host.hold(market, market.stop, what="market data")
        await feed.start()
        host.hold(feed, feed.stop, what="order-event feed")
        server = GrpcServer(common.grpc_listen)
        server.add(
            orders_pb2_grpc.add_OrdersServiceServicer_to_server,
            OrdersServicer(
                entry,
                OrderQueries(store, validity=_validity_check(settings)),
                controls,
                fanout,
                risk_limits=risk_limits,
                gtts=gtts,
            ),
            "brokermesh.orders.v1.OrdersService",
        )
        host.task(relay.run(), "outbox-relay", stop=relay.stop)
        host.task(consumer.run(), "exec-report-consumer", stop=consumer.stop)
        # One sweeper among the replicas: two would race to resolve the same stuck order.
        host.task(
            as_singleton(sweeper_lease, lambda ended: sweeper.run(ended, sweeper_lease.confirm), stop),
            "sweeper",
        )
        host.task(FundsActionWorker(store, funds).run(stop), "funds-actions")
        host.task(follow_controls(common.database_url, controls, risk_limits, stop), "trading-controls")
        host.task(family.run(stop), "contingent-legs")
        host.task(gtts.run(stop), "gtt-watcher")
        host.task(trailing_stops.run(stop), "trailing-stops")
        if settings.square_off_at is not None:
            square_off = SquareOff(
                entry, store, settings.market_clock, Calendar.from_env(), settings.square_off_at
            )
            host.task(square_off.run(stop), "square-off")
        await host.serve_grpc(server, grace=5.0)
        # Until told to stop, or until a background task dies (the supervisor then sets `stop`).
        await host.until_stopped()


def main() -> None:
    settings = OrdersSettings.from_env()
    service.run(SERVICE, lambda stop: serve(settings, stop), metrics_port=settings.common.metrics_port)
