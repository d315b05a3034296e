"""The matching engine alone: price-time priority, partial fills, IOC/FOK, replace, self-trade
prevention, tick and lot size, stops, halts. Pure and fast."""

from __future__ import annotations

import gc
import random
from decimal import Decimal

import pytest

from exchange_sim.domain import matching as me
from exchange_sim.domain.instruments import Instrument, InstrumentError, parse_instruments

INFY = Instrument("INFY", "Infosys Ltd", "Information Technology", Decimal("0.05"), 1, Decimal("1500.00"))
LOTS = Instrument("LOTS", "Lots Ltd", "Test", Decimal("0.05"), 5, Decimal("100.00"), band_percent=Decimal(10))


def px(text: str) -> int:
    ticks = INFY.to_ticks(Decimal(text))
    assert ticks is not None
    return ticks


@pytest.fixture
def engine() -> me.MatchingEngine:
    return me.MatchingEngine([INFY, LOTS])


def trades(events: list[me.Event]) -> list[tuple[int, int, int]]:
    """(order id, quantity, price) of every fill, in order."""
    return [
        (e.order.order_id, e.last_qty, e.last_price)
        for e in events
        if isinstance(e, me.Execution) and e.kind == me.TRADE
    ]


def kinds(events: list[me.Event]) -> list[str]:
    return [e.kind if isinstance(e, me.Execution) else "CANCEL_REJECTED" for e in events]


def order_id(events: list[me.Event]) -> int:
    first = events[0]
    assert isinstance(first, me.Execution)
    return first.order.order_id


def test_price_then_time_priority(engine: me.MatchingEngine) -> None:
    a = order_id(engine.submit("a", "INFY", me.SELL, 10, px("1500.10")))
    b = order_id(engine.submit("b", "INFY", me.SELL, 10, px("1500.05")))
    c = order_id(engine.submit("c", "INFY", me.SELL, 10, px("1500.05")))  # same price, later
    events = engine.submit("x", "INFY", me.BUY, 25, px("1500.10"))
    taker = order_id(events)
    fills = trades(events)
    # Better price first (b, c at 1500.05, in arrival order), then a at 1500.10.
    assert [(o, q, p) for o, q, p in fills if o != taker] == [
        (b, 10, px("1500.05")),
        (c, 10, px("1500.05")),
        (a, 5, px("1500.10")),
    ]
    assert engine.live[a].leaves == 5
    assert engine.live[a].status == me.PARTIALLY_FILLED


def test_resting_price_sets_the_trade_price_and_partial_fills_accumulate(engine: me.MatchingEngine) -> None:
    resting = order_id(engine.submit("a", "INFY", me.BUY, 100, px("1500.00")))
    first = engine.submit("b", "INFY", me.SELL, 30, px("1499.00"))
    assert trades(first)[0][2] == px("1500.00")
    engine.submit("c", "INFY", me.SELL, 30, px("1499.50"))
    order = engine.live[resting]
    assert (order.cum, order.leaves, order.status) == (60, 40, me.PARTIALLY_FILLED)
    assert order.notional == 60 * px("1500.00")
    last = engine.submit("d", "INFY", me.SELL, 50, px("1500.00"))
    fill = next(
        e for e in last if isinstance(e, me.Execution) and e.order.order_id == resting and e.kind == me.TRADE
    )
    assert (fill.last_qty, fill.cum, fill.leaves, fill.status) == (40, 100, 0, me.FILLED)
    assert resting not in engine.live
    # The seller's remainder rests: 10 at 1500.00.
    assert engine.depth("INFY", 5) == ([], [(px("1500.00"), 10, 1)])


def test_each_fill_event_snapshots_the_order_at_that_moment(engine: me.MatchingEngine) -> None:
    engine.submit("a", "INFY", me.SELL, 10, px("1500.00"))
    engine.submit("a", "INFY", me.SELL, 10, px("1500.05"))
    events = engine.submit("b", "INFY", me.BUY, 20, px("1500.05"))
    mine = [e for e in events if isinstance(e, me.Execution) and e.order.order_id == order_id(events)]
    assert [(e.kind, e.cum, e.leaves) for e in mine] == [
        (me.ACCEPTED, 0, 20),
        (me.TRADE, 10, 10),
        (me.TRADE, 20, 0),
    ]


def test_market_order_takes_what_there_is_and_cancels_the_rest(engine: me.MatchingEngine) -> None:
    engine.submit("a", "INFY", me.SELL, 10, px("1500.00"))
    engine.submit("a", "INFY", me.SELL, 10, px("1510.00"))
    events = engine.submit("b", "INFY", me.BUY, 50, None, order_type=me.MARKET)
    assert kinds(events) == [me.ACCEPTED, me.TRADE, me.TRADE, me.TRADE, me.TRADE, me.CANCELLED]
    cancelled = events[-1]
    assert isinstance(cancelled, me.Execution)
    assert (cancelled.reason, cancelled.cum, cancelled.leaves) == (me.Reason.NO_LIQUIDITY, 20, 0)
    assert engine.live == {}


def test_ioc_fills_what_it_can_now_and_never_rests(engine: me.MatchingEngine) -> None:
    engine.submit("a", "INFY", me.SELL, 10, px("1500.00"))
    events = engine.submit("b", "INFY", me.BUY, 25, px("1500.00"), tif=me.IOC)
    assert kinds(events) == [me.ACCEPTED, me.TRADE, me.TRADE, me.CANCELLED]
    assert events[-1].reason == me.Reason.IOC_REMAINDER  # type: ignore[union-attr]
    assert engine.depth("INFY", 5) == ([], [])


def test_fok_fills_completely_or_not_at_all(engine: me.MatchingEngine) -> None:
    engine.submit("a", "INFY", me.SELL, 10, px("1500.00"))
    engine.submit("a", "INFY", me.SELL, 10, px("1500.05"))
    engine.submit("a", "INFY", me.SELL, 10, px("1500.10"))
    killed = engine.submit("b", "INFY", me.BUY, 25, px("1500.05"), tif=me.FOK)  # only 20 at or below
    assert kinds(killed) == [me.ACCEPTED, me.CANCELLED]
    assert killed[-1].reason == me.Reason.FOK_NOT_FILLABLE  # type: ignore[union-attr]
    assert engine.depth("INFY", 5)[1] == [
        (px("1500.00"), 10, 1),
        (px("1500.05"), 10, 1),
        (px("1500.10"), 10, 1),
    ]
    filled = engine.submit("b", "INFY", me.BUY, 25, px("1500.10"), tif=me.FOK)
    assert sum(q for o, q, _ in trades(filled) if o == order_id(filled)) == 25
    assert engine.depth("INFY", 5)[1] == [(px("1500.10"), 5, 1)]


def test_cancel_removes_the_order_and_a_second_cancel_is_refused(engine: me.MatchingEngine) -> None:
    a = order_id(engine.submit("a", "INFY", me.SELL, 10, px("1500.00")))
    b = order_id(engine.submit("a", "INFY", me.SELL, 7, px("1500.00")))
    assert kinds(engine.cancel(a)) == [me.CANCELLED]
    again = engine.cancel(a)
    assert isinstance(again[0], me.CancelRejected) and again[0].reason == me.Reason.UNKNOWN_ORDER
    assert engine.depth("INFY", 1)[1] == [(px("1500.00"), 7, 1)]
    # The cancelled order is skipped: the buyer meets b.
    fills = trades(engine.submit("b", "INFY", me.BUY, 7, px("1500.00")))
    assert [o for o, _, _ in fills][1] == b


def test_replace_down_in_size_keeps_time_priority(engine: me.MatchingEngine) -> None:
    first = order_id(engine.submit("a", "INFY", me.BUY, 10, px("1500.00")))
    second = order_id(engine.submit("b", "INFY", me.BUY, 10, px("1500.00")))
    replaced = engine.replace(first, 6, px("1500.00"))
    assert kinds(replaced) == [me.REPLACED]
    assert (replaced[0].quantity, replaced[0].leaves) == (6, 6)  # type: ignore[union-attr]
    fills = trades(engine.submit("c", "INFY", me.SELL, 6, px("1500.00")))
    assert fills[1][0] == first
    assert engine.depth("INFY", 1)[0] == [(px("1500.00"), 10, 1)]
    assert second in engine.live


@pytest.mark.parametrize(("quantity", "price"), [(20, "1500.00"), (10, "1500.05"), (10, "1499.95")])
def test_replace_up_in_size_or_to_another_price_loses_time_priority(
    engine: me.MatchingEngine, quantity: int, price: str
) -> None:
    first = order_id(engine.submit("a", "INFY", me.BUY, 10, px("1500.00")))
    second = order_id(engine.submit("b", "INFY", me.BUY, 10, px("1500.00")))
    engine.replace(first, quantity, px(price))
    if price == "1500.05":  # a better price still goes first: price before time
        assert trades(engine.submit("c", "INFY", me.SELL, 1, px("1499.00")))[1][0] == first
        return
    assert trades(engine.submit("c", "INFY", me.SELL, 1, px("1499.00")))[1][0] == second


def test_replace_that_crosses_trades_at_once(engine: me.MatchingEngine) -> None:
    engine.submit("a", "INFY", me.SELL, 10, px("1500.10"))
    bid = order_id(engine.submit("b", "INFY", me.BUY, 10, px("1500.00")))
    events = engine.replace(bid, 10, px("1500.10"))
    assert kinds(events) == [me.REPLACED, me.TRADE, me.TRADE]
    assert engine.depth("INFY", 5) == ([], [])


def test_replace_rules(engine: me.MatchingEngine) -> None:
    bid = order_id(engine.submit("b", "INFY", me.BUY, 10, px("1500.00")))
    engine.submit("a", "INFY", me.SELL, 4, px("1500.00"))
    refused = engine.replace(bid, 4, px("1500.00"))  # not above the 4 already filled
    assert isinstance(refused[0], me.CancelRejected)
    assert refused[0].reason == me.Reason.QUANTITY_NOT_ABOVE_FILLED
    events = engine.replace(bid, 5, px("1500.00"))
    assert (events[0].leaves, events[0].cum, events[0].status) == (1, 4, me.PARTIALLY_FILLED)  # type: ignore[union-attr]
    assert isinstance(engine.replace(12345, 5, px("1500.00"))[0], me.CancelRejected)


@pytest.mark.parametrize(
    ("mode", "incoming_cancelled", "resting_cancelled", "fills"),
    [
        (me.CANCEL_NEWEST, True, False, 0),
        (me.CANCEL_OLDEST, False, True, 5),
        (me.CANCEL_BOTH, True, True, 0),
    ],
)
def test_self_trade_prevention(
    mode: str, incoming_cancelled: bool, resting_cancelled: bool, fills: int
) -> None:
    engine = me.MatchingEngine([INFY], self_trade=mode)
    own = order_id(engine.submit("alice", "INFY", me.SELL, 10, px("1500.00")))
    other = order_id(engine.submit("bob", "INFY", me.SELL, 5, px("1500.05")))
    events = engine.submit("alice", "INFY", me.BUY, 5, px("1500.05"))
    mine = order_id(events)
    cancelled = {e.order.order_id for e in events if isinstance(e, me.Execution) and e.kind == me.CANCELLED}
    assert all(
        e.reason == me.Reason.SELF_TRADE
        for e in events
        if isinstance(e, me.Execution) and e.kind == me.CANCELLED
    )
    assert (mine in cancelled, own in cancelled) == (incoming_cancelled, resting_cancelled)
    assert sum(q for o, q, _ in trades(events) if o == mine) == fills
    if fills:
        assert {o for o, _, _ in trades(events)} == {mine, other}
    # Never a trade between alice and alice.
    assert own not in {o for o, _, _ in trades(events)}


def test_self_trade_is_per_owner_only(engine: me.MatchingEngine) -> None:
    engine.submit("alice", "INFY", me.SELL, 10, px("1500.00"))
    assert len(trades(engine.submit("bob", "INFY", me.BUY, 10, px("1500.00")))) == 2


def test_fok_counts_no_quantity_behind_an_own_order(engine: me.MatchingEngine) -> None:
    engine.submit("alice", "INFY", me.SELL, 10, px("1500.00"))
    engine.submit("bob", "INFY", me.SELL, 10, px("1500.00"))
    events = engine.submit("alice", "INFY", me.BUY, 10, px("1500.00"), tif=me.FOK)
    assert kinds(events) == [me.ACCEPTED, me.CANCELLED]
    assert engine.depth("INFY", 1)[1] == [(px("1500.00"), 20, 2)]


@pytest.mark.parametrize(
    ("symbol", "quantity", "price", "reason"),
    [
        ("NOPE", 10, 30000, me.Reason.UNKNOWN_SYMBOL),
        ("INFY", 0, 30000, me.Reason.BAD_QUANTITY),
        ("LOTS", 7, 2000, me.Reason.NOT_LOT_MULTIPLE),
        ("INFY", 10, px("1800.05"), me.Reason.OUTSIDE_BAND),  # band 1200.00-1800.00
        ("INFY", 10, px("1199.95"), me.Reason.OUTSIDE_BAND),
    ],
)
def test_rejects(engine: me.MatchingEngine, symbol: str, quantity: int, price: int, reason: str) -> None:
    events = engine.submit("a", symbol, me.BUY, quantity, price)
    assert kinds(events) == [me.REJECTED]
    assert events[0].reason == reason  # type: ignore[union-attr]
    assert engine.live == {}


def test_band_edges_and_lot_multiples_are_accepted(engine: me.MatchingEngine) -> None:
    assert kinds(engine.submit("a", "INFY", me.BUY, 10, px("1200.00"))) == [me.ACCEPTED]
    assert kinds(engine.submit("a", "INFY", me.SELL, 10, px("1800.00"))) == [me.ACCEPTED]
    assert kinds(engine.submit("a", "LOTS", me.BUY, 15, 2000)) == [me.ACCEPTED]


def test_tick_size_is_enforced_when_a_price_enters() -> None:
    assert INFY.to_ticks(Decimal("1530.05")) == 30601
    assert INFY.to_ticks(Decimal("1530.03")) is None
    assert INFY.to_ticks(Decimal("-5")) is None
    assert INFY.to_ticks(Decimal(0)) is None
    assert INFY.to_price(30601) == Decimal("1530.05")


def test_halts_reject_new_orders_keep_resting_ones_and_allow_cancels(engine: me.MatchingEngine) -> None:
    resting = order_id(engine.submit("a", "INFY", me.SELL, 10, px("1500.00")))
    engine.halt(None, "circuit breaker")
    assert engine.submit("b", "INFY", me.BUY, 10, px("1500.00"))[0].reason == me.Reason.HALTED  # type: ignore[union-attr]
    assert isinstance(engine.replace(resting, 5, px("1500.00"))[0], me.CancelRejected)
    engine.resume(None)
    engine.halt("INFY", "news pending")
    assert engine.submit("b", "INFY", me.BUY, 10, px("1500.00"))[0].reason == me.Reason.HALTED  # type: ignore[union-attr]
    assert kinds(engine.submit("b", "LOTS", me.BUY, 5, 2000)) == [me.ACCEPTED]
    engine.resume("INFY")
    assert len(trades(engine.submit("b", "INFY", me.BUY, 10, px("1500.00")))) == 2
    other = order_id(engine.submit("a", "INFY", me.SELL, 10, px("1500.00")))
    engine.halt(None, "halt")
    assert kinds(engine.cancel(other)) == [me.CANCELLED]


def test_closed_market_rejects_and_the_close_expires_every_working_order(engine: me.MatchingEngine) -> None:
    a = order_id(engine.submit("a", "INFY", me.SELL, 10, px("1500.00")))
    engine.submit("b", "INFY", me.BUY, 4, px("1500.00"))
    engine.session_open = False
    assert engine.submit("b", "INFY", me.BUY, 1, px("1500.00"))[0].reason == me.Reason.MARKET_CLOSED  # type: ignore[union-attr]
    expired = engine.expire_day_orders()
    assert [(e.order.order_id, e.kind, e.cum) for e in expired] == [(a, me.EXPIRED, 4)]  # type: ignore[union-attr]
    assert engine.live == {} and engine.depth("INFY", 5) == ([], [])


def test_stop_orders_trigger_on_a_trade_through_the_stop_price(engine: me.MatchingEngine) -> None:
    engine.submit("mm", "INFY", me.SELL, 100, px("1501.00"))
    engine.submit("mm", "INFY", me.BUY, 100, px("1499.00"))
    stop = engine.submit("a", "INFY", me.BUY, 10, None, order_type=me.STOP, stop_price=px("1501.00"))
    stop_id = order_id(stop)
    assert stop[0].status == me.PENDING_TRIGGER  # type: ignore[union-attr]
    assert engine.depth("INFY", 1) == (
        [(px("1499.00"), 100, 1)],
        [(px("1501.00"), 100, 1)],
    )  # not in the book
    sell_stop = order_id(
        engine.submit(
            "b", "INFY", me.SELL, 10, px("1498.00"), order_type=me.STOP_LIMIT, stop_price=px("1499.00")
        )
    )
    # A trade at 1501.00 fires the buy stop, which then buys at market.
    events = engine.submit("c", "INFY", me.BUY, 5, px("1501.00"))
    fired = [e for e in events if isinstance(e, me.Execution) and e.order.order_id == stop_id]
    assert [e.kind for e in fired] == [me.TRIGGERED, me.TRADE]
    assert fired[-1].status == me.FILLED
    assert sell_stop in engine.live and engine.live[sell_stop].status == me.PENDING_TRIGGER
    # A trade at 1499.00 fires the sell stop-limit, which sells into the bid at its limit or better.
    events = engine.submit("d", "INFY", me.SELL, 5, px("1499.00"))
    fired = [e for e in events if isinstance(e, me.Execution) and e.order.order_id == sell_stop]
    assert [(e.kind, e.last_price) for e in fired] == [(me.TRIGGERED, 0), (me.TRADE, px("1499.00"))]
    assert isinstance(engine.cancel(sell_stop)[0], me.CancelRejected)  # done: nothing to cancel


def test_a_cancelled_stop_never_fires(engine: me.MatchingEngine) -> None:
    engine.submit("mm", "INFY", me.SELL, 100, px("1501.00"))
    stop = order_id(
        engine.submit("a", "INFY", me.BUY, 10, None, order_type=me.STOP, stop_price=px("1501.00"))
    )
    engine.cancel(stop)
    events = engine.submit("c", "INFY", me.BUY, 5, px("1501.00"))
    assert stop not in {e.order.order_id for e in events if isinstance(e, me.Execution)}


def test_book_statistics_follow_trades(engine: me.MatchingEngine) -> None:
    engine.submit("a", "INFY", me.SELL, 10, px("1500.00"))
    engine.submit("a", "INFY", me.SELL, 10, px("1502.00"))
    engine.submit("b", "INFY", me.BUY, 15, px("1502.00"))
    engine.submit("a", "INFY", me.BUY, 10, px("1499.00"))
    engine.submit("b", "INFY", me.SELL, 2, px("1499.00"))
    book = engine.books["INFY"]
    assert (book.open, book.high, book.low, book.last, book.last_qty) == (
        px("1500.00"),
        px("1502.00"),
        px("1499.00"),
        px("1499.00"),
        2,
    )
    assert (book.volume, book.trades) == (17, 3)
    assert book.turnover == 10 * px("1500.00") + 5 * px("1502.00") + 2 * px("1499.00")
    assert engine.drain_changed() == {"INFY"} and engine.drain_changed() == set()


def test_random_flow_conserves_shares_and_never_crosses(engine: me.MatchingEngine) -> None:
    """Invariants under a random mix of adds, cancels, replaces and aggressive orders: every
    trade moves the same shares on both sides, filled + leaves = quantity for every order,
    the book is never crossed, and level totals equal their live orders."""
    rng = random.Random(7)
    all_orders: dict[int, me.Order] = {}
    bought = sold = 0
    for _ in range(5000):
        action = rng.random()
        if action < 0.5 or not engine.live:
            side = rng.choice((me.BUY, me.SELL))
            price = px("1500.00") + rng.randint(-20, 20)
            kind = rng.choice((me.LIMIT, me.LIMIT, me.LIMIT, me.MARKET))
            tif = rng.choice((me.DAY, me.DAY, me.IOC, me.FOK))
            events = engine.submit(
                rng.choice("abcd"),
                "INFY",
                side,
                rng.randint(1, 50),
                None if kind == me.MARKET else price,
                order_type=kind,
                tif=tif,
            )
        elif action < 0.8:
            events = engine.cancel(rng.choice(list(engine.live)))
        else:
            target = engine.live[rng.choice(list(engine.live))]
            events = engine.replace(
                target.order_id, target.cum + rng.randint(1, 50), target.price + rng.randint(-3, 3)
            )  # type: ignore[operator]
        for event in events:
            if isinstance(event, me.Execution):
                all_orders[event.order.order_id] = event.order
                if event.kind == me.TRADE:
                    if event.order.side == me.BUY:
                        bought += event.last_qty
                    else:
                        sold += event.last_qty
        bids, asks = engine.depth("INFY", 1)
        assert not (bids and asks and bids[0][0] >= asks[0][0]), "crossed book"
    assert bought == sold
    for order in all_orders.values():
        if order.status != me.REJECTED:
            assert order.cum + order.leaves == order.quantity or order.status in (me.CANCELLED, me.EXPIRED)
            assert order.cum <= order.quantity
    book = engine.books["INFY"]
    for side in (book.bids, book.asks):
        for level in side.levels.values():
            live = level.orders()
            assert level.quantity == sum(o.leaves for o in live)
            assert level.count == len(live)
    assert bought == book.volume


def test_instrument_master_rows() -> None:
    rows = [
        {
            "symbol": "ABC",
            "name": "Abc Ltd",
            "sector": "Test",
            "tick_size": "0.05",
            "lot_size": "1",
            "previous_close": "100.05",
        },
    ]
    instrument = parse_instruments(rows)["ABC"]
    assert (instrument.band_low, instrument.band_high) == (Decimal("80.05"), Decimal("120.05"))
    with pytest.raises(InstrumentError):
        parse_instruments([{**rows[0], "previous_close": "100.03"}])
    with pytest.raises(InstrumentError):
        parse_instruments([rows[0], rows[0]])
    with pytest.raises(InstrumentError):
        parse_instruments([{**rows[0], "lot_size": "1.5"}])


def test_shipped_instrument_master_is_sound() -> None:
    from exchange_sim.adapters.instrument_file import load_instruments

    instruments = load_instruments()
    assert len(instruments) >= 200
    assert {"INFY", "TCS", "RELIANCE", "HDFCBANK"} <= set(instruments)
    assert all(
        i.tick_size == Decimal("0.05") and i.lot_size >= 1 and i.name and i.sector
        for i in instruments.values()
    )
    assert sum(1 for i in instruments.values() if i.index_weight > 0) >= 30


def test_orders_leaving_the_book_leave_no_cyclic_garbage() -> None:
    """The exchange turns automatic GC off (exchange_sim.app.gc_policy) because filled,
    cancelled and replaced orders are freed by reference counting alone: nothing of the
    engine may be left for the cycle collector."""
    engine = me.MatchingEngine([INFY], self_trade=me.CANCEL_OLDEST)
    rng = random.Random(11)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3000):
            action = rng.random()
            if action < 0.55 or not engine.live:
                engine.submit(
                    rng.choice("ab"),
                    "INFY",
                    rng.choice((me.BUY, me.SELL)),
                    rng.randint(1, 30),
                    px("1500.00") + rng.randint(-5, 5),
                )
            elif action < 0.8:
                engine.cancel(rng.choice(list(engine.live)))
            else:
                order = engine.live[rng.choice(list(engine.live))]
                if order.price is not None:
                    engine.replace(
                        order.order_id, order.cum + rng.randint(1, 30), order.price + rng.randint(-2, 2)
                    )
        engine.expire_day_orders()
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, me.Order | me.Level | me.Execution)]
        assert not leaked, leaked[:5]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
