"""Trading hours, the index and its circuit breakers, and the liquidity agents: pure logic and
the app loop driven by a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from exchange_sim.app.agents import LiquidityAgents
from exchange_sim.app.order_entry import ExchangeIds, OrderEntry
from exchange_sim.app.trading_day import TradingDay
from exchange_sim.domain import matching as me
from exchange_sim.domain.instruments import Instrument
from exchange_sim.domain.liquidity import LiquidityConfig, SymbolAgent
from exchange_sim.domain.trading_day import (
    CircuitBreaker,
    ConfigError,
    TradingHours,
    index_change,
    parse_breakers,
)

BIG = Instrument("BIG", "Big Ltd", "Test", Decimal("0.05"), 1, Decimal("1000.00"), index_weight=Decimal(3))
SMALL = Instrument(
    "SMALL", "Small Ltd", "Test", Decimal("0.05"), 1, Decimal("100.00"), index_weight=Decimal(1)
)
OTHER = Instrument("OTHER", "Other Ltd", "Test", Decimal("0.05"), 1, Decimal("50.00"))


class NullSink:
    def __init__(self) -> None:
        self.reports: list = []

    def send_execution_report(self, report: object) -> None:
        self.reports.append(report)

    def send_cancel_reject(self, reject: object) -> None:
        self.reports.append(reject)


def test_trading_hours() -> None:
    always = TradingHours.parse("always")
    assert always.is_open(datetime(2026, 1, 17, 22, 0, tzinfo=UTC))
    hours = TradingHours.parse("09:15-15:30")
    assert not hours.is_open(datetime(2026, 1, 17, 3, 44, tzinfo=UTC))  # 09:14 IST
    assert hours.is_open(datetime(2026, 1, 17, 3, 45, tzinfo=UTC))  # 09:15 IST
    assert not hours.is_open(datetime(2026, 1, 17, 10, 0, tzinfo=UTC))  # 15:30 IST
    for bad in ("9-5", "15:30-09:15", "noon"):
        with pytest.raises(ConfigError):
            TradingHours.parse(bad)


def test_breaker_levels_parse_and_trip_once_each() -> None:
    levels = parse_breakers("10:2700,15:6300,20:day")
    assert [(lvl.level, lvl.decline_percent, lvl.halt_seconds) for lvl in levels] == [
        (1, Decimal(10), 2700),
        (2, Decimal(15), 6300),
        (3, Decimal(20), None),
    ]
    breaker = CircuitBreaker(levels)
    assert breaker.check(Decimal("-9.99")) is None
    assert breaker.check(Decimal("-10.00")).level == 1  # type: ignore[union-attr]
    assert breaker.check(Decimal("-12")) is None  # level 1 trips once a day
    assert breaker.check(Decimal("-21")).level == 3  # type: ignore[union-attr]  # straight through 2
    assert breaker.check(Decimal("-30")) is None
    breaker.new_day()
    assert breaker.check(Decimal("-15.5")).level == 2  # type: ignore[union-attr]
    assert parse_breakers("off") == ()
    for bad in ("10:x", "15:60,10:60", "-5:60", "10:0"):
        with pytest.raises(ConfigError):
            parse_breakers(bad)


def test_index_weights_last_prices_over_previous_closes() -> None:
    engine = me.MatchingEngine([BIG, SMALL, OTHER])
    assert index_change(engine.books.values()) == (Decimal("10000.00"), Decimal("0.00"))
    # BIG trades 10 % down; SMALL has not traded (counts at its close); OTHER is not in the index.
    engine.submit("a", "BIG", me.SELL, 1, BIG.to_ticks(Decimal("900.00")))
    engine.submit("b", "BIG", me.BUY, 1, BIG.to_ticks(Decimal("900.00")))
    engine.submit("a", "OTHER", me.SELL, 1, OTHER.to_ticks(Decimal("40.00")))
    engine.submit("b", "OTHER", me.BUY, 1, OTHER.to_ticks(Decimal("40.00")))
    assert index_change(engine.books.values()) == (Decimal("9250.00"), Decimal("-7.50"))


def test_circuit_breaker_halts_the_market_and_lifts_the_halt_when_it_ends() -> None:
    engine = me.MatchingEngine([BIG, SMALL])
    sink = NullSink()
    now = [datetime(2026, 1, 17, 5, 0, tzinfo=UTC)]
    order_entry = OrderEntry(engine, sink, ExchangeIds("t"), lambda: now[0], counterparties=["BROKER"])
    day = TradingDay(
        engine,
        order_entry,
        hours=TradingHours(),
        breaker=CircuitBreaker(parse_breakers("10:60,15:120,20:day")),
        clock=lambda: now[0],
    )
    day.tick()
    assert engine.session_open and engine.market_halt is None
    for instrument, price in ((BIG, "880.00"), (SMALL, "90.00")):  # index -11.5 %
        engine.submit("a", instrument.symbol, me.SELL, 1, instrument.to_ticks(Decimal(price)))
        engine.submit("b", instrument.symbol, me.BUY, 1, instrument.to_ticks(Decimal(price)))
    day.tick()
    assert engine.market_halt is not None and "level 1" in engine.market_halt
    level, index, change, ends = day.view()
    assert (level, index, change) == (1, Decimal("8850.00"), Decimal("-11.50"))
    assert ends == (now[0] + timedelta(seconds=60)).timestamp()
    now[0] += timedelta(seconds=59)
    day.tick()
    assert engine.market_halt is not None
    now[0] += timedelta(seconds=1)
    day.tick()
    assert engine.market_halt is None
    # An operator's halt is the operator's to lift.
    engine.halt(None, "operator")
    now[0] += timedelta(hours=1)
    day.tick()
    assert engine.market_halt == "operator"


def test_the_close_expires_orders_and_the_next_open_starts_a_new_day() -> None:
    engine = me.MatchingEngine([BIG])
    sink = NullSink()
    now = [datetime(2026, 1, 17, 4, 0, tzinfo=UTC)]  # 09:30 IST
    order_entry = OrderEntry(engine, sink, ExchangeIds("t"), lambda: now[0], counterparties=["BROKER"])
    day = TradingDay(
        engine,
        order_entry,
        hours=TradingHours.parse("09:15-15:30"),
        breaker=CircuitBreaker(()),
        clock=lambda: now[0],
    )
    day.tick()
    engine.submit("a", "BIG", me.SELL, 5, BIG.to_ticks(Decimal("1010.00")))
    engine.submit("b", "BIG", me.BUY, 2, BIG.to_ticks(Decimal("1010.00")))
    now[0] = datetime(2026, 1, 17, 10, 0, tzinfo=UTC)  # 15:30 IST
    day.tick()
    assert not engine.session_open and engine.live == {}
    now[0] = datetime(2026, 1, 18, 3, 50, tzinfo=UTC)  # next day, 09:20 IST
    day.tick()
    book = engine.books["BIG"]
    assert engine.session_open
    assert book.reference_close == BIG.to_ticks(Decimal("1010.00")) and book.volume == 0


def test_a_symbol_walk_is_reproducible_and_stays_inside_the_band() -> None:
    config = LiquidityConfig(volatility_bps=50.0)
    band = (BIG.band_low_ticks, BIG.band_high_ticks)
    walk = lambda seed: [  # noqa: E731
        agent.step(1.0)
        for agent in [SymbolAgent("BIG", reference_ticks=20000, band=band, lot=1, seed=seed, config=config)]
        for _ in range(2000)
    ]
    first, second, other = walk(42), walk(42), walk(43)
    assert first == second and first != other
    assert all(band[0] < price < band[1] for price in first)
    agent = SymbolAgent("BIG", reference_ticks=20000, band=band, lot=1, seed=1, config=config)
    quotes = agent.quotes()
    bids = sorted((q.price for q in quotes if q.side == me.BUY), reverse=True)
    asks = sorted(q.price for q in quotes if q.side == me.SELL)
    assert len(bids) == len(asks) == config.levels
    assert asks[0] - bids[0] == config.spread_ticks and bids[0] < agent.fair < asks[0]


def test_agents_make_a_market_that_fills_market_orders_and_trades_by_themselves() -> None:
    engine = me.MatchingEngine([BIG, SMALL])
    sink = NullSink()
    order_entry = OrderEntry(
        engine, sink, ExchangeIds("t"), lambda: datetime.now(UTC), counterparties=["BROKER"]
    )
    agents = LiquidityAgents(engine, order_entry, config=LiquidityConfig(trades_per_minute=120.0), seed=7)
    agents.step_all(0.0)
    bids, asks = engine.depth("BIG", 10)
    assert len(bids) == len(asks) == 5
    events = engine.submit("BROKER/u1", "BIG", me.BUY, 30, None, order_type=me.MARKET)
    buyer = events[0].order  # type: ignore[union-attr]
    assert (buyer.status, buyer.cum) == (me.FILLED, 30)
    for _ in range(60):
        agents.step_all(1.0)
    assert engine.books["BIG"].trades > 10 and engine.books["SMALL"].volume > 0
    agents.pause(True)
    assert engine.depth("BIG", 10) == ([], [])
    agents.pause(False)
    agents.step_all(0.0)
    fair = agents.agents["BIG"].fair
    agents.shock(Decimal(-10))
    assert agents.agents["BIG"].fair < fair * 0.95
    assert engine.depth("BIG", 1)[1][0][0] < fair * 0.95
