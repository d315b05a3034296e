"""Candles from trade prints: buckets on the exchange's clock, OHLC, volume from the
cumulative count, snapshots not counted, restart continuity."""

from __future__ import annotations

import datetime
from decimal import Decimal

from svc_marketdata.domain.candles import Candle, CandleBook, bucket_start
from svc_marketdata.domain.quotes import TRADE, TRADE_VOLUME, MarketDataEntry, SymbolUpdate

IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


def at(hour: int, minute: int, second: int = 0) -> int:
    return int(datetime.datetime(2026, 12, 7, hour, minute, second, tzinfo=IST).timestamp()) * 1_000_000_000


def trade(time_ns: int, price: str, size: int, cumulative: int | None, symbol: str = "INFY") -> SymbolUpdate:
    entries = [MarketDataEntry(TRADE, "0", Decimal(price), size)]
    if cumulative is not None:
        entries.append(MarketDataEntry(TRADE_VOLUME, "1", None, cumulative))
    return SymbolUpdate(symbol, tuple(entries), time_ns)


def snapshot(time_ns: int, price: str, cumulative: int) -> SymbolUpdate:
    entries = (
        MarketDataEntry(TRADE, "0", Decimal(price), 5),
        MarketDataEntry(TRADE_VOLUME, "0", None, cumulative),
    )
    return SymbolUpdate("INFY", entries, time_ns, snapshot=True)


def test_buckets_start_on_the_exchanges_clock() -> None:
    stamp = at(10, 47, 31)
    assert bucket_start(stamp, "1m") * 1_000_000_000 == at(10, 47)
    assert bucket_start(stamp, "5m") * 1_000_000_000 == at(10, 45)
    assert bucket_start(stamp, "15m") * 1_000_000_000 == at(10, 45)
    assert bucket_start(stamp, "1h") * 1_000_000_000 == at(10, 0)
    assert bucket_start(stamp, "1d") * 1_000_000_000 == at(0, 0)


def test_trades_make_open_high_low_close_and_volume_from_the_cumulative_count() -> None:
    book = CandleBook()
    book.apply(snapshot(at(10, 0, 1), "1500.00", 1000))  # restates; counts from 1000
    book.apply(trade(at(10, 0, 5), "1501.50", 10, 1010))
    book.apply(trade(at(10, 0, 20), "1499.05", 7, 1030))  # 20 traded in the round, last 7
    book.apply(trade(at(10, 0, 59), "1500.10", 1, 1031))
    (minute, previous) = book.recent("INFY", "1m")[0], book.recent("INFY", "1m")[1:]
    assert previous == []
    assert minute == Candle(
        "INFY",
        "1m",
        at(10, 0) // 10**9,
        Decimal("1501.50"),
        Decimal("1501.50"),
        Decimal("1499.05"),
        Decimal("1500.10"),
        31,
    )
    assert book.recent("INFY", "1d")[0].volume == 31


def test_a_new_bucket_opens_a_candle_and_keeps_the_previous() -> None:
    book = CandleBook()
    book.apply(trade(at(10, 0, 5), "100.00", 5, None))
    book.apply(trade(at(10, 1, 5), "101.00", 3, None))
    current, previous = book.recent("INFY", "1m")
    assert (current.start, current.open, current.volume) == (at(10, 1) // 10**9, Decimal("101.00"), 3)
    assert (previous.start, previous.close, previous.volume) == (at(10, 0) // 10**9, Decimal("100.00"), 5)
    assert len(book.recent("INFY", "5m")) == 1


def test_snapshots_and_updates_without_trades_change_no_candle() -> None:
    book = CandleBook()
    assert book.apply(snapshot(at(10, 0), "100.00", 50)) == []
    assert (
        book.apply(SymbolUpdate("INFY", (MarketDataEntry(TRADE_VOLUME, "1", None, 60),), at(10, 0, 1))) == []
    )
    assert book.recent("INFY", "1m") == []


def test_a_smaller_cumulative_count_is_a_new_day() -> None:
    book = CandleBook()
    book.apply(trade(at(15, 29), "100.00", 5, 5000))
    book.apply(trade(at(15, 29, 30), "100.00", 5, 40))
    assert book.recent("INFY", "1m")[0].volume == 40


def test_unsaved_candles_are_taken_once_and_kept_when_storing_fails() -> None:
    book = CandleBook()
    book.apply(trade(at(10, 0, 5), "100.00", 5, None))
    taken = book.take_unsaved()
    assert {(c.interval, c.volume) for c in taken} == {(i, 5) for i in ("1m", "5m", "15m", "1h", "1d")}
    assert book.take_unsaved() == []
    book.return_unsaved(taken)
    book.apply(trade(at(10, 0, 6), "100.50", 2, None))
    again = {c.interval: c for c in book.take_unsaved()}
    assert again["1m"].volume == 7  # the newer state, not the one that failed


def test_a_restored_candle_continues() -> None:
    book = CandleBook()
    start = at(10, 0) // 10**9
    book.restore(
        [Candle("INFY", "1m", start, Decimal("99"), Decimal("102"), Decimal("98"), Decimal("100"), 40)]
    )
    book.apply(trade(at(10, 0, 30), "103.00", 2, None))
    candle = book.recent("INFY", "1m")[0]
    assert (candle.open, candle.high, candle.low, candle.close, candle.volume) == (
        Decimal("99"),
        Decimal("103.00"),
        Decimal("98"),
        Decimal("103.00"),
        42,
    )
    # A trade from before the forming candle does not rewrite it.
    book.apply(trade(at(9, 59, 59), "50.00", 1, None))
    assert book.recent("INFY", "1m")[0].low == Decimal("98")


def test_trades_within_a_minute_move_every_interval_saved_or_restored() -> None:
    book = CandleBook()
    book.apply(trade(at(10, 0, 5), "100.00", 5, None))
    book.apply(trade(at(10, 0, 6), "101.00", 1, None))
    intervals = ("1m", "5m", "15m", "1h", "1d")
    assert {(c.interval, c.high, c.volume) for c in book.take_unsaved()} == {
        (i, Decimal("101.00"), 6) for i in intervals
    }
    # After a save, the next trade of the same minute is unsaved again, on every interval.
    book.apply(trade(at(10, 0, 7), "99.00", 1, None))
    assert {(c.interval, c.low) for c in book.take_unsaved()} == {(i, Decimal("99.00")) for i in intervals}
    # A restored candle of the same minute is the one the next trade moves.
    start = at(10, 0) // 10**9
    book.restore(
        [Candle("INFY", "1m", start, Decimal("99"), Decimal("110"), Decimal("90"), Decimal("105"), 100)]
    )
    book.apply(trade(at(10, 0, 8), "104.00", 1, None))
    candle = book.recent("INFY", "1m")[0]
    assert (candle.high, candle.close, candle.volume) == (Decimal("110"), Decimal("104.00"), 101)
    # The next minute opens a 1m candle and keeps moving the longer ones.
    book.apply(trade(at(10, 1, 0), "102.00", 1, None))
    assert [c.open for c in book.recent("INFY", "1m")] == [Decimal("102.00"), Decimal("99")]
    assert book.recent("INFY", "5m")[0].volume == 9
    assert book.recent("INFY", "5m")[0].close == Decimal("102.00")
