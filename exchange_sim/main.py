"""Composition root of the exchange simulator: settings → adapters → app → transport, on the
service host (which drains it on SIGTERM)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from brokermesh.exchange.v1 import exchange_admin_pb2_grpc
from exchange_sim.adapters.fix.acceptor import ORDER_ENTRY, FixAcceptor
from exchange_sim.adapters.instrument_file import load_instruments
from exchange_sim.adapters.order_journal import FileOrderJournal
from exchange_sim.app import gc_policy
from exchange_sim.app.agents import LiquidityAgents
from exchange_sim.app.delivery import DelayedDelivery
from exchange_sim.app.exchange import Exchange
from exchange_sim.app.market_data import MarketData
from exchange_sim.app.order_entry import ExchangeIds, OrderEntry
from exchange_sim.app.trading_day import TradingDay
from exchange_sim.domain.matching import MatchingEngine
from exchange_sim.domain.trading_day import CircuitBreaker, parse_breakers
from exchange_sim.settings import SERVICE, ExchangeSettings
from exchange_sim.transport.admin import ExchangeAdminServicer
from svc_runtime import ids
from svc_runtime.fix import ThreadBridge
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.host import Host
from svc_runtime.service import run

log = logging.getLogger(__name__)

ADMIN_SERVICE = "brokermesh.exchange.v1.ExchangeAdminService"


async def serve(settings: ExchangeSettings, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    instruments = load_instruments(settings.instruments_file)
    engine = MatchingEngine(instruments.values(), self_trade=settings.self_trade)
    boot_id = ids.new_id("x")[2:16]
    exchange: Exchange | None = None

    def dispatch(session: str, request: object) -> None:
        assert exchange is not None
        exchange.dispatch(session, request)

    def session_changed(session: str, logged_on: bool) -> None:
        assert exchange is not None
        exchange.session_changed(session, logged_on)

    async with Host(SERVICE, stop) as host:
        acceptor = FixAcceptor(
            template=settings.fix_config,
            work_dir=settings.data_dir,
            port=settings.fix_port,
            bridge=ThreadBridge(loop),
            dispatch=dispatch,
            on_session=session_changed,
            message_log=settings.fix_message_log,
        )
        delivery = DelayedDelivery(acceptor)
        trade_times: dict[str, int] = {}
        clock = lambda: datetime.now(UTC)  # noqa: E731
        journal = host.hold(
            FileOrderJournal(settings.data_dir / "orders.journal", retain_seconds=settings.retain_seconds),
            what="order journal",
        )
        order_entry = OrderEntry(
            engine,
            delivery,
            ExchangeIds(boot_id),
            clock,
            counterparties=acceptor.counterparties(ORDER_ENTRY),
            trade_times=trade_times,
            journal=journal,
        )
        # The books as they stood at the last stop or crash, before anyone can trade.
        order_entry.restore()
        order_entry.defer_flushes(loop.call_soon)
        exchange = Exchange(engine, order_entry, delivery, acceptor)
        market_data = MarketData(
            engine,
            acceptor,
            interval_seconds=settings.md_interval_seconds,
            max_entries=settings.md_max_entries,
            trade_times=trade_times,
        )
        exchange.market_data = market_data
        order_entry.market_now = settings.market_clock.now
        trading_day = TradingDay(
            engine,
            order_entry,
            hours=settings.hours,
            breaker=CircuitBreaker(parse_breakers(settings.breakers)),
            clock=settings.market_clock.now,
            notify=market_data.notify,
            on_phase=exchange.phase_changed,
            # A minute of market time at most between checks, and never more than a second.
            interval_seconds=min(1.0, settings.market_clock.wall_seconds(60.0)),
        )
        exchange.circuit_view = trading_day.view
        exchange.session_view = trading_day.session_view
        trading_day.tick()
        # The exchange's loops hold nothing worth finishing: cancelled at the drain.
        host.task(market_data.run(), "market-data", cancel=True)
        host.task(trading_day.run(), "trading-day", cancel=True)
        if settings.agents:
            agents = LiquidityAgents(
                engine,
                order_entry,
                config=settings.liquidity,
                seed=settings.seed,
                interval_seconds=settings.agent_interval_seconds,
                symbol_period_seconds=settings.symbol_period_seconds,
                notify=market_data.notify,
                activity=settings.activity,
            )
            agents.step_all(0.0)
            exchange.agents = agents
            host.task(agents.run(), "liquidity-agents", cancel=True)

        server = GrpcServer(settings.grpc_listen)
        server.add(
            exchange_admin_pb2_grpc.add_ExchangeAdminServiceServicer_to_server,
            ExchangeAdminServicer(exchange),
            ADMIN_SERVICE,
        )

        gc_policy.start_up()
        host.task(gc_policy.run(settings.gc_interval_seconds), "gc", cancel=True)
        # Closed the other way: flush, delayed reports, FIX sessions, flush what they left, journal.
        host.at_close(order_entry.flush, what="order journal flush")
        acceptor.start()
        host.hold(acceptor, acceptor.stop, what="FIX acceptor")
        host.hold(delivery, what="delayed delivery")
        host.at_close(order_entry.flush, what="order journal flush")
        await host.serve_grpc(server)
        log.info(
            "exchange open",
            extra={"boot_id": boot_id, "instruments": len(instruments), "fix_port": settings.fix_port},
        )
        await host.until_stopped()


def main() -> None:
    settings = ExchangeSettings.from_env()
    run(SERVICE, lambda stop: serve(settings, stop), metrics_port=settings.metrics_port)
