"""A quote-stream client that stops reading is dropped with a clear status, and nobody else
is held up meanwhile (its own process and exchange: it floods the transport on purpose)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from svc_runtime.errors import details_of
from tests.marketdata.conftest import ExchangeFactory, close, start_market_data
from tests.marketdata.fix_exchange import DEFAULT_LISTING, Entry, synthetic_listing
from tests.marketdata.test_streams import Reader
from tests.support.infra import SharedInfra

pytestmark = pytest.mark.e2e


async def test_a_client_that_stops_reading_is_dropped_without_holding_up_others(
    infra: SharedInfra, tmp_path: Path, exchanges: ExchangeFactory
) -> None:
    listing = [*DEFAULT_LISTING, *synthetic_listing(1500)]
    exchange = exchanges(tmp_path / "exchange", listing)
    process = await start_market_data(
        infra, tmp_path / "md", exchange, BROKERMESH_MARKETDATA_STREAM_STALL_SECONDS="1"
    )
    try:
        await exchange.wait_subscribed()
        symbols = [item.symbol for item in listing if item.symbol.startswith("SYN")]
        # Never read: the server's writes back up once the transport's windows are full.
        stalled = process.quotes.StreamQuotes(
            pb.StreamQuotesRequest(symbols=symbols, max_updates_per_second=50)
        )
        healthy = Reader(
            process.quotes.StreamQuotes(pb.StreamQuotesRequest(symbols=["INFY"], max_updates_per_second=10))
        )
        last_infy = ""
        deadline = time.monotonic() + 60
        dropped = False
        round_ = 0
        while not dropped and time.monotonic() < deadline:
            round_ += 1
            exchange.send_updates([Entry(s, "2", f"{100 + round_ % 50}.05", 1) for s in symbols])
            last_infy = f"{1400 + round_}.00"
            exchange.trade("INFY", last_infy, 1)
            await asyncio.sleep(0.05)
            if round_ % 20 == 0:
                dropped = (
                    'marketdata_streams_dropped_total{reason="slow_consumer"} 1.0' in await process.metrics()
                )
        assert dropped, "the stalled stream was never dropped"
        # The healthy stream kept up throughout and has the latest price.
        await healthy.wait_for_price("INFY", last_infy)
        assert healthy.error is None
        # The stalled client, reading at last, finds what was in flight, then a clear status.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stalled:
                pass
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details_of(caught.value).reason == "SLOW_CONSUMER"
        await healthy.stop()
    finally:
        await close(process)
