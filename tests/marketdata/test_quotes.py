"""Quotes, instruments and search through the public gRPC surface of a real svc_marketdata
process, fed over FIX by an exchange double; ticks observed on real NATS."""

from __future__ import annotations

import grpc
import nats
import pytest
from nats.js.errors import KeyNotFoundError

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from brokermesh.marketdata.v1 import tick_pb2
from svc_runtime.errors import details_of
from svc_runtime.messaging import Topology
from tests.marketdata.conftest import MarketDataProcess
from tests.marketdata.fix_exchange import Entry
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


async def quote_of(md: MarketDataProcess, symbol: str) -> pb.Quote:
    reply = await md.quotes.BatchGetQuotes(pb.BatchGetQuotesRequest(symbols=[symbol]), timeout=10)
    return reply.quotes[0]


async def test_quotes_follow_the_exchange_exactly(md: MarketDataProcess) -> None:
    before = await quote_of(md, "INFY")
    md.exchange.quote("INFY", ("1509.95", 120), ("1510.10", 80))
    md.exchange.trade("INFY", "1510.05", 7)

    async def traded() -> pb.Quote | None:
        quote = await quote_of(md, "INFY")
        return quote if quote.last_price.value == "1510.05" and quote.bid_price.value else None

    quote = await eventually(traded)
    assert quote.previous_close.value == "1500.00"
    assert (quote.change.value, quote.change_percent.value) == ("10.05", "0.67")
    assert (quote.bid_price.value, quote.bid_quantity) == ("1509.95", 120)
    assert (quote.ask_price.value, quote.ask_quantity) == ("1510.10", 80)
    assert quote.volume == md.exchange.books["INFY"].volume
    assert quote.exchange_time.seconds > 0
    assert quote.sequence > before.sequence


async def test_batch_get_keeps_request_order_and_reports_unknown_symbols(md: MarketDataProcess) -> None:
    reply = await md.quotes.BatchGetQuotes(
        pb.BatchGetQuotesRequest(symbols=["tcs", "NOPE", "INFY", "TCS", "ALSO-NOPE"]), timeout=10
    )
    assert [q.symbol for q in reply.quotes] == ["TCS", "INFY"]
    assert list(reply.unknown_symbols) == ["NOPE", "ALSO-NOPE"]
    # A listed symbol without trades yet still has its reference price.
    assert reply.quotes[0].previous_close.value == "3500.00"


@pytest.mark.parametrize("count", [0, 501])
async def test_batch_get_bounds(md: MarketDataProcess, count: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await md.quotes.BatchGetQuotes(pb.BatchGetQuotesRequest(symbols=["INFY"] * count), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(caught.value).violations[0].field == "symbols"


async def test_get_instrument(md: MarketDataProcess) -> None:
    instrument = await md.quotes.GetInstrument(pb.GetInstrumentRequest(name="instruments/INFY"), timeout=10)
    assert (instrument.name, instrument.symbol, instrument.company_name, instrument.sector) == (
        "instruments/INFY",
        "INFY",
        "Infosys Limited",
        "IT",
    )
    assert (instrument.tick_size.value, instrument.lot_size, instrument.isin) == ("0.05", 1, "INE009A01021")
    assert instrument.previous_close.value == "1500.00"
    tcs = await md.quotes.GetInstrument(pb.GetInstrumentRequest(name="instruments/tcs"), timeout=10)
    assert (tcs.symbol, tcs.tick_size.value, tcs.lot_size, tcs.sector) == ("TCS", "0.10", 5, "IT")
    for name, code in [
        ("instruments/NOPE", grpc.StatusCode.NOT_FOUND),
        ("INFY", grpc.StatusCode.INVALID_ARGUMENT),
        ("instruments/", grpc.StatusCode.INVALID_ARGUMENT),
        ("users/INFY", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await md.quotes.GetInstrument(pb.GetInstrumentRequest(name=name), timeout=10)
        assert caught.value.code() == code, name


async def test_search_ranks_and_pages(md: MarketDataProcess) -> None:
    async def search(query: str, page_size: int = 0, token: str = "") -> pb.SearchInstrumentsResponse:
        return await md.quotes.SearchInstruments(
            pb.SearchInstrumentsRequest(query=query, page_size=page_size, page_token=token), timeout=10
        )

    first = await search("tata")
    assert [i.symbol for i in first.instruments] == ["TATAMOTORS", "TATASTEEL", "TCS"]
    assert first.next_page_token == ""
    assert [i.symbol for i in (await search("mahindra")).instruments] == ["M&M"]

    seen: list[str] = []
    page = await search("synthetic", page_size=25)
    while True:
        seen += [i.symbol for i in page.instruments]
        if not page.next_page_token:
            break
        page = await search("synthetic", page_size=25, token=page.next_page_token)
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 120

    for query, token in [
        ("", ""),
        ("tata", "garbage"),
        ("infy", (await search("synthetic", 7)).next_page_token),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await search(query, token=token)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_ticks_are_published_in_batches_on_the_symbol_shard(md: MarketDataProcess) -> None:
    topology = Topology(md.stack.plan.namespace)
    nc = await nats.connect(md.stack.plan.nats_url)
    received: list[pb.Quote] = []
    messages: list[int] = []

    async def on_batch(msg: nats.aio.msg.Msg) -> None:
        batch = tick_pb2.TickBatch.FromString(msg.data)
        messages.append(len(batch.quotes))
        received.extend(q for q in batch.quotes if q.symbol.startswith("SYN"))

    try:
        symbols = [f"SYN{n:04d}" for n in range(1, 41)]
        for subject in topology.tick_subjects_for(symbols):
            await nc.subscribe(subject, cb=on_batch)
        await nc.flush()
        md.exchange.send_updates([Entry(s, "2", "111.05", 1) for s in symbols])

        async def all_arrived() -> bool:
            return {q.symbol for q in received if q.last_price.value == "111.05"} == set(symbols)

        await eventually(all_arrived)
        # Coalesced: far fewer messages than quotes (one per shard touched by the flush).
        assert len(messages) < len(symbols)
        # Each quote travels on its symbol's shard subject only (no duplicates).
        assert len([q for q in received if q.last_price.value == "111.05"]) == len(symbols)
    finally:
        await nc.close()


async def test_latest_quotes_are_kept_in_the_kv_bucket(md: MarketDataProcess) -> None:
    md.exchange.trade("RELIANCE", "2410.50", 3)
    live = await eventually(
        lambda: _quote_if(md, "RELIANCE", lambda q: q.last_price.value == "2410.50"),
    )
    nc = await nats.connect(md.stack.plan.nats_url)
    try:
        topology = Topology(md.stack.plan.namespace)
        kv = await nc.jetstream().key_value(topology.quotes_bucket)

        async def saved() -> pb.Quote | None:
            try:
                entry = await kv.get(Topology.quote_key("RELIANCE"))
            except KeyNotFoundError:
                return None
            quote = pb.Quote.FromString(entry.value)
            return quote if quote.sequence >= live.sequence else None

        stored = await eventually(saved)
        assert stored.last_price.value == "2410.50" and stored.symbol == "RELIANCE"
    finally:
        await nc.close()


async def _quote_if(md: MarketDataProcess, symbol: str, predicate) -> pb.Quote | None:  # type: ignore[no-untyped-def]
    quote = await quote_of(md, symbol)
    return quote if predicate(quote) else None
