"""The demo activity level: liquid symbols (index constituents) trade several times a second,
the rest as configured; the normal level is unchanged."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from exchange_sim.app.agents import LiquidityAgents
from exchange_sim.app.order_entry import ExchangeIds, OrderEntry
from exchange_sim.domain import matching as me
from exchange_sim.domain.liquidity import ACTIVITY_LEVELS, LiquidityConfig
from tests.exchange.test_trading_day_units import BIG, OTHER, SMALL, NullSink


def agents_at(level: str) -> tuple[me.MatchingEngine, LiquidityAgents]:
    engine = me.MatchingEngine([BIG, SMALL, OTHER])
    order_entry = OrderEntry(
        engine, NullSink(), ExchangeIds("t"), lambda: datetime.now(UTC), counterparties=["BROKER"]
    )
    agents = LiquidityAgents(
        engine,
        order_entry,
        config=LiquidityConfig(),
        seed=7,
        interval_seconds=0.02,
        activity=ACTIVITY_LEVELS[level],
    )
    agents.step_all(0.0)
    return engine, agents


async def run_for(agents: LiquidityAgents, seconds: float) -> None:
    task = asyncio.create_task(agents.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_demo_steps_liquid_symbols_more_often_and_normal_keeps_one_pass() -> None:
    _, normal = agents_at("normal")
    assert normal._order == ["BIG", "SMALL", "OTHER"]
    _, demo = agents_at("demo")
    assert demo._order.count("BIG") == 4 and demo._order.count("OTHER") == 1
    assert demo.agents["BIG"].config.trades_per_minute > 60
    assert demo.agents["OTHER"].config == LiquidityConfig()


async def test_demo_liquid_symbols_trade_several_times_a_second() -> None:
    engine, demo = agents_at("demo")
    await run_for(demo, 3.0)
    liquid_trades = engine.books["BIG"].trades + engine.books["SMALL"].trades
    # 150 a minute each: about 15 in 3 s for the two; a busy machine still gives well over 6.
    assert liquid_trades >= 6, liquid_trades
    engine, normal = agents_at("normal")
    await run_for(normal, 3.0)
    # 6 a minute each: well under one a second.
    assert engine.books["BIG"].trades + engine.books["SMALL"].trades < liquid_trades
