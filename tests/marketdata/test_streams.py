"""StreamQuotes through gRPC against a real process: snapshot first, conflation to the
requested rate, validation."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from svc_runtime.errors import details_of
from tests.marketdata.conftest import MarketDataProcess
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


class Reader:
    """Reads a quote stream in the background, keeping every message and its arrival time."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self.call = call
        self.messages: list[tuple[float, pb.StreamQuotesResponse]] = []
        self.error: grpc.aio.AioRpcError | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for message in self.call:
                self.messages.append((time.monotonic(), message))
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    def quotes(self, symbol: str) -> list[pb.Quote]:
        return [q for _, m in self.messages for q in m.quotes if q.symbol == symbol]

    async def wait_for_price(self, symbol: str, price: str, timeout: float = 30.0) -> None:
        async def seen() -> bool:
            return any(q.last_price.value == price for q in self.quotes(symbol))

        await eventually(seen, timeout=timeout)

    async def stop(self) -> None:
        self.call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_stream_starts_with_the_latest_quote_of_each_symbol(md: MarketDataProcess) -> None:
    md.exchange.trade("TCS", "3510.00", 2)
    await eventually(lambda: _last_price_is(md, "TCS", "3510.00"))
    call = md.quotes.StreamQuotes(pb.StreamQuotesRequest(symbols=["tcs", "TATAMOTORS", "TCS"]))
    first = await asyncio.wait_for(call.read(), 30)
    assert [q.symbol for q in first.quotes] == ["TCS", "TATAMOTORS"]
    assert first.quotes[0].last_price.value == "3510.00"
    assert first.quotes[1].previous_close.value == "650.00"
    reader = Reader(call)
    try:
        md.exchange.trade("TATAMOTORS", "651.25", 5)
        await reader.wait_for_price("TATAMOTORS", "651.25")
        assert all(q.symbol in {"TCS", "TATAMOTORS"} for _, m in reader.messages for q in m.quotes)
    finally:
        await reader.stop()


async def _last_price_is(md: MarketDataProcess, symbol: str, price: str) -> bool:
    reply = await md.quotes.BatchGetQuotes(pb.BatchGetQuotesRequest(symbols=[symbol]), timeout=10)
    return reply.quotes[0].last_price.value == price


async def test_fast_prices_are_conflated_to_the_requested_rate(md: MarketDataProcess) -> None:
    symbol, rate = "SYN0007", 2
    call = md.quotes.StreamQuotes(pb.StreamQuotesRequest(symbols=[symbol], max_updates_per_second=rate))
    await asyncio.wait_for(call.read(), 30)  # the snapshot
    reader = Reader(call)
    started = time.monotonic()
    try:
        prices = [f"{200 + n * 0.05:.2f}" for n in range(60)]
        for price in prices:  # ~40 changes a second, twenty times the rate asked for
            md.exchange.trade(symbol, price, 1)
            await asyncio.sleep(0.025)
        await reader.wait_for_price(symbol, prices[-1])
        elapsed = time.monotonic() - started
        pushes = [m for _, m in reader.messages]
        # At most one push per interval (plus the first, which needs no wait), each carrying
        # the symbol once; the last one is the latest price.
        assert len(pushes) <= rate * elapsed + 2, (len(pushes), elapsed)
        assert all(len(m.quotes) == 1 for m in pushes)
        sequences = [q.sequence for q in reader.quotes(symbol)]
        assert sequences == sorted(set(sequences))
        assert reader.quotes(symbol)[-1].last_price.value == prices[-1]
        assert len(pushes) < len(prices) / 4  # conflated, not queued
    finally:
        await reader.stop()


@pytest.mark.parametrize(
    ("symbols", "rate", "field"),
    [
        (["INFY", "NOPE", "ALSO-NOPE"], 0, "symbols"),
        ([], 0, "symbols"),
        (["INFY"] * 3001, 0, "symbols"),
        (["INFY"], 51, "max_updates_per_second"),
        (["INFY"], -1, "max_updates_per_second"),
    ],
)
async def test_bad_stream_requests_are_refused(
    md: MarketDataProcess, symbols: list[str], rate: int, field: str
) -> None:
    call = md.quotes.StreamQuotes(pb.StreamQuotesRequest(symbols=symbols, max_updates_per_second=rate))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), 30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = details_of(caught.value)
    assert details.violations[0].field == field
    if "NOPE" in symbols:
        assert details.metadata["unknown_symbols"] == "NOPE,ALSO-NOPE"
        assert "NOPE" in details.message


async def test_many_unknown_symbols_are_reported_within_metadata_limits(md: MarketDataProcess) -> None:
    unknown = [f"NOPE{n}" for n in range(2500)]
    call = md.quotes.StreamQuotes(pb.StreamQuotesRequest(symbols=["INFY", *unknown]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), 30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = details_of(caught.value)
    assert details.metadata["unknown_count"] == "2500"
    assert details.metadata["unknown_symbols"].split(",") == unknown[:100]
    assert "and 2400 more" in details.message
