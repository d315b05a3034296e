"""svc_marketdata against the real exchange simulator (both as processes, FIX between them):
the instrument master arrives, quotes move with the simulator's market makers, five levels
of depth a side arrive, and streams deliver fresh ticks."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from brokermesh.marketdata.v1 import marketdata_pb2_grpc
from tests.conftest import StackFactory
from tests.support.grpc import service_channel
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_quotes_and_streams_from_the_exchange_simulator(make_stack: StackFactory) -> None:
    stack = await make_stack(["exchange_sim", "svc_marketdata"])
    async with service_channel(stack.plan, "svc_marketdata") as ch:
        quotes = marketdata_pb2_grpc.MarketDataServiceStub(ch)

        async def listed() -> pb.Instrument | None:
            try:
                return await quotes.GetInstrument(pb.GetInstrumentRequest(name="instruments/INFY"), timeout=5)
            except Exception:
                return None

        infy = await eventually(listed, timeout=60)
        assert infy.company_name and infy.sector and infy.lot_size >= 1
        assert infy.tick_size.value and infy.previous_close.value

        symbols = ["INFY", "TCS", "RELIANCE", "HDFCBANK"]

        async def trading() -> list[pb.Quote] | None:
            reply = await quotes.BatchGetQuotes(pb.BatchGetQuotesRequest(symbols=symbols), timeout=5)
            live = [q for q in reply.quotes if q.bid_price.value and q.ask_price.value]
            return reply.quotes if len(live) == len(symbols) else None

        book = await eventually(trading, timeout=60)
        for quote in book:
            assert quote.previous_close.value
            assert Decimal(quote.bid_price.value) <= Decimal(quote.ask_price.value)

        # The session asks for five levels a side, and the simulator's market makers quote them.
        async def deep() -> pb.MarketDepth | None:
            depth = await quotes.GetMarketDepth(
                pb.GetMarketDepthRequest(name="instruments/INFY/depth"), timeout=5
            )
            return depth if len(depth.bids) == 5 and len(depth.asks) == 5 else None

        depth = await eventually(deep, timeout=60)
        bids = [Decimal(level.price.value) for level in depth.bids]
        asks = [Decimal(level.price.value) for level in depth.asks]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
        assert all(level.quantity > 0 for level in [*depth.bids, *depth.asks])

        call = quotes.StreamQuotes(pb.StreamQuotesRequest(symbols=symbols, max_updates_per_second=10))
        first = await asyncio.wait_for(call.read(), 30)
        assert [q.symbol for q in first.quotes] == symbols
        ages: list[float] = []
        deadline = time.monotonic() + 30
        sequences: dict[str, int] = {q.symbol: q.sequence for q in first.quotes}
        while len(ages) < 20 and time.monotonic() < deadline:
            message = await asyncio.wait_for(call.read(), 30)
            received = datetime.now(UTC).timestamp()
            for quote in message.quotes:
                assert quote.sequence > sequences[quote.symbol]
                sequences[quote.symbol] = quote.sequence
                ages.append(received - quote.exchange_time.ToNanoseconds() / 1e9)
        call.cancel()
        assert len(ages) >= 20, "the simulator's prices did not move"
        # Exchange time is real: ticks are seconds old at most, not minutes (nor from the future).
        assert all(-1.0 < age < 30.0 for age in ages), ages
