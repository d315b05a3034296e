"""Composition root of svc_marketdata: settings → adapters → application → transport."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grpc_health.v1 import health_pb2

from brokermesh.marketdata.v1 import alerts_pb2_grpc, watchlists_pb2_grpc
from svc_marketdata.adapters.fix_session import FixMarketFeed, MarketDataApplication
from svc_marketdata.adapters.funds_portfolio import GrpcPortfolioSymbols
from svc_marketdata.adapters.instrument_file import load_instruments
from svc_marketdata.adapters.kv_watchlists import KvWatchlistStore
from svc_marketdata.adapters.nats_ticks import KvQuoteSnapshots, NatsTickPublisher, follow_ticks, open_bucket
from svc_marketdata.adapters.pg_alerts import PgAlertStore
from svc_marketdata.adapters.postgres import MIGRATIONS, SCHEMA, PgCandleStore, PgInstrumentRepository
from svc_marketdata.app.alerts import PriceAlerts
from svc_marketdata.app.board import ChangeBoard
from svc_marketdata.app.market import MarketData
from svc_marketdata.app.replication import FeedReplica
from svc_marketdata.app.streams import StreamHub
from svc_marketdata.app.watchlists import Watchlists
from svc_marketdata.transport import alerts, marketdata, watchlists
from svc_marketdata.transport.wire import encode_feed_status, encode_quote
from svc_runtime import aio, config, grpc_client, service
from svc_runtime.db import create_pool, migrate
from svc_runtime.fix import ThreadBridge
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.lease import Lease
from svc_runtime.messaging import Topology, connect
from svc_runtime.service import run

log = logging.getLogger(__name__)

SERVICE = "svc_marketdata"
# Service-specific settings (the common ones are in svc_runtime.config).
COALESCE_MS = "BROKERMESH_MARKETDATA_COALESCE_MS"
STREAM_STALL_SECONDS = "BROKERMESH_MARKETDATA_STREAM_STALL_SECONDS"
MAX_STREAMS = "BROKERMESH_MARKETDATA_MAX_STREAMS"
SNAPSHOT_SECONDS = "BROKERMESH_MARKETDATA_SNAPSHOT_SECONDS"
INSTRUMENT_WAIT_SECONDS = "BROKERMESH_MARKETDATA_INSTRUMENT_WAIT_SECONDS"
FIX_MESSAGE_LOG = "BROKERMESH_MARKETDATA_FIX_MESSAGE_LOG"
# "fix" (the exchange's market-data session) or "none": a venue without one. Then no
# quote has a price until a feed exists; the instrument master comes from INSTRUMENTS_FILE.
FEED = "BROKERMESH_MARKETDATA_FEED"
INSTRUMENTS_FILE = "BROKERMESH_MARKETDATA_INSTRUMENTS"
STALE_AFTER_MS = "BROKERMESH_MARKETDATA_STALE_AFTER_MS"
STREAM_HEARTBEAT_SECONDS = "BROKERMESH_MARKETDATA_STREAM_HEARTBEAT_SECONDS"


@dataclass(frozen=True)
class Settings:
    common: config.CommonSettings
    fix_host: str
    fix_port: int
    # Ticks gather this long before a flush publishes them together.
    coalesce_ms: float
    # A stream whose client takes no data for this long is dropped.
    stream_stall_seconds: float
    max_streams: int
    snapshot_seconds: float
    # Wait this long for the exchange's SecurityList before subscribing to the stored master.
    instrument_wait_seconds: float
    fix_message_log: bool
    feed: str
    instruments_file: str
    # The feed is stale after this long without a word from the exchange (probed at a third).
    stale_after_ms: float
    stream_heartbeat_seconds: float

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            common=config.CommonSettings.from_env(),
            fix_host=config.env(config.FIX_HOST, "127.0.0.1"),
            fix_port=config.env_int(config.FIX_PORT, 9878),
            coalesce_ms=config.env_float(COALESCE_MS, 5.0),
            stream_stall_seconds=config.env_float(STREAM_STALL_SECONDS, 10.0),
            max_streams=config.env_int(MAX_STREAMS, 2000),
            snapshot_seconds=config.env_float(SNAPSHOT_SECONDS, 1.0),
            instrument_wait_seconds=config.env_float(INSTRUMENT_WAIT_SECONDS, 5.0),
            fix_message_log=config.env_bool(FIX_MESSAGE_LOG, False),
            feed=config.env(FEED, "fix"),
            instruments_file=config.env(INSTRUMENTS_FILE, ""),
            stale_after_ms=config.env_float(STALE_AFTER_MS, 1200.0),
            stream_heartbeat_seconds=config.env_float(STREAM_HEARTBEAT_SECONDS, 5.0),
        )


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    common = settings.common
    topology = Topology(common.namespace)

    await migrate(common.database_url, SCHEMA, MIGRATIONS)
    pool = await create_pool(common.database_url, SCHEMA, min_size=1, max_size=4)
    nc = await connect(common.nats_url, SERVICE)
    js = nc.jetstream()
    quotes_kv = await open_bucket(js, topology.quotes_bucket, description="latest quote per symbol")
    watchlists_kv = await open_bucket(js, topology.kv_bucket("watchlists"), description="watchlists per user")

    hub = StreamHub(max_streams=settings.max_streams)
    market = MarketData(
        repository=PgInstrumentRepository(pool),
        publisher=NatsTickPublisher(nc, topology),
        snapshots=KvQuoteSnapshots(quotes_kv, nc, topology.quotes_bucket),
        encode=encode_quote,
        encode_status=encode_feed_status,
        shard_of=Topology.tick_shard,
        hub=hub,
        candle_store=PgCandleStore(pool),
        board=ChangeBoard(max_streams=settings.max_streams),
        coalesce_seconds=settings.coalesce_ms / 1000,
        snapshot_interval=settings.snapshot_seconds,
        instrument_wait=settings.instrument_wait_seconds,
        stale_after=settings.stale_after_ms / 1000,
        probe_after=settings.stale_after_ms / 3000,
    )
    await market.load()
    # Alerts live here because this service sees every price as it changes, in process.
    price_alerts = PriceAlerts(PgAlertStore(pool), is_known=market.is_known)
    watchlist_app = Watchlists(
        KvWatchlistStore(watchlists_kv), is_known=market.is_known, master_loaded=lambda: len(market.index) > 0
    )

    # svc_funds owns portfolios: a quote stream of one asks it for the symbols.
    funds_channel = grpc_client.channel(config.env(config.FUNDS_TARGET, "127.0.0.1:50052"))
    server = GrpcServer(common.grpc_listen)
    server.add(
        marketdata.register,
        marketdata.MarketDataServicer(
            market,
            stall_timeout=settings.stream_stall_seconds,
            heartbeat_seconds=settings.stream_heartbeat_seconds,
            watchlist_symbols=watchlist_app.symbols,
            portfolio_symbols=GrpcPortfolioSymbols(funds_channel),
        ),
        marketdata.SERVICE_NAME,
    )
    server.add(
        watchlists_pb2_grpc.add_WatchlistServiceServicer_to_server,
        watchlists.WatchlistServicer(watchlist_app),
        watchlists.SERVICE_NAME,
    )
    server.add(
        alerts_pb2_grpc.add_AlertServiceServicer_to_server,
        alerts.AlertServicer(price_alerts),
        alerts.SERVICE_NAME,
    )

    if settings.feed not in ("fix", "none"):
        raise ValueError(f"{FEED} must be fix or none, not {settings.feed!r}")
    if settings.instruments_file:
        await market.adopt_master(load_instruments(Path(settings.instruments_file)))
    feeds: list[FixMarketFeed] = []
    open_feed = _feed_opener(settings, market, feeds)

    async def announce(holding: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if holding else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await server.health.set(grpc_client.MARKETDATA_FEED, status)

    await announce(False)
    following = await follow_ticks(nc, topology, market)
    replica = FeedReplica(
        Lease(common.database_url, f"{SERVICE}:feed"),
        market,
        price_alerts,
        open_feed=open_feed,
        announce=announce,
    )
    publisher = service.supervise(replica.run(stop), "feed-replica")
    # A lone replica takes the lease at once: serve depth from the first request.
    with contextlib.suppress(TimeoutError):
        await aio.within(market.holding.wait(), 2.0)
    await server.start()
    if settings.feed != "fix":
        # Said, not papered over: quotes carry no prices (only a previous close from the file).
        log.warning(
            "no market-data feed: quotes have no prices until one is configured",
            extra={"instruments": len(market.index), "instruments_file": settings.instruments_file},
        )
    try:
        await stop.wait()
    finally:
        hub.shutdown()
        await server.stop(grace=2.0)
        for feed in feeds:
            await feed.stop()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        await following.unsubscribe()
        await funds_channel.close()
        await nc.drain()
        await pool.close()


def _feed_opener(settings: Settings, market: MarketData, feeds: list[FixMarketFeed]) -> Callable[[], None]:
    """What starts the exchange's market-data session once this replica holds the lease."""

    def open_feed() -> None:
        if settings.feed != "fix":
            return
        application = MarketDataApplication(ThreadBridge(asyncio.get_running_loop()), market)
        feed = FixMarketFeed(
            application,
            host=settings.fix_host,
            port=settings.fix_port,
            work_dir=settings.common.data_dir / SERVICE,
            message_log=settings.fix_message_log,
        )
        market.attach_feed(feed)
        feeds.append(feed)
        feed.start()
        log.info("market-data session started", extra={"fix": f"{settings.fix_host}:{settings.fix_port}"})

    return open_feed


def main() -> None:
    settings = Settings.from_env()
    # quickfix's thread needs the GIL for every message it hands over; while the event loop
    # is busy it would wait up to the default 5 ms switch interval each time, capping the
    # feed at a few hundred messages a second. A shorter interval lets it in promptly.
    sys.setswitchinterval(0.0005)

    async def entry(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    run(SERVICE, entry, metrics_port=settings.common.metrics_port)
