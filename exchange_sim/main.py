"""Composition root of the exchange simulator: settings → adapters → app → transport."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from brokermesh.exchange.v1 import exchange_admin_pb2_grpc
from exchange_sim.adapters.fix.acceptor import ORDER_ENTRY, FixAcceptor
from exchange_sim.adapters.instrument_file import DEFAULT_FILE, load_instruments
from exchange_sim.adapters.order_journal import FileOrderJournal
from exchange_sim.app import gc_policy
from exchange_sim.app.agents import LiquidityAgents
from exchange_sim.app.delivery import DelayedDelivery
from exchange_sim.app.exchange import Exchange
from exchange_sim.app.market_data import MarketData
from exchange_sim.app.order_entry import ExchangeIds, OrderEntry
from exchange_sim.app.trading_day import TradingDay
from exchange_sim.domain.liquidity import ACTIVITY_LEVELS, Activity, LiquidityConfig
from exchange_sim.domain.matching import SELF_TRADE_MODES, MatchingEngine
from exchange_sim.domain.trading_day import DEFAULT_BREAKERS, CircuitBreaker, TradingHours, parse_breakers
from exchange_sim.transport.admin import ExchangeAdminServicer
from svc_runtime import config, ids, service
from svc_runtime.config import env, env_bool, env_float, env_int
from svc_runtime.fix import ThreadBridge
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.market_clock import Calendar, MarketClock
from svc_runtime.service import run

log = logging.getLogger(__name__)

SERVICE = "exchange_sim"
ADMIN_SERVICE = "brokermesh.exchange.v1.ExchangeAdminService"
DEFAULT_FIX_CONFIG = Path(__file__).resolve().parent / "config" / "acceptor.cfg"


@dataclass(frozen=True)
class ExchangeSettings:
    data_dir: Path
    grpc_listen: str
    metrics_port: int
    fix_port: int
    fix_config: Path
    instruments_file: Path
    self_trade: str
    seed: str
    agents: bool
    liquidity: LiquidityConfig
    activity: Activity
    agent_interval_seconds: float
    symbol_period_seconds: float
    md_interval_seconds: float
    md_max_entries: int
    hours: TradingHours
    market_clock: MarketClock
    breakers: str
    gc_interval_seconds: float
    fix_message_log: bool
    retain_seconds: float

    @classmethod
    def from_env(cls) -> ExchangeSettings:
        common = config.CommonSettings.from_env()
        self_trade = env("BROKERMESH_EXCHANGE_SELF_TRADE", "CANCEL_NEWEST").upper()
        if self_trade not in SELF_TRADE_MODES:
            raise RuntimeError(f"BROKERMESH_EXCHANGE_SELF_TRADE must be one of {sorted(SELF_TRADE_MODES)}")
        activity = env("BROKERMESH_EXCHANGE_ACTIVITY", "normal").lower()
        if activity not in ACTIVITY_LEVELS:
            raise RuntimeError(f"BROKERMESH_EXCHANGE_ACTIVITY must be one of {sorted(ACTIVITY_LEVELS)}")
        market_clock = MarketClock.from_env()
        # Real time: open around the clock unless told otherwise (a demo at any hour); a fast
        # clock exists to see sessions, so it follows the market calendar.
        hours = env("BROKERMESH_EXCHANGE_HOURS", "calendar" if market_clock.fast else "always")
        return cls(
            data_dir=common.data_dir / SERVICE,
            grpc_listen=common.grpc_listen,
            metrics_port=common.metrics_port,
            fix_port=env_int(config.FIX_PORT, 9878),
            fix_config=Path(env("BROKERMESH_EXCHANGE_FIX_CONFIG", str(DEFAULT_FIX_CONFIG))),
            instruments_file=Path(env("BROKERMESH_EXCHANGE_INSTRUMENTS", str(DEFAULT_FILE))),
            self_trade=self_trade,
            seed=env("BROKERMESH_EXCHANGE_SEED", "42"),
            agents=env_bool("BROKERMESH_EXCHANGE_AGENTS", True),
            liquidity=LiquidityConfig(
                volatility_bps=env_float("BROKERMESH_EXCHANGE_VOLATILITY_BPS", 2.0),
                reversion_per_hour=env_float("BROKERMESH_EXCHANGE_REVERSION_PER_HOUR", 0.5),
                spread_ticks=env_int("BROKERMESH_EXCHANGE_MM_SPREAD_TICKS", 2),
                levels=env_int("BROKERMESH_EXCHANGE_MM_LEVELS", 5),
                level_gap_ticks=env_int("BROKERMESH_EXCHANGE_MM_LEVEL_GAP_TICKS", 1),
                min_lots=env_int("BROKERMESH_EXCHANGE_MM_MIN_LOTS", 50),
                max_lots=env_int("BROKERMESH_EXCHANGE_MM_MAX_LOTS", 500),
                trades_per_minute=env_float("BROKERMESH_EXCHANGE_TRADES_PER_MINUTE", 6.0),
                max_trade_lots=env_int("BROKERMESH_EXCHANGE_MAX_TRADE_LOTS", 100),
            ),
            activity=ACTIVITY_LEVELS[activity],
            agent_interval_seconds=env_int("BROKERMESH_EXCHANGE_AGENT_INTERVAL_MS", 100) / 1000,
            symbol_period_seconds=env_int("BROKERMESH_EXCHANGE_SYMBOL_PERIOD_MS", 1000) / 1000,
            md_interval_seconds=env_int("BROKERMESH_EXCHANGE_MD_INTERVAL_MS", 100) / 1000,
            md_max_entries=env_int("BROKERMESH_EXCHANGE_MD_MAX_ENTRIES", 200),
            hours=TradingHours.parse(hours, Calendar.from_env()),
            market_clock=market_clock,
            breakers=env("BROKERMESH_EXCHANGE_CIRCUIT_BREAKERS", DEFAULT_BREAKERS),
            gc_interval_seconds=env_float("BROKERMESH_EXCHANGE_GC_INTERVAL_SECONDS", 60.0),
            fix_message_log=env_bool("BROKERMESH_EXCHANGE_FIX_MESSAGE_LOG", False),
            retain_seconds=env_float("BROKERMESH_EXCHANGE_RETAIN_DAYS", 7.0) * 86400,
        )


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
    journal = FileOrderJournal(settings.data_dir / "orders.journal", retain_seconds=settings.retain_seconds)
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
    tasks = [
        service.supervise(market_data.run(), name="market-data"),
        service.supervise(trading_day.run(), name="trading-day"),
    ]
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
        tasks.append(service.supervise(agents.run(), name="liquidity-agents"))

    server = GrpcServer(settings.grpc_listen)
    server.add(
        exchange_admin_pb2_grpc.add_ExchangeAdminServiceServicer_to_server,
        ExchangeAdminServicer(exchange),
        ADMIN_SERVICE,
    )

    gc_policy.start_up()
    tasks.append(service.supervise(gc_policy.run(settings.gc_interval_seconds), name="gc"))
    acceptor.start()
    await server.start()
    log.info(
        "exchange open",
        extra={"boot_id": boot_id, "instruments": len(instruments), "fix_port": settings.fix_port},
    )
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.stop()
        order_entry.flush()
        await delivery.close()
        await acceptor.stop()
        order_entry.flush()
        journal.close()


def main() -> None:
    settings = ExchangeSettings.from_env()
    run(SERVICE, lambda stop: serve(settings, stop), metrics_port=settings.metrics_port)
