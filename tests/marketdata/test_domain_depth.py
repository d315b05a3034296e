"""L2 depth by position: snapshots restate, NEW inserts, CHANGE replaces, DELETE removes."""

from __future__ import annotations

from decimal import Decimal

from svc_marketdata.domain.depth import DepthBook
from svc_marketdata.domain.quotes import BID, CHANGE, DELETE, NEW, OFFER, TRADE, MarketDataEntry, SymbolUpdate


def level(kind: str, action: str, position: int, price: str, size: int) -> MarketDataEntry:
    return MarketDataEntry(kind, action, Decimal(price), size, position)


def test_snapshot_then_increments_by_position() -> None:
    book = DepthBook(levels=5)
    bids = [level(BID, NEW, p, f"{100 - p}.00", 10 * p) for p in range(1, 7)]  # six: one too deep
    asks = [level(OFFER, NEW, 1, "101.00", 5)]
    assert book.apply(SymbolUpdate("INFY", (*bids, *asks), 1, snapshot=True))
    depth = book.get("INFY")
    assert [p for p, _ in depth.bids] == [Decimal(f"{100 - p}.00") for p in range(1, 6)]
    assert depth.asks == [(Decimal("101.00"), 5)]
    assert depth.sequence == 1

    changes = (
        level(BID, CHANGE, 1, "99.50", 3),
        level(OFFER, NEW, 2, "101.50", 8),
        MarketDataEntry(BID, DELETE, Decimal("95.00"), 0, 5),
    )
    assert book.apply(SymbolUpdate("INFY", changes, 2))
    depth = book.get("INFY")
    assert depth.bids[0] == (Decimal("99.50"), 3)
    assert len(depth.bids) == 4
    assert depth.asks == [(Decimal("101.00"), 5), (Decimal("101.50"), 8)]
    assert (depth.sequence, depth.exchange_time_ns) == (2, 2)


def test_updates_that_touch_no_level_change_nothing() -> None:
    book = DepthBook()
    book.apply(SymbolUpdate("INFY", (level(BID, NEW, 1, "99.00", 1),), 1, snapshot=True))
    assert not book.apply(SymbolUpdate("INFY", (MarketDataEntry(TRADE, NEW, Decimal("99"), 1),), 2))
    assert not book.apply(SymbolUpdate("INFY", (level(BID, CHANGE, 1, "99.00", 1),), 3))
    assert book.get("INFY").sequence == 1
    assert book.get("TCS").bids == []
