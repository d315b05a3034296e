"""Trading sessions: the market calendar, the fast clock, pre-open, and the validity of orders
(DAY, GTC, GTD) at the close — pure logic and the exchange's app loop on a fake clock."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from brokermesh.exchange.v1 import exchange_admin_pb2 as pb
from exchange_sim.app import messages as m
from exchange_sim.app.exchange import Exchange
from exchange_sim.app.order_entry import ExchangeIds, OrderEntry
from exchange_sim.app.trading_day import TradingDay
from exchange_sim.domain import matching as me
from exchange_sim.domain.instruments import Instrument
from exchange_sim.domain.trading_day import CircuitBreaker, TradingHours
from exchange_sim.transport.admin import ExchangeAdminServicer
from svc_runtime import market_clock as mc

BIG = Instrument("BIG", "Big Ltd", "Test", Decimal("0.05"), 1, Decimal("1000.00"))
MONDAY = date(2026, 12, 7)


def ist(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=mc.IST)


class Sink:
    def __init__(self) -> None:
        self.reports: list[Any] = []

    def send_execution_report(self, report: object) -> None:
        self.reports.append(report)

    def send_cancel_reject(self, reject: object) -> None:
        self.reports.append(reject)


def test_the_demo_calendar_has_phases_weekends_and_holidays() -> None:
    calendar = mc.Calendar()
    assert calendar.phase(ist(MONDAY, 8, 59)) is mc.Phase.CLOSED
    assert calendar.phase(ist(MONDAY, 9, 0)) is mc.Phase.PRE_OPEN
    assert calendar.phase(ist(MONDAY, 9, 15)) is mc.Phase.OPEN
    assert calendar.phase(ist(MONDAY, 15, 29)) is mc.Phase.OPEN
    assert calendar.phase(ist(MONDAY, 15, 30)) is mc.Phase.CLOSED
    assert calendar.phase(ist(date(2026, 12, 12), 10)) is mc.Phase.CLOSED  # Saturday
    assert calendar.phase(ist(date(2026, 12, 25), 10)) is mc.Phase.CLOSED  # Christmas
    # T+1 counts trading days: Friday's trades settle on Monday, Thursday 24th's on Monday 28th.
    assert calendar.settlement_date(date(2026, 12, 11)) == date(2026, 12, 14)
    assert calendar.settlement_date(date(2026, 12, 24)) == date(2026, 12, 28)


def test_calendar_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mc.SESSIONS, "09:00-09:30-10:00")
    monkeypatch.setenv(mc.HOLIDAYS, "2026-12-08")
    calendar = mc.Calendar.from_env()
    assert calendar.phase(ist(MONDAY, 9, 45)) is mc.Phase.OPEN
    assert calendar.phase(ist(MONDAY, 10, 0)) is mc.Phase.CLOSED
    assert not calendar.is_trading_day(date(2026, 12, 8))
    monkeypatch.setenv(mc.SESSIONS, "10:00-09:00-11:00")
    with pytest.raises(mc.ClockError):
        mc.Calendar.from_env()


def test_a_fast_clock_runs_a_day_in_a_minute_and_every_process_agrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start = ist(MONDAY, 9)
    clock = mc.MarketClock.fast_clock(60, start, epoch=1000.0)
    assert clock.at_wall(1000.0) == start
    assert clock.at_wall(1030.0) == start + timedelta(hours=12)
    assert clock.wall_at(ist(MONDAY, 15, 30)) == pytest.approx(1000.0 + 6.5 * 60 / 24)
    for name, value in mc.fast_env(60, start, epoch=1000.0).items():
        monkeypatch.setenv(name, value)
    assert mc.MarketClock.from_env() == clock
    monkeypatch.setenv(mc.CLOCK, "real")
    assert not mc.MarketClock.from_env().fast
    monkeypatch.setenv(mc.CLOCK, "warp")
    with pytest.raises(mc.ClockError):
        mc.MarketClock.from_env()


def test_a_fast_clock_is_pinned_once_for_the_whole_stack() -> None:
    assert mc.pinned_env({}) == {}
    pinned = mc.pinned_env({mc.CLOCK: "fast"})
    assert set(pinned) == {mc.CLOCK_START, mc.CLOCK_EPOCH}
    assert mc.pinned_env({mc.CLOCK: "fast", **pinned}) == {}


def test_gtc_survives_the_close_and_gtd_expires_on_its_date() -> None:
    engine = me.MatchingEngine([BIG])
    price = BIG.to_ticks(Decimal("990.00"))
    day_order = engine.submit("a", "BIG", me.BUY, 1, price)[0].order  # type: ignore[union-attr]
    gtc = engine.submit("a", "BIG", me.BUY, 2, price, tif=me.GTC)[0].order  # type: ignore[union-attr]
    gtd = engine.submit("a", "BIG", me.BUY, 3, price, tif=me.GTD, expire_date=MONDAY + timedelta(days=1))[
        0
    ].order  # type: ignore[union-attr]
    stop = engine.submit(
        "a", "BIG", me.BUY, 4, order_type=me.STOP, stop_price=BIG.to_ticks(Decimal("1010.00"))
    )[0].order  # type: ignore[union-attr]

    expired = engine.expire_day_orders(MONDAY)
    assert [(e.order, e.reason) for e in expired] == [  # type: ignore[union-attr]
        (day_order, me.Reason.END_OF_DAY),
        (stop, me.Reason.END_OF_DAY),
    ]
    assert set(engine.live.values()) == {gtc, gtd}
    assert engine.books["BIG"].best_bid().quantity == 5  # type: ignore[union-attr]

    expired = engine.expire_day_orders(MONDAY + timedelta(days=1))
    assert [(e.order, e.reason) for e in expired] == [(gtd, me.Reason.EXPIRE_DATE)]  # type: ignore[union-attr]
    assert list(engine.live.values()) == [gtc]
    # The GTC order still trades.
    engine.submit("b", "BIG", me.SELL, 2, price)
    assert gtc.status == me.FILLED


def _gtd(cl_ord_id: str, **fields: Any) -> m.NewOrderRequest:
    return m.NewOrderRequest(cl_ord_id, "BIG", "1", "1", "2", price="990.00", time_in_force="6", **fields)


def test_fix_gtd_orders_need_a_date_that_has_not_passed() -> None:
    engine = me.MatchingEngine([BIG])
    sink = Sink()
    now = ist(MONDAY, 10)
    entry = OrderEntry(engine, sink, ExchangeIds("t"), lambda: now, counterparties=["BROKER"])
    entry.new_order("BROKER", _gtd("1", expire_date="20261208"))
    entry.new_order("BROKER", _gtd("2", expire_time="20261208-12:00:00"))  # 17:30 IST on the 8th
    entry.new_order("BROKER", _gtd("3"))
    entry.new_order("BROKER", _gtd("4", expire_date="20261204"))
    entry.new_order("BROKER", _gtd("5", expire_date="tomorrow"))
    entry.new_order(
        "BROKER", m.NewOrderRequest("6", "BIG", "1", "1", "2", price="990.00", expire_date="20261208")
    )
    by_id = {r.cl_ord_id: r for r in sink.reports}
    assert by_id["1"].ord_status == m.STATUS_NEW and by_id["1"].expire_date == "20261208"
    assert by_id["2"].ord_status == m.STATUS_NEW and by_id["2"].expire_date == "20261208"
    for refused in ("3", "4", "5", "6"):
        assert by_id[refused].ord_status == m.STATUS_REJECTED, refused
    assert "has passed" in by_id["4"].text


def test_the_pre_open_holds_orders_until_the_open_and_the_close_keeps_gtc() -> None:
    engine = me.MatchingEngine([BIG])
    sink = Sink()
    now = [ist(MONDAY, 8, 30)]
    entry = OrderEntry(engine, sink, ExchangeIds("t"), lambda: now[0], counterparties=["BROKER"])
    exchange = Exchange(engine, entry, None, None)  # type: ignore[arg-type]
    day = TradingDay(
        engine,
        entry,
        hours=TradingHours.parse("calendar"),
        breaker=CircuitBreaker(()),
        clock=lambda: now[0],
        on_phase=exchange.phase_changed,
    )
    exchange.session_view = day.session_view
    admin = ExchangeAdminServicer(exchange)
    day.tick()
    assert not engine.session_open
    assert admin._state().phase == pb.MARKET_PHASE_CLOSED
    now[0] = ist(MONDAY, 9, 5)
    day.tick()
    state = admin._state()
    assert (state.phase, state.trading_date) == (pb.MARKET_PHASE_PRE_OPEN, "")
    assert state.market_time.ToDatetime(tzinfo=mc.IST) == now[0]
    exchange.dispatch("BROKER", m.NewOrderRequest("d", "BIG", "1", "1", "2", price="990.00"))
    exchange.dispatch(
        "BROKER", m.NewOrderRequest("g", "BIG", "1", "1", "2", price="990.00", time_in_force="1")
    )
    exchange.dispatch("BROKER", m.StatusRequest("d", "BIG", "1", status_request_id="s1"))
    assert sink.reports == [] and engine.live == {}  # held, not refused as "market closed"
    now[0] = ist(MONDAY, 9, 15)
    day.tick()
    assert [(r.cl_ord_id, r.ord_status) for r in sink.reports] == [
        ("d", m.STATUS_NEW),
        ("g", m.STATUS_NEW),
        ("d", m.STATUS_NEW),  # the status request, answered once the order is known
    ]
    assert sink.reports[2].status_request_id == "s1"
    state = admin._state()
    assert (state.phase, state.trading_date, state.session_open) == (pb.MARKET_PHASE_OPEN, "2026-12-07", True)
    now[0] = ist(MONDAY, 15, 30)
    day.tick()
    closing = sink.reports[3:]
    assert [(r.cl_ord_id, r.exec_type, r.ord_status) for r in closing] == [("d", "C", m.STATUS_EXPIRED)]
    assert [o.tif for o in engine.live.values()] == [me.GTC]


def test_up_keeps_a_fast_clock_across_restarts_of_the_stack(tmp_path: Path) -> None:
    saved = tmp_path / "market_clock.json"
    assert mc.resume_env({}, saved) == {} and not saved.exists()
    first = mc.resume_env({mc.CLOCK: "fast", mc.FAST_DAY_SECONDS: "60"}, saved)
    assert set(first) == {mc.CLOCK_START, mc.CLOCK_EPOCH}
    assert mc.resume_env({mc.CLOCK: "fast", mc.FAST_DAY_SECONDS: "60"}, saved) == first
    # Another speed is another clock.
    other = mc.resume_env({mc.CLOCK: "fast", mc.FAST_DAY_SECONDS: "120"}, saved)
    assert other[mc.CLOCK_EPOCH] != first[mc.CLOCK_EPOCH] or other[mc.CLOCK_START] != first[mc.CLOCK_START]
