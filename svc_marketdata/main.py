"""Composition root of svc_marketdata: settings → adapters → application → transport, on the
service host (which drains it on SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
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
from svc_marketdata.settings import FEED, Settings
from svc_marketdata.transport import alerts, marketdata, watchlists
from svc_marketdata.transport.wire import encode_feed_status, encode_quote
from svc_runtime import aio, config, grpc_client
from svc_runtime.db import create_pool, migrate
from svc_runtime.fix import ThreadBridge
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.host import Host
from svc_runtime.lease import Lease
from svc_runtime.messaging import Topology, connect
from svc_runtime.service import run

log = logging.getLogger(__name__)

SERVICE = "svc_marketdata"


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    common = settings.common
    topology = Topology(common.namespace)
    if settings.feed not in ("fix", "none"):
        raise ValueError(f"{FEED} must be fix or none, not {settings.feed!r}")

    async with Host(SERVICE, stop) as host:
        await migrate(common.database_url, SCHEMA, MIGRATIONS)
        pool = host.hold(await create_pool(common.database_url, SCHEMA, min_size=1, max_size=4), what="pool")
        nc = await connect(common.nats_url, SERVICE)
        host.hold(nc, nc.drain, what="nats")
        js = nc.jetstream()
        quotes_kv = await open_bucket(js, topology.quotes_bucket, description="latest quote per symbol")
        watchlists_kv = await open_bucket(
            js, topology.kv_bucket("watchlists"), description="watchlists per user"
        )

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
            KvWatchlistStore(watchlists_kv),
            is_known=market.is_known,
            master_loaded=lambda: len(market.index) > 0,
        )

        # svc_funds owns portfolios: a quote stream of one asks it for the symbols.
        funds_channel = host.hold(
            grpc_client.channel(config.env(config.FUNDS_TARGET, "127.0.0.1:50052")), what="funds channel"
        )
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

        if settings.instruments_file:
            await market.adopt_master(load_instruments(Path(settings.instruments_file)))
        feeds: list[FixMarketFeed] = []
        open_feed = _feed_opener(settings, market, feeds)

        async def announce(holding: bool) -> None:
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if holding
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await server.health.set(grpc_client.MARKETDATA_FEED, status)

        async def stop_feeds() -> None:
            for feed in feeds:
                await feed.stop()

        # Whichever replica holds the lease runs the FIX session; the others follow its ticks.
        host.at_close(stop_feeds, what="FIX market-data session")
        await announce(False)
        following = await follow_ticks(nc, topology, market)
        host.at_close(following.unsubscribe, what="tick follower")
        replica = FeedReplica(
            Lease(common.database_url, f"{SERVICE}:feed"),
            market,
            price_alerts,
            open_feed=open_feed,
            announce=announce,
        )
        host.task(replica.run(stop), "feed-replica")
        # Open streams end first: the server's grace is for calls that finish.
        host.on_drain(hub.shutdown, what="quote streams")
        # A lone replica takes the lease at once: serve depth from the first request.
        with contextlib.suppress(TimeoutError):
            await aio.within(market.holding.wait(), 2.0)
        await host.serve_grpc(server, grace=2.0)
        if settings.feed != "fix":
            # Said, not papered over: quotes carry no prices (only a previous close from the file).
            log.warning(
                "no market-data feed: quotes have no prices until one is configured",
                extra={"instruments": len(market.index), "instruments_file": settings.instruments_file},
            )
        await host.until_stopped()


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
    run(SERVICE, lambda stop: serve(settings, stop), metrics_port=settings.common.metrics_port)
