"""Market data without FIX: the entries a book produces and the subscription logic, with a
recording sink in place of the FIX session."""

from __future__ import annotations

from decimal import Decimal

from exchange_sim.app import messages as m
from exchange_sim.app.market_data import MarketData
from exchange_sim.domain import market_data as md
from exchange_sim.domain import matching as me
from exchange_sim.domain.instruments import Instrument

INFY = Instrument("INFY", "Infosys Ltd", "IT", Decimal("0.05"), 1, Decimal("1500.00"))
TCS = Instrument("TCS", "TCS Ltd", "IT", Decimal("0.05"), 1, Decimal("3900.00"))
T = 1_768_627_530_000_000_000  # 2026-01-17 05:25:30 UTC, in ns


class RecordingSink:
    def __init__(self) -> None:
        self.snapshots: list[tuple[str, str, str, list[md.Entry]]] = []
        self.incrementals: list[tuple[str, str, list[md.Entry]]] = []
        self.rejects: list[tuple[str, str, str, str]] = []
        self.lists: list[dict] = []

    def send_snapshot(self, session: str, md_req_id: str, symbol: str, entries: list[md.Entry]) -> None:
        self.snapshots.append((session, md_req_id, symbol, entries))

    def send_incremental(self, session: str, md_req_id: str, entries: list[md.Entry]) -> None:
        self.incrementals.append((session, md_req_id, entries))

    def send_md_reject(self, session: str, md_req_id: str, reason: str, text: str) -> None:
        self.rejects.append((session, md_req_id, reason, text))

    def send_security_list(self, session: str, **kwargs: object) -> None:
        self.lists.append({"session": session, **kwargs})


def setup(max_entries: int = 100) -> tuple[me.MatchingEngine, MarketData, RecordingSink]:
    engine = me.MatchingEngine([INFY, TCS])
    sink = RecordingSink()
    return (
        engine,
        MarketData(engine, sink, interval_seconds=0.1, max_entries=max_entries, clock_ns=lambda: T),
        sink,
    )


def subscribe(
    data: MarketData, symbols: tuple[str, ...], *, depth: int = 1, req: str = "r1", types: str = ""
) -> None:
    data.request("MD", m.MarketDataRequest(req, "1", depth, tuple(types), symbols, "1"))


def test_snapshot_lists_the_book_then_trades_and_the_previous_close() -> None:
    engine, data, sink = setup()
    engine.submit("a", "INFY", me.BUY, 10, INFY.to_ticks(Decimal("1499.95")))
    engine.submit("a", "INFY", me.BUY, 5, INFY.to_ticks(Decimal("1499.90")))
    engine.submit("b", "INFY", me.SELL, 7, INFY.to_ticks(Decimal("1500.05")))
    subscribe(data, ("INFY",), depth=2)
    (_, req, symbol, entries) = sink.snapshots[0]
    assert (req, symbol) == ("r1", "INFY")
    view = [(e.entry_type, e.price, e.size, e.position) for e in entries]
    assert view == [
        ("0", Decimal("1499.95"), 10, 1),
        ("0", Decimal("1499.90"), 5, 2),
        ("1", Decimal("1500.05"), 7, 1),
        ("B", None, 0, None),
        ("5", Decimal("1500.00"), None, None),
    ]
    assert entries[-1].previous_day


def test_incremental_carries_only_changes_with_many_symbols_per_message() -> None:
    engine, data, sink = setup()
    engine.submit("a", "INFY", me.SELL, 10, INFY.to_ticks(Decimal("1500.05")))
    engine.submit("a", "TCS", me.SELL, 10, TCS.to_ticks(Decimal("3900.05")))
    subscribe(data, ("INFY", "TCS"), types="0124578B")
    engine.drain_changed()
    assert data.publish() == 0  # nothing changed since the snapshots

    engine.submit("b", "INFY", me.BUY, 4, INFY.to_ticks(Decimal("1500.05")))  # a trade
    engine.submit("b", "TCS", me.BUY, 3, TCS.to_ticks(Decimal("3899.00")))  # a new bid
    data.publish()
    assert len(sink.incrementals) == 1
    entries = sink.incrementals[0][2]
    assert {e.symbol for e in entries} == {"INFY", "TCS"}
    infy = {(e.entry_type, e.action): e for e in entries if e.symbol == "INFY"}
    assert infy[("1", md.CHANGE)].size == 6  # the offer shrank
    trade = infy[("2", md.NEW)]
    assert (trade.price, trade.size) == (Decimal("1500.05"), 4)
    assert infy[("B", md.CHANGE)].size == 4
    assert {("4", md.NEW), ("7", md.NEW), ("8", md.NEW)} <= set(infy)
    tcs = [(e.entry_type, e.action, e.price, e.size) for e in entries if e.symbol == "TCS"]
    assert tcs == [("0", md.NEW, Decimal("3899.00"), 3)]


def test_a_level_that_empties_is_deleted_by_position() -> None:
    engine, data, sink = setup()
    bid = engine.submit("a", "INFY", me.BUY, 10, INFY.to_ticks(Decimal("1499.95")))[0].order.order_id  # type: ignore[union-attr]
    engine.submit("a", "INFY", me.BUY, 10, INFY.to_ticks(Decimal("1499.90")))
    subscribe(data, ("INFY",), depth=5, types="0")
    engine.cancel(bid)
    data.publish()
    entries = sink.incrementals[0][2]
    assert [(e.action, e.position, e.price, e.size) for e in entries] == [
        (md.CHANGE, 1, Decimal("1499.90"), 10),
        (md.DELETE, 2, Decimal("1499.90"), 0),
    ]


def test_large_rounds_are_split_into_messages_of_bounded_size() -> None:
    engine, data, sink = setup(max_entries=3)
    subscribe(data, ("INFY", "TCS"), depth=5, types="01")
    for i in range(4):
        engine.submit("a", "INFY", me.BUY, 1, INFY.to_ticks(Decimal("1499.00")) - i)
        engine.submit("a", "TCS", me.BUY, 1, TCS.to_ticks(Decimal("3899.00")) - i)
    data.publish()
    sizes = [len(entries) for _, _, entries in sink.incrementals]
    assert sizes == [3, 3, 2]


def test_requests_that_cannot_be_served_are_rejected_and_nothing_is_subscribed() -> None:
    _engine, data, sink = setup()
    subscribe(data, ("INFY", "NOPE"), req="bad-symbol")
    subscribe(data, ("INFY",), req="bad-type", types="0Z")
    subscribe(data, ("INFY",), req="ok")
    subscribe(data, ("TCS",), req="ok")
    assert [(r[1], r[2]) for r in sink.rejects] == [("bad-symbol", "0"), ("bad-type", "8"), ("ok", "1")]
    assert list(data.subscriptions) == [("MD", "ok")]


def test_unsubscribe_and_logout_end_subscriptions() -> None:
    engine, data, sink = setup()
    subscribe(data, ("INFY",), req="a")
    subscribe(data, ("TCS",), req="b")
    data.request("MD", m.MarketDataRequest("a", "2", 0))
    assert list(data.subscriptions) == [("MD", "b")]
    data.session_changed("MD", logged_on=False)
    assert not data.subscriptions
    engine.submit("x", "TCS", me.BUY, 1, TCS.to_ticks(Decimal("3899.00")))
    assert data.publish() == 0 and not sink.incrementals


def test_snapshot_only_requests_do_not_subscribe() -> None:
    _engine, data, sink = setup()
    data.request("MD", m.MarketDataRequest("once", "0", 1, (), ("INFY",)))
    assert len(sink.snapshots) == 1 and not data.subscriptions


def test_security_list_in_fragments() -> None:
    _engine, data, sink = setup()
    data.security_list("MD", m.SecurityListRequest("s1", "4"))
    assert [(x["total"], x["last"], len(x["instruments"])) for x in sink.lists] == [(2, True, 2)]
    data.security_list("MD", m.SecurityListRequest("s2", "0", "TCS"))
    assert [i.symbol for i in sink.lists[-1]["instruments"]] == ["TCS"]
    data.security_list("MD", m.SecurityListRequest("s3", "0", "NOPE"))
    assert (sink.lists[-1]["result"], sink.lists[-1]["instruments"]) == ("2", [])
