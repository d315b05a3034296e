"""Iceberg orders in the matching engine: only the display quantity (FIX MaxFloor) shows in
the book, the shown part is refilled from the hidden remainder at the back of its level, and
fills report cumulative and leaves quantities over the whole order. Pure and fast."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from exchange_sim.domain import matching as me
from exchange_sim.domain.instruments import Instrument

INFY = Instrument("INFY", "Infosys Ltd", "Information Technology", Decimal("0.05"), 1, Decimal("1500.00"))
LOTS = Instrument("LOTS", "Lots Ltd", "Test", Decimal("0.05"), 5, Decimal("100.00"), band_percent=Decimal(10))
P = 30000  # 1500.00 in ticks of 0.05


@pytest.fixture
def engine() -> me.MatchingEngine:
    return me.MatchingEngine([INFY, LOTS])


def first(events: list[me.Event]) -> me.Execution:
    event = events[0]
    assert isinstance(event, me.Execution)
    return event


def fills_of(events: list[me.Event], order_id: int) -> list[tuple[int, int, int]]:
    """(last quantity, cumulative, leaves) of every fill of one order, in order."""
    return [
        (e.last_qty, e.cum, e.leaves)
        for e in events
        if isinstance(e, me.Execution) and e.kind == me.TRADE and e.order.order_id == order_id
    ]


def test_only_the_display_quantity_shows_in_depth(engine: me.MatchingEngine) -> None:
    iceberg = first(engine.submit("a", "INFY", me.SELL, 100, P, max_floor=10))
    assert iceberg.kind == me.ACCEPTED
    engine.submit("b", "INFY", me.SELL, 7, P + 1)
    assert engine.depth("INFY", 5) == ([], [(P, 10, 1), (P + 1, 7, 1)])
    assert engine.books["INFY"].best_ask().quantity == 10  # type: ignore[union-attr]


def test_a_counter_order_fills_across_refills_and_reports_the_whole_order(engine: me.MatchingEngine) -> None:
    iceberg = first(engine.submit("a", "INFY", me.SELL, 100, P, max_floor=10)).order.order_id
    events = engine.submit("x", "INFY", me.BUY, 25, P)
    # 10 shown, refilled, 10, refilled, 5: cumulative and leaves count the hidden part too.
    assert fills_of(events, iceberg) == [(10, 10, 90), (10, 20, 80), (5, 25, 75)]
    assert all(
        e.quantity == 100 for e in events if isinstance(e, me.Execution) and e.order.order_id == iceberg
    )
    assert engine.depth("INFY", 5) == ([], [(P, 5, 1)])
    events = engine.submit("y", "INFY", me.BUY, 75, P)
    # What was left shown first, then seven refills of 10.
    assert fills_of(events, iceberg) == [(5, 30, 70)] + [(10, 30 + 10 * i, 70 - 10 * i) for i in range(1, 8)]
    assert engine.live.get(iceberg) is None and engine.depth("INFY", 5) == ([], [])


def test_each_refill_goes_to_the_back_of_its_level(engine: me.MatchingEngine) -> None:
    iceberg = first(engine.submit("a", "INFY", me.SELL, 100, P, max_floor=10)).order.order_id
    plain = first(engine.submit("b", "INFY", me.SELL, 10, P)).order.order_id
    events = engine.submit("x", "INFY", me.BUY, 15, P)
    # The iceberg's shown 10 was first; its refill queues behind the plain order.
    assert [
        (e.order.order_id, e.last_qty)
        for e in events
        if isinstance(e, me.Execution) and e.kind == me.TRADE and not e.aggressor
    ] == [
        (iceberg, 10),
        (plain, 5),
    ]
    assert engine.depth("INFY", 5) == ([], [(P, 15, 2)])
    events = engine.submit("y", "INFY", me.BUY, 10, P)
    assert [
        (e.order.order_id, e.last_qty)
        for e in events
        if isinstance(e, me.Execution) and e.kind == me.TRADE and not e.aggressor
    ] == [
        (plain, 5),
        (iceberg, 5),
    ]


def test_an_incoming_iceberg_trades_its_whole_quantity_then_rests_its_display(
    engine: me.MatchingEngine,
) -> None:
    engine.submit("a", "INFY", me.SELL, 30, P)
    events = engine.submit("b", "INFY", me.BUY, 100, P, max_floor=20)
    taker = first(events).order.order_id
    assert fills_of(events, taker) == [(30, 30, 70)]
    assert engine.depth("INFY", 5) == ([(P, 20, 1)], [])


@pytest.mark.parametrize(
    ("symbol", "order_type", "quantity", "max_floor"),
    [
        ("LOTS", me.LIMIT, 50, 7),  # not in lots
        ("INFY", me.MARKET, 10, 5),  # nothing rests to hide
        ("INFY", me.STOP, 10, 5),
    ],
)
def test_display_quantity_rules(
    engine: me.MatchingEngine, symbol: str, order_type: str, quantity: int, max_floor: int
) -> None:
    price = None if order_type in (me.MARKET, me.STOP) else (P if symbol == "INFY" else 2000)
    stop = P if order_type == me.STOP else None
    event = first(
        engine.submit(
            "a", symbol, me.BUY, quantity, price, order_type=order_type, stop_price=stop, max_floor=max_floor
        )
    )
    assert (event.kind, event.reason) == (me.REJECTED, me.Reason.BAD_DISPLAY_QUANTITY)


def test_replace_smaller_keeps_priority_and_caps_what_shows(engine: me.MatchingEngine) -> None:
    iceberg = first(engine.submit("a", "INFY", me.SELL, 100, P, max_floor=10)).order.order_id
    plain = first(engine.submit("b", "INFY", me.SELL, 10, P)).order.order_id
    assert first(engine.replace(iceberg, 6, P)).kind == me.REPLACED
    assert engine.depth("INFY", 5) == ([], [(P, 16, 2)])
    events = engine.submit("x", "INFY", me.BUY, 6, P)
    assert fills_of(events, iceberg) == [(6, 6, 0)] and fills_of(events, plain) == []


def test_replace_to_another_display_quantity_loses_priority(engine: me.MatchingEngine) -> None:
    iceberg = first(engine.submit("a", "INFY", me.SELL, 100, P, max_floor=10)).order.order_id
    plain = first(engine.submit("b", "INFY", me.SELL, 10, P)).order.order_id
    assert first(engine.replace(iceberg, 100, P, None, 20)).kind == me.REPLACED
    assert engine.depth("INFY", 5) == ([], [(P, 30, 2)])
    events = engine.submit("x", "INFY", me.BUY, 10, P)
    assert fills_of(events, plain) == [(10, 10, 0)] and fills_of(events, iceberg) == []


def test_a_display_of_the_whole_order_or_more_shows_it_all(engine: me.MatchingEngine) -> None:
    engine.submit("a", "INFY", me.SELL, 10, P, max_floor=15)
    assert engine.depth("INFY", 5) == ([], [(P, 10, 1)])


def test_random_flow_with_icebergs_keeps_levels_equal_to_what_orders_show(engine: me.MatchingEngine) -> None:
    rng = random.Random(11)
    bought = sold = 0
    for _ in range(3000):
        action = rng.random()
        if action < 0.6 or not engine.live:
            quantity = rng.randint(1, 60)
            events = engine.submit(
                rng.choice("abcd"),
                "INFY",
                rng.choice((me.BUY, me.SELL)),
                quantity,
                P + rng.randint(-10, 10),
                max_floor=rng.choice((0, 0, rng.randint(1, quantity))),
            )
        elif action < 0.8:
            events = engine.cancel(rng.choice(list(engine.live)))
        else:
            target = engine.live[rng.choice(list(engine.live))]
            events = engine.replace(target.order_id, target.cum + rng.randint(1, 60), target.price)
        for event in events:
            if isinstance(event, me.Execution) and event.kind == me.TRADE:
                if event.order.side == me.BUY:
                    bought += event.last_qty
                else:
                    sold += event.last_qty
        bids, asks = engine.depth("INFY", 1)
        assert not (bids and asks and bids[0][0] >= asks[0][0]), "crossed book"
    assert bought == sold
    book = engine.books["INFY"]
    for side in (book.bids, book.asks):
        for level in side.levels.values():
            live = level.orders()
            assert level.quantity == sum(o.shown for o in live)
            for o in live:
                assert 0 < o.shown <= o.leaves and o.shown <= (o.max_floor or o.leaves)
