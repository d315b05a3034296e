"""The exchange simulator's settings, read from the environment (the common ones are in
svc_runtime.config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exchange_sim.adapters.instrument_file import DEFAULT_FILE
from exchange_sim.domain.liquidity import ACTIVITY_LEVELS, Activity, LiquidityConfig
from exchange_sim.domain.matching import SELF_TRADE_MODES
from exchange_sim.domain.trading_day import DEFAULT_BREAKERS, TradingHours
from svc_runtime import config
from svc_runtime.config import env, env_bool, env_float, env_int
from svc_runtime.market_clock import Calendar, MarketClock

SERVICE = "exchange_sim"
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
