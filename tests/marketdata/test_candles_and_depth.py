"""Candles and L2 depth through the public gRPC surface of a real svc_marketdata process,
fed over FIX by an exchange double; candles kept in the real PostgreSQL across kill -9."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from svc_runtime.errors import details_of
from tests.marketdata.conftest import ExchangeFactory, MarketDataProcess, close, start_market_data
from tests.marketdata.fix_exchange import Entry
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

ONE_MINUTE = pb.CANDLE_INTERVAL_ONE_MINUTE


def minute_ago(minutes: int) -> datetime:
    now = datetime.now(UTC)
    return now.replace(second=0, microsecond=0) - timedelta(minutes=minutes)


async def candles(md: MarketDataProcess, symbol: str, **kwargs: object) -> pb.ListCandlesResponse:
    request = pb.ListCandlesRequest(parent=f"instruments/{symbol}", interval=ONE_MINUTE, **kwargs)  # type: ignore[arg-type]
    return await md.quotes.ListCandles(request, timeout=10)


def ohlcv(candle: pb.Candle) -> tuple[str, str, str, str, int]:
    return (candle.open.value, candle.high.value, candle.low.value, candle.close.value, candle.volume)


async def test_trades_make_candles_listed_newest_first_in_pages(md: MarketDataProcess) -> None:
    base = minute_ago(10)
    md.exchange.trade("RELIANCE", "2401.00", 10, at=base + timedelta(seconds=5))
    md.exchange.trade("RELIANCE", "2405.50", 4, at=base + timedelta(seconds=20))
    md.exchange.trade("RELIANCE", "2399.95", 6, at=base + timedelta(seconds=40))
    md.exchange.trade("RELIANCE", "2402.00", 1, at=base + timedelta(seconds=65))
    md.exchange.trade("RELIANCE", "2403.00", 2, at=base + timedelta(seconds=130))

    async def three() -> pb.ListCandlesResponse | None:
        reply = await candles(md, "RELIANCE")
        return reply if len(reply.candles) == 3 and reply.candles[0].volume == 2 else None

    reply = await eventually(three)
    assert [c.start_time.ToDatetime(tzinfo=UTC) for c in reply.candles] == [
        base + timedelta(minutes=2),
        base + timedelta(minutes=1),
        base,
    ]
    assert ohlcv(reply.candles[2]) == ("2401.00", "2405.50", "2399.95", "2399.95", 20)
    assert ohlcv(reply.candles[1]) == ("2402.00", "2402.00", "2402.00", "2402.00", 1)
    assert reply.candles[2].end_time.ToDatetime(tzinfo=UTC) == base + timedelta(minutes=1)
    assert reply.candles[0].symbol == "RELIANCE" and reply.candles[0].interval == ONE_MINUTE
    assert reply.next_page_token == ""

    # Pages of one walk backwards in time and end with an empty token.
    seen, token = [], ""
    while True:
        page = await candles(md, "RELIANCE", page_size=1, page_token=token)
        seen += [c.start_time.seconds for c in page.candles]
        token = page.next_page_token
        if not token:
            break
    assert seen == [c.start_time.seconds for c in reply.candles]

    daily = await md.quotes.ListCandles(
        pb.ListCandlesRequest(parent="instruments/reliance", interval=pb.CANDLE_INTERVAL_ONE_DAY), timeout=10
    )
    assert sum(c.volume for c in daily.candles) == 23


async def test_candle_requests_are_checked(md: MarketDataProcess) -> None:
    cases = [
        (pb.ListCandlesRequest(parent="instruments/INFY"), grpc.StatusCode.INVALID_ARGUMENT, "interval"),
        (
            pb.ListCandlesRequest(parent="INFY", interval=ONE_MINUTE),
            grpc.StatusCode.INVALID_ARGUMENT,
            "parent",
        ),
        (
            pb.ListCandlesRequest(parent="instruments/NOPE", interval=ONE_MINUTE),
            grpc.StatusCode.NOT_FOUND,
            None,
        ),
        (
            pb.ListCandlesRequest(parent="instruments/INFY", interval=ONE_MINUTE, page_token="junk"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
        ),
    ]
    for request, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await md.quotes.ListCandles(request, timeout=10)
        assert caught.value.code() == code, request
        if field:
            assert details_of(caught.value).violations[0].field == field


async def test_depth_has_five_levels_a_side_by_position(md: MarketDataProcess) -> None:
    bids = [Entry("HDFCBANK", "0", f"{1600 - n}.00", 10 * n, "0", n) for n in range(1, 6)]
    asks = [Entry("HDFCBANK", "1", f"{1600 + n}.00", 5 * n, "0", n) for n in range(1, 6)]
    md.exchange.send_updates([*bids, *asks])

    async def full() -> pb.MarketDepth | None:
        depth = await md.quotes.GetMarketDepth(pb.GetMarketDepthRequest(name="instruments/HDFCBANK/depth"))
        return depth if len(depth.bids) == 5 and len(depth.asks) == 5 else None

    depth = await eventually(full)
    assert depth.name == "instruments/HDFCBANK/depth"
    assert [(level.price.value, level.quantity) for level in depth.bids] == [
        (f"{1600 - n}.00", 10 * n) for n in range(1, 6)
    ]
    assert [level.price.value for level in depth.asks] == [f"{1600 + n}.00" for n in range(1, 6)]
    # The quote still shows the best level alone (once its coalesced flush is out).

    async def best_bid() -> bool:
        reply = await md.quotes.BatchGetQuotes(pb.BatchGetQuotesRequest(symbols=["HDFCBANK"]))
        quote = reply.quotes[0]
        return (quote.bid_price.value, quote.bid_quantity, quote.ask_price.value) == (
            "1599.00",
            10,
            "1601.00",
        )

    await eventually(best_bid)

    stream = md.quotes.StreamMarketDepth(pb.StreamMarketDepthRequest(name="instruments/HDFCBANK/depth"))
    try:
        first = await asyncio.wait_for(anext(aiter(stream)), 10)
        assert first.depth.sequence == depth.sequence and first.feed_status.state == pb.FeedStatus.STATE_LIVE
        md.exchange.send_updates(
            [Entry("HDFCBANK", "0", "1597.50", 7, "1", 3), Entry("HDFCBANK", "1", "1605.00", 0, "2", 5)]
        )
        update = await asyncio.wait_for(anext(aiter(stream)), 10)
        assert (update.depth.bids[2].price.value, update.depth.bids[2].quantity) == ("1597.50", 7)
        assert len(update.depth.asks) == 4
        assert update.depth.sequence > depth.sequence
    finally:
        stream.cancel()

    for name in ("instruments/HDFCBANK", "HDFCBANK/depth", "instruments//depth"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await md.quotes.GetMarketDepth(pb.GetMarketDepthRequest(name=name), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name


async def test_candle_stream_sends_the_forming_candle_then_its_changes(md: MarketDataProcess) -> None:
    base = minute_ago(0)
    md.exchange.trade("M&M", "1401.00", 3, at=base + timedelta(seconds=1))
    await eventually(lambda: candles(md, "M&M"))
    stream = md.quotes.StreamCandles(pb.StreamCandlesRequest(parent="instruments/M&M", interval=ONE_MINUTE))
    try:
        first = await asyncio.wait_for(anext(aiter(stream)), 10)
        assert first.HasField("feed_status")
        assert [ohlcv(c) for c in first.candles] == [("1401.00",) * 4 + (3,)]
        md.exchange.trade("M&M", "1399.00", 2, at=base + timedelta(seconds=2))
        update = await asyncio.wait_for(anext(aiter(stream)), 10)
        assert [ohlcv(c) for c in update.candles] == [("1401.00", "1401.00", "1399.00", "1399.00", 5)]
        # The next minute: the closed candle's final state, then the new one.
        md.exchange.trade("M&M", "1398.00", 1, at=base + timedelta(seconds=2))
        md.exchange.trade("M&M", "1410.00", 4, at=base + timedelta(seconds=61))
        while True:
            push = await asyncio.wait_for(anext(aiter(stream)), 10)
            if push.candles and push.candles[-1].start_time.seconds > first.candles[0].start_time.seconds:
                break
        if len(push.candles) == 2:
            assert ohlcv(push.candles[0]) == ("1401.00", "1401.00", "1398.00", "1398.00", 6)
        assert ohlcv(push.candles[-1]) == ("1410.00",) * 4 + (4,)
    finally:
        stream.cancel()


async def test_quote_stream_of_a_watchlist(md: MarketDataProcess) -> None:
    from brokermesh.marketdata.v1 import watchlists_pb2 as wpb

    created = await md.watchlists.CreateWatchlist(
        wpb.CreateWatchlistRequest(
            parent="users/usr_candles",
            watchlist=wpb.Watchlist(display_name="w", symbols=["TATASTEEL", "INFY"]),
        ),
        timeout=10,
    )
    stream = md.quotes.StreamQuotes(pb.StreamQuotesRequest(watchlist=created.name))
    try:
        first = await asyncio.wait_for(anext(aiter(stream)), 10)
        assert sorted(q.symbol for q in first.quotes) == ["INFY", "TATASTEEL"]
    finally:
        stream.cancel()
    for request, code in [
        (pb.StreamQuotesRequest(watchlist=created.name, symbols=["INFY"]), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.StreamQuotesRequest(watchlist="users/usr_candles/watchlists/nope"), grpc.StatusCode.NOT_FOUND),
        (pb.StreamQuotesRequest(watchlist="watchlists/x"), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anext(aiter(md.quotes.StreamQuotes(request, timeout=10)))
        assert caught.value.code() == code, request


async def _candles_saved(md: MarketDataProcess, at_least: int) -> bool:
    found = re.search(r"^marketdata_candles_saved_total (\S+)$", await md.metrics(), re.MULTILINE)
    return bool(found) and float(found.group(1)) >= at_least


async def test_candles_survive_kill_9_and_the_forming_one_continues(
    infra: SharedInfra, tmp_path: Path, exchanges: ExchangeFactory
) -> None:
    exchange = exchanges(tmp_path / "exchange")
    md = await start_market_data(infra, tmp_path / "md", exchange)
    try:
        await exchange.wait_subscribed()
        base = minute_ago(0)
        exchange.trade("BAJAJ-AUTO", "5001.00", 3, at=base + timedelta(seconds=1))
        exchange.trade("BAJAJ-AUTO", "5003.00", 2, at=base + timedelta(seconds=2))
        await eventually(lambda: _candles_saved(md, 5))  # one per interval

        await md.stack.kill("svc_marketdata")
        await md.restart_after_kill()
        reply = await candles(md, "BAJAJ-AUTO")
        assert [ohlcv(c) for c in reply.candles] == [("5001.00", "5003.00", "5001.00", "5003.00", 5)]

        exchange.trade("BAJAJ-AUTO", "4999.00", 1, at=base + timedelta(seconds=3))

        async def continued() -> bool:
            reply = await candles(md, "BAJAJ-AUTO")
            return [ohlcv(c) for c in reply.candles] == [("5001.00", "5003.00", "4999.00", "4999.00", 6)]

        await eventually(continued)
    finally:
        await close(md)
