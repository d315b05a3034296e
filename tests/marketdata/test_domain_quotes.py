"""The quote cache rules: exact decimals, change, sequences, snapshots vs increments."""

from __future__ import annotations

from decimal import Decimal

from svc_marketdata.domain.quotes import (
    BID,
    CLOSING_PRICE,
    DELETE,
    OFFER,
    SESSION_HIGH,
    TRADE,
    TRADE_VOLUME,
    MarketDataEntry,
    QuoteBook,
    SymbolUpdate,
)

D = Decimal
FLOOR = 1_000_000


def update(
    *entries: MarketDataEntry, symbol: str = "INFY", at: int = 1, snapshot: bool = False
) -> SymbolUpdate:
    return SymbolUpdate(symbol, entries, at, snapshot=snapshot)


def trade(price: str, size: int = 10) -> MarketDataEntry:
    return MarketDataEntry(TRADE, price=D(price), size=size)


def test_trade_sets_last_change_and_session_range() -> None:
    book = QuoteBook(FLOOR)
    book.ensure("INFY", D("1500.00"))
    assert book.apply(update(trade("1510.05", 5)))
    assert book.apply(update(trade("1495.50", 3)))
    quote = book.quotes["INFY"]
    assert quote.last_price == D("1495.50")
    assert quote.change == D("-4.50")
    assert quote.change_percent == D("-0.30")
    assert (quote.open_price, quote.high_price, quote.low_price) == (D("1510.05"), D("1510.05"), D("1495.50"))
    assert quote.volume == 8


def test_change_percent_rounds_half_up_to_two_places() -> None:
    book = QuoteBook(FLOOR)
    book.ensure("X", D("3"))
    book.apply(update(trade("3.05"), symbol="X"))  # 1.6666… %
    assert book.quotes["X"].change_percent == D("1.67")


def test_sequence_advances_only_on_change_and_starts_at_the_floor() -> None:
    book = QuoteBook(FLOOR)
    assert book.apply(update(trade("10.00")))
    first = book.quotes["INFY"].sequence
    assert first == FLOOR
    assert not book.apply(update(trade("10.00", 0)))  # same state: no tick
    assert book.quotes["INFY"].sequence == first
    assert book.apply(update(trade("10.05")))
    assert book.quotes["INFY"].sequence == first + 1


def test_restored_quote_keeps_increasing_after_a_restart() -> None:
    before = QuoteBook(FLOOR)
    before.apply(update(trade("10.00")))
    saved = before.quotes["INFY"]
    saved_sequence = saved.sequence
    after = QuoteBook(FLOOR + 10)  # a later process start
    after.restore(saved)
    after.apply(update(trade("10.05")))
    assert after.quotes["INFY"].sequence > saved_sequence
    # A later start whose floor is below the saved sequence still moves forward.
    again = QuoteBook(FLOOR)
    again.restore(after.quotes["INFY"])
    again.apply(update(trade("10.10")))
    assert again.quotes["INFY"].sequence == after.quotes["INFY"].sequence + 1


def test_reported_volume_wins_over_summed_trade_sizes() -> None:
    book = QuoteBook(FLOOR)
    book.apply(update(trade("10.00", 5), MarketDataEntry(TRADE_VOLUME, size=1000)))
    book.apply(update(trade("10.05", 5)))
    assert book.quotes["INFY"].volume == 1000


def test_best_bid_and_ask_with_delete_and_deeper_levels_ignored() -> None:
    book = QuoteBook(FLOOR)
    book.apply(
        update(
            MarketDataEntry(BID, price=D("99.95"), size=100),
            MarketDataEntry(OFFER, price=D("100.05"), size=50),
        )
    )
    book.apply(update(MarketDataEntry(BID, price=D("99.00"), size=1, position=2)))
    quote = book.quotes["INFY"]
    assert (quote.bid_price, quote.bid_quantity, quote.ask_price, quote.ask_quantity) == (
        D("99.95"),
        100,
        D("100.05"),
        50,
    )
    book.apply(update(MarketDataEntry(OFFER, action=DELETE)))
    assert (quote.ask_price, quote.ask_quantity) == (None, 0)


def test_snapshot_replaces_the_session_but_keeps_the_previous_close() -> None:
    book = QuoteBook(FLOOR)
    book.ensure("INFY", D("1500"))
    book.apply(update(trade("1510"), MarketDataEntry(BID, price=D("1509"), size=1)))
    book.apply(
        update(
            MarketDataEntry(TRADE, price=D("1520")),
            MarketDataEntry(SESSION_HIGH, price=D("1525")),
            MarketDataEntry(TRADE_VOLUME, size=42),
            snapshot=True,
        )
    )
    quote = book.quotes["INFY"]
    assert quote.bid_price is None and quote.last_price == D("1520") and quote.high_price == D("1525")
    assert quote.volume == 42 and quote.previous_close == D("1500")


def test_closing_price_moves_the_reference_only_from_a_snapshot_or_previous_day() -> None:
    book = QuoteBook(FLOOR)
    book.apply(update(MarketDataEntry(CLOSING_PRICE, price=D("100")), snapshot=True))
    book.apply(update(MarketDataEntry(CLOSING_PRICE, price=D("105"))))  # today's close, intraday
    assert book.quotes["INFY"].previous_close == D("100")
    book.apply(update(MarketDataEntry(CLOSING_PRICE, price=D("101"), previous_day=True)))
    assert book.quotes["INFY"].previous_close == D("101")


def test_exchange_time_never_goes_backwards() -> None:
    book = QuoteBook(FLOOR)
    book.apply(update(trade("10"), at=200))
    book.apply(update(trade("11"), at=100))
    assert book.quotes["INFY"].exchange_time_ns == 200


def test_one_sequence_orders_changes_across_symbols() -> None:
    book = QuoteBook(FLOOR)
    book.apply(update(trade("10.00"), symbol="A"))
    book.apply(update(trade("20.00"), symbol="B"))
    book.apply(update(trade("10.05"), symbol="A"))
    assert (book.quotes["A"].sequence, book.quotes["B"].sequence) == (FLOOR + 2, FLOOR + 1)
    assert book.last_sequence == FLOOR + 2
    assert not book.apply(update(trade("20.00", 0), symbol="B"))  # no change: nothing issued
    assert book.last_sequence == FLOOR + 2
