"""The composition root of svc_orders: settings from the environment → adapters →
use cases → gRPC, plus the background loops (outbox relay, execution-report consumer,
sweeper, deferred funds calls, trading-controls refresh)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time
from decimal import Decimal
from pathlib import Path

import asyncpg

from brokermesh.orders.v1 import orders_pb2_grpc
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
from svc_orders.app.square_off import SquareOff, square_off_time
from svc_orders.app.sweeper import Sweeper
from svc_orders.app.trailing import TrailingStops
from svc_orders.domain.risk import RiskLimits
from svc_orders.transport.servicer import OrdersServicer
from svc_runtime import config, db, grpc_client, messaging, replica, service
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.lease import Lease, as_singleton
from svc_runtime.market_clock import Calendar, MarketClock
from svc_runtime.outbox import OutboxRelay

log = logging.getLogger(__name__)

SERVICE = "svc_orders"
SWEEPER_LEASE = "svc_orders:sweeper"
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
CONTROLS_CHANNEL = "orders_trading_controls"
SQUARE_OFF_AT = "BROKERMESH_SQUARE_OFF_AT"


def _decimal_env(name: str, default: str) -> Decimal:
    return Decimal(config.env(name, default))


@dataclass(frozen=True)
class OrdersSettings:
    common: config.CommonSettings
    funds_target: str
    marketdata_target: str
    exec_target: str
    limits: RiskLimits
    sweep_after_seconds: float
    sweep_interval_seconds: float
    db_pool_size: int
    stream_queue_size: int
    park_after_deliveries: int
    max_placing: int
    market_clock: MarketClock
    # Market time of the daily INTRADAY square-off; None: none (real time, unless set).
    square_off_at: time | None

    @classmethod
    def from_env(cls) -> OrdersSettings:
        return cls(
            common=config.CommonSettings.from_env(default_grpc_listen="127.0.0.1:50051"),
            funds_target=config.env(config.FUNDS_TARGET, "127.0.0.1:50052"),
            marketdata_target=config.env(config.MARKETDATA_TARGET, "127.0.0.1:50053"),
            exec_target=config.env(config.EXEC_TARGET, "127.0.0.1:50054"),
            limits=RiskLimits(
                price_collar=_decimal_env("BROKERMESH_ORDERS_PRICE_COLLAR", "0.10"),
                market_protection=_decimal_env("BROKERMESH_ORDERS_MARKET_PROTECTION", "0.05"),
                max_order_quantity=config.env_int("BROKERMESH_ORDERS_MAX_QUANTITY", 100_000),
                max_order_value=_decimal_env("BROKERMESH_ORDERS_MAX_VALUE", "10000000.00"),
                orders_per_second=_decimal_env("BROKERMESH_ORDERS_RATE_PER_SECOND", "10"),
                order_burst=config.env_int("BROKERMESH_ORDERS_RATE_BURST", 20),
            ),
            sweep_after_seconds=config.env_float("BROKERMESH_ORDERS_SWEEP_AFTER_SECONDS", 15.0),
            sweep_interval_seconds=config.env_float("BROKERMESH_ORDERS_SWEEP_INTERVAL_SECONDS", 5.0),
            db_pool_size=config.env_int("BROKERMESH_ORDERS_DB_POOL_SIZE", 20),
            stream_queue_size=config.env_int("BROKERMESH_ORDERS_STREAM_QUEUE", 1000),
            park_after_deliveries=config.env_int("BROKERMESH_ORDERS_PARK_AFTER_DELIVERIES", 10),
            max_placing=config.env_int("BROKERMESH_ORDERS_MAX_PLACING", 64),
            market_clock=(market := MarketClock.from_env()),
            square_off_at=_square_off_at(market),
        )


def _validity_check(settings: OrdersSettings) -> ValidityCheck | None:
    """Checked only when the market closes (a fast clock, or calendar hours at the exchange):
    around the clock, DAY orders rightly work for days."""
    hours = config.env("BROKERMESH_EXCHANGE_HOURS", "").strip().lower()
    if not settings.market_clock.fast and hours != "calendar":
        return None
    grace = config.env_float("BROKERMESH_ORDERS_VALIDITY_GRACE_SECONDS", 10.0)
    return ValidityCheck(settings.market_clock, Calendar.from_env(), grace_seconds=grace)


def _square_off_at(market: MarketClock) -> time | None:
    try:
        return square_off_time(config.env(SQUARE_OFF_AT, ""), market, Calendar.from_env())
    except ValueError as error:
        raise RuntimeError(f"{SQUARE_OFF_AT}: {error}") from None


async def _leave_session(connection: asyncpg.Connection) -> None:
    """Pool release without the reset round trip: asyncpg still ends any open transaction,
    and the OMS sets no session state (settings, cursors, session locks) on pooled
    connections."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _follow_controls(
    database_url: str,
    controls: TradingControlsView,
    risk_limits: RiskLimitBook,
    stop: asyncio.Event,
    period: float = 5.0,
) -> None:
    """Refresh the cached controls and risk limits when they change (NOTIFY), and every few
    seconds anyway."""
    changed = asyncio.Event()
    listener: asyncpg.Connection | None = None
    while not stop.is_set():
        changed.clear()
        try:
            if listener is None or listener.is_closed():
                listener = await asyncpg.connect(db.asyncpg_dsn(database_url))
                await listener.add_listener(CONTROLS_CHANNEL, lambda *_: changed.set())
            await controls.refresh()
            await risk_limits.refresh()
        except Exception:
            log.warning("could not refresh trading controls", exc_info=True)
            listener = None
        await _wait_any(changed, stop, timeout=period)
    if listener is not None:
        await listener.close()


async def serve(settings: OrdersSettings, stop: asyncio.Event) -> None:
    common = settings.common
    topology = messaging.Topology.from_env(common.namespace)
    await db.migrate(common.database_url, SCHEMA, db.RUNTIME_MIGRATIONS, MIGRATIONS)
    pool = await db.create_pool(
        common.database_url, SCHEMA, min_size=2, max_size=settings.db_pool_size, reset=_leave_session
    )
    nc = await messaging.connect(common.nats_url, SERVICE)
    js = nc.jetstream()
    await messaging.ensure_streams(js, topology)
    funds_channel = grpc_client.channel(settings.funds_target)
    marketdata_channel = grpc_client.channel(settings.marketdata_target)
    exec_channel = grpc_client.channel(settings.exec_target, health_service=grpc_client.EXEC_SERVICE)

    reads = await replica.from_env(pool, SCHEMA)
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
    funds_worker = FundsActionWorker(store, funds)
    gtts = Gtts(PostgresGttStore(pool), market, entry, clock)
    trailing_stops = TrailingStops(store, market, entry)
    fanout = OrderEventFanout(settings.stream_queue_size)
    feed = OrderEventFeed(nc, topology, fanout)
    relay = OutboxRelay(pool, js, schema=SCHEMA, nc=nc, stored=topology.stored)
    consumer = exec_report_consumer(js, topology, processor)

    await market.start()
    await feed.start()
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
    background = {
        service.supervise(relay.run(), name="outbox-relay"),
        service.supervise(consumer.run(), name="exec-report-consumer"),
        # One sweeper among the replicas: two would race to resolve the same stuck order.
        service.supervise(
            as_singleton(sweeper_lease, lambda ended: sweeper.run(ended, sweeper_lease.confirm), stop),
            name="sweeper",
        ),
        service.supervise(funds_worker.run(stop), name="funds-actions"),
        service.supervise(
            _follow_controls(common.database_url, controls, risk_limits, stop), name="trading-controls"
        ),
        service.supervise(family.run(stop), name="contingent-legs"),
        service.supervise(gtts.run(stop), name="gtt-watcher"),
        service.supervise(trailing_stops.run(stop), name="trailing-stops"),
    }
    if settings.square_off_at is not None:
        square_off = SquareOff(
            entry, store, settings.market_clock, Calendar.from_env(), settings.square_off_at
        )
        background.add(service.supervise(square_off.run(stop), name="square-off"))
    await server.start()
    # Until told to stop, or until a background task dies (the supervisor then sets `stop`).
    await stop.wait()

    # Graceful shutdown: stop taking calls, then stop the loops after their current batch.
    await server.stop(grace=5.0)
    stop.set()
    relay.stop()
    consumer.stop()
    await asyncio.gather(*background, return_exceptions=True)
    await feed.stop()
    await market.stop()
    # Not drain(): it can wait forever on the pull subscription; every publish that
    # matters was acknowledged already (the outbox deletes rows only after their acks).
    with contextlib.suppress(Exception):
        await nc.flush(timeout=2)
    await nc.close()
    for channel in (funds_channel, marketdata_channel, exec_channel):
        await channel.close()
    if reads is not None:
        await reads.close()
    await pool.close()


def main() -> None:
    settings = OrdersSettings.from_env()

    async def run(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    service.run(SERVICE, run, metrics_port=settings.common.metrics_port)
