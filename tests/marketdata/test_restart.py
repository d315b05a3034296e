"""kill -9 and restart of svc_marketdata (real processes, real PostgreSQL, NATS and FIX):
what it knew is served before the exchange answers, the FIX session resumes with its
sequence numbers, history resent by the exchange never moves a quote backwards, and quote
sequences keep increasing for consumers that saw the ticks before the crash."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest
from nats.js.errors import KeyNotFoundError

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from brokermesh.marketdata.v1 import tick_pb2
from svc_runtime.messaging import Topology
from tests.marketdata.conftest import ExchangeFactory, MarketDataProcess, close, start_market_data
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICE = "svc_marketdata"


async def quote_of(md: MarketDataProcess, symbol: str) -> pb.Quote:
    reply = await md.quotes.BatchGetQuotes(pb.BatchGetQuotesRequest(symbols=[symbol]), timeout=10)
    return reply.quotes[0]


async def wait_for_price(md: MarketDataProcess, symbol: str, price: str) -> pb.Quote:
    async def probe() -> pb.Quote | None:
        quote = await quote_of(md, symbol)
        return quote if quote.last_price.value == price else None

    return await eventually(probe)


async def test_after_kill_9_instruments_and_quotes_are_served_before_the_exchange_answers(
    infra: SharedInfra, tmp_path: Path, exchanges: ExchangeFactory
) -> None:
    exchange = exchanges(tmp_path / "exchange")
    md = await start_market_data(infra, tmp_path / "md", exchange)
    try:
        await exchange.wait_subscribed()
        exchange.trade("INFY", "1520.00", 4)
        before = await wait_for_price(md, "INFY", "1520.00")
        await _wait_saved(md, "INFY", before.sequence)

        await md.stack.kill(SERVICE)
        exchange.stop()  # and the exchange is unreachable while the service comes back
        await md.restart_after_kill()

        instrument = await md.quotes.GetInstrument(
            pb.GetInstrumentRequest(name="instruments/INFY"), timeout=10
        )
        assert (instrument.company_name, instrument.isin) == ("Infosys Limited", "INE009A01021")
        found = await md.quotes.SearchInstruments(pb.SearchInstrumentsRequest(query="tata"), timeout=10)
        assert [i.symbol for i in found.instruments] == ["TATAMOTORS", "TATASTEEL", "TCS"]
        restored = await quote_of(md, "INFY")
        assert restored.last_price.value == "1520.00", (restored, before)
        assert restored.sequence == before.sequence

        # The exchange returns (same session store): the session resumes without a reset —
        # with lost sequence numbers the exchange would refuse the logon — and prices flow.
        # It does not answer for the instrument master this time: the service subscribes to
        # the stored one after a short wait.
        exchange = exchanges(tmp_path / "exchange", port=exchange.port, answer_security_list=False)
        subscribed = await exchange.wait_subscribed()
        assert sorted(subscribed) == sorted(item.symbol for item in exchange.listing)
        assert exchange.security_list_requests == 1
        exchange.trade("INFY", "1525.00", 1)
        after = await wait_for_price(md, "INFY", "1525.00")
        assert after.sequence > before.sequence
    finally:
        await close(md)


async def _wait_saved(md: MarketDataProcess, symbol: str, sequence: int) -> None:
    nc = await nats.connect(md.stack.plan.nats_url)
    try:
        kv = await nc.jetstream().key_value(Topology(md.stack.plan.namespace).quotes_bucket)

        async def saved() -> bool:
            try:
                entry = await kv.get(Topology.quote_key(symbol))
            except KeyNotFoundError:
                return False
            return pb.Quote.FromString(entry.value).sequence >= sequence

        await eventually(saved)
    finally:
        await nc.close()


async def test_resent_history_is_not_replayed_and_sequences_keep_increasing(
    infra: SharedInfra, tmp_path: Path, exchanges: ExchangeFactory
) -> None:
    # Snapshots come a while after the subscription, so anything applied from the resend
    # would be published on its own before the snapshot could overwrite it.
    exchange = exchanges(tmp_path / "exchange", snapshot_delay=1.0)
    # Nothing saved to KV during the test: sequences must survive the crash on their own.
    md = await start_market_data(
        infra, tmp_path / "md", exchange, BROKERMESH_MARKETDATA_SNAPSHOT_SECONDS="3600"
    )
    topology = Topology(md.stack.plan.namespace)
    nc = await nats.connect(md.stack.plan.nats_url)
    ticks: list[pb.Quote] = []

    async def on_batch(msg: nats.aio.msg.Msg) -> None:
        ticks.extend(q for q in tick_pb2.TickBatch.FromString(msg.data).quotes if q.symbol == "TCS")

    try:
        await nc.subscribe(topology.tick_subject_for("TCS"), cb=on_batch)
        await nc.flush()
        await exchange.wait_subscribed()
        exchange.trade("TCS", "3505.00", 1)
        await eventually(lambda: _has_tick(ticks, "3505.00"))
        seen_before = max(t.sequence for t in ticks)

        await md.stack.kill(SERVICE)
        # While the broker is away the exchange sends a trade, stored and resent (PossDup)
        # when the session resumes; by then the market has moved, as the snapshot says.
        exchange.trade("TCS", "3490.00", 1)
        exchange.set_last("TCS", "3499.95")  # where the market is when the snapshot is taken
        await md.restart_after_kill()
        await exchange.wait_subscribed(count=2)
        current = await wait_for_price(md, "TCS", "3499.95")  # from the snapshot
        exchange.trade("TCS", "3501.00", 1)
        await eventually(lambda: _has_tick(ticks, "3501.00"))

        assert not any(t.last_price.value == "3490.00" for t in ticks), "resent history was replayed"
        after = [t for t in ticks if t.sequence > seen_before]
        assert [t.last_price.value for t in after][-1] == "3501.00"
        assert all(t.sequence > seen_before for t in ticks if t.last_price.value in ("3499.95", "3501.00"))
        assert current.sequence > seen_before
        assert 'marketdata_fix_skipped_total{reason="possdup"}' in await md.metrics()
    finally:
        await nc.close()
        await close(md)


async def _has_tick(ticks: list[pb.Quote], price: str) -> bool:
    return any(t.last_price.value == price for t in ticks)
