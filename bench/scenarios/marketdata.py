"""svc_marketdata under load: tick ingest, StreamQuotes fan-out, symbol search.

The service runs as its own process (real PostgreSQL and NATS); the exchange is the FIX
market-data double of the tests (`tests/marketdata/fix_exchange.py`), in this process, so
the tick load is known exactly rather than whatever the simulator's agents happen to trade.

- `marketdata.tick_ingest`: incremental refreshes (35=X) of 50 symbols × 4 entries (trade,
  volume, bid, ask) each, built up front and sent as fast as the service takes them, over
  500 symbols (see `MarkerWatch` for the flow control). A *tick* is one symbol's update in
  one message. Throughput = ticks per second from the first send until the last one was
  published on NATS. Also: entries per second, quotes published per second and per
  TickBatch message, the service's CPU.
- `marketdata.stream_fanout`: N streams × M symbols, each symbol ticking 5 times a second,
  each stream allowing 10 pushes a second (a stream's symbols change more often than that,
  so up to 100 ms of the age is conflation on purpose, as a desktop sees it). Tick age at
  delivery = client receipt − the quote's exchange time (FIX MDEntryTime, millisecond
  resolution: ages read up to 1 ms high): FIX → parse → cache → flush → pacing → client. Quotes delivered per second, memory
  per stream (service RSS growth ÷ N), time to open (request → snapshot), service CPU.
- `marketdata.search`: `SearchInstruments` type-ahead queries over a 3,000-instrument master:
  one at a time (latency), an open loop at 600/s (the sizing's ~580 searches a second; latency
  from the intended send time) and at saturation (throughput); and the in-process index
  alone over 50,000 instruments (µs per query).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench import load
from bench.api import (
    BASELINE_GRPC_STREAM,
    BASELINE_GRPC_UNARY,
    BASELINE_NATS_SUBSCRIBE,
    BenchContext,
    Figure,
    Scenario,
)
from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from svc_runtime import config
from svc_runtime.grpc_client import channel

if TYPE_CHECKING:
    from svc_runtime.stack import Stack

SERVICE = "svc_marketdata"
# Targets (bench/README.md): 100,000 market-data updates a second in; quotes p99 < 200 ms;
# search < 50 ms.
INGEST_TARGET = ">= 100000 ticks/s"
AGE_TARGETS = {"p99": "< 200 ms", "errors": "<= 0"}
SEARCH_TARGETS = {"p99": "< 50 ms", "errors": "<= 0"}
STREAM_RATE = 10  # pushes per second each stream allows
SEARCH_RATE = 600  # searches per second offered in the open loop
TICKS_PER_SYMBOL = 5  # per second, in the fan-out scenario


def _fix_exchange() -> Any:
    """The FIX exchange double of the market-data tests (`tests` is not an installed
    package, so it is imported from the repository this bench runs in)."""
    root = Path(__file__).resolve().parents[2]
    if str(root) not in sys.path:
        sys.path.append(str(root))
    from tests.marketdata import fix_exchange

    return fix_exchange


@dataclass
class Rig:
    exchange: Any
    stack: Stack
    channel: grpc.aio.Channel
    quotes: marketdata_pb2_grpc.MarketDataServiceStub

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.stack.processes[SERVICE].pid)

    def metrics(self) -> dict[str, float]:
        """The service's counters and gauges, summed over labels."""
        port = self.stack.plan.ports[SERVICE]["metrics"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals

    async def close(self) -> None:
        await self.channel.close()
        with contextlib.suppress(Exception):
            await self.stack.stop()
        self.exchange.stop()


async def _rig(ctx: BenchContext, name: str, listing: list[Any], **env: str) -> Rig:
    fix_exchange = _fix_exchange()
    # No message store on the double: resends are not what is measured, and a store would
    # charge a disk write per message to the load generator.
    exchange = fix_exchange.ExchangeDouble(ctx.workdir / f"{name}-exchange", listing, persist_messages=False)
    exchange.start()  # on this thread: the child is tied to the thread that starts it
    try:
        stack = await ctx.start_stack([SERVICE], extra_env={config.FIX_PORT: str(exchange.port), **env})
        await exchange.wait_subscribed()
    except BaseException:
        exchange.stop()
        raise
    ch = channel(stack.plan.target(SERVICE), signer=stack.plan.service_signer("gateway"))
    return Rig(exchange, stack, ch, marketdata_pb2_grpc.MarketDataServiceStub(ch))


async def _until(probe: Any, *, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(probe):
        if time.monotonic() > deadline:
            raise TimeoutError("the service did not catch up")
        await asyncio.sleep(interval)


# --- tick ingest -------------------------------------------------------------------------


class MarkerWatch:
    """Flow control and the finish line for the ingest scenario. Every so often the sender
    slips in a *marker*: a trade on a symbol outside the load, at a price that numbers it.
    Messages are applied and published in order, so once marker k shows on NATS every
    message sent before it went through the service. The sender keeps at most a few markers
    outstanding: the backlog stays bounded, and what is measured is what the service
    sustains, not how fast a socket buffer fills."""

    def __init__(self) -> None:
        self.seen = 0
        self.changed = threading.Condition()

    def price(self, marker: int) -> str:
        return str(MARKER_BASE + Decimal("0.05") * marker)

    def on_quote(self, price: str) -> None:
        marker = int((Decimal(price) - MARKER_BASE) / Decimal("0.05"))
        with self.changed:
            if marker > self.seen:
                self.seen = marker
                self.changed.notify_all()

    def wait_for(self, marker: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.seen >= marker, timeout)


# The header fields quickfix adds when it sends (what the service's parse sees).
_X_HEADER = "35=X\x0134=1\x0149=EXCHANGE\x0152=20260117-10:45:01.250\x0156=BROKER_MD\x01"
MARKER_SYMBOL = "INFY"
MARKER_BASE = Decimal("10000.00")
MARKER_EVERY = 50  # messages between markers
MARKERS_AHEAD = 4  # markers the sender may run ahead of the service


async def tick_ingest(ctx: BenchContext) -> list[Figure]:
    import nats

    from brokermesh.marketdata.v1 import tick_pb2
    from svc_runtime.messaging import Topology

    fix_exchange = _fix_exchange()
    listing = [*fix_exchange.DEFAULT_LISTING, *fix_exchange.synthetic_listing(500)]
    symbols = [item.symbol for item in listing if item.symbol.startswith("SYN")]
    per_message = 50
    rig = await _rig(ctx, "ingest", listing)
    watch = MarkerWatch()
    nc = await nats.connect(rig.stack.plan.nats_url)
    try:

        async def on_batch(msg: Any) -> None:
            for quote in tick_pb2.TickBatch.FromString(msg.data).quotes:
                if quote.symbol == MARKER_SYMBOL and quote.last_price.value:
                    watch.on_quote(quote.last_price.value)

        await nc.subscribe(Topology(rig.stack.plan.namespace).tick_subject_for(MARKER_SYMBOL), cb=on_batch)
        await nc.flush()
        Entry = fix_exchange.Entry
        tick = Decimal("0.05")
        batches = []
        for k in range(200):
            price = Decimal(100) + tick * (k % 40)
            chunk = [symbols[(k * per_message + i) % len(symbols)] for i in range(per_message)]
            entries = []
            for symbol in chunk:
                entries += [
                    Entry(symbol, "2", str(price), 10),
                    Entry(symbol, "B", None, 1000 + k),
                    Entry(symbol, "0", str(price - tick), 100),
                    Entry(symbol, "1", str(price + tick), 100),
                ]
            batches.append(entries)
        rig.exchange.prepare(batches)
        raw_messages = [
            fix_exchange._Acceptor.incremental(entries).toString().replace("35=X\x01", _X_HEADER, 1)
            for entries in batches
        ]
        marker = 0

        def send_marker() -> None:
            nonlocal marker
            marker += 1
            rig.exchange.send_updates([Entry(MARKER_SYMBOL, "2", watch.price(marker), 1)])

        def send_for(seconds: float) -> tuple[int, bool]:
            """Send for `seconds` under flow control, then a last marker; (messages sent,
            whether the service kept up to the end)."""
            stop_at = time.perf_counter() + seconds
            sent = 0
            while time.perf_counter() < stop_at:
                sent += rig.exchange.send_prepared(MARKER_EVERY)
                send_marker()
                if not watch.wait_for(marker - MARKERS_AHEAD, timeout=60):
                    return sent, False
            send_marker()
            return sent, watch.wait_for(marker, timeout=120)

        ctx.progress("warm-up")
        await asyncio.to_thread(send_for, 1.0)
        duration = 3.0 if ctx.quick else 10.0
        start_metrics = await asyncio.to_thread(rig.metrics)
        cpu0 = sum(rig.process.cpu_times()[:2])
        ctx.progress("sending ticks")
        started = time.perf_counter()
        sent, kept_up = await asyncio.to_thread(send_for, duration)
        elapsed = time.perf_counter() - started
        cpu = (sum(rig.process.cpu_times()[:2]) - cpu0) / elapsed
        end_metrics = await asyncio.to_thread(rig.metrics)
    finally:
        await nc.close()
        await rig.close()
    if not kept_up:
        raise RuntimeError("the service stopped publishing during the ingest run")

    ctx.progress("the hot path in process")
    steps = hot_path(raw_messages, rounds=1 if ctx.quick else 5)
    per_tick = sum(steps.values())
    ticks = sent * per_message
    published = (
        end_metrics["marketdata_ticks_published_total"] - start_metrics["marketdata_ticks_published_total"]
    )
    batches = (
        end_metrics["marketdata_tick_batches_published_total"]
        - start_metrics["marketdata_tick_batches_published_total"]
    )
    how = (
        f"{sent} X messages × {per_message} symbols × 4 entries over 500 symbols, at most "
        f"{MARKERS_AHEAD * MARKER_EVERY} messages ahead of the service; {elapsed:.1f} s; "
        f"service CPU {cpu:.2f} cores"
    )
    return [
        Figure(
            "marketdata.tick_ingest.throughput",
            ticks / elapsed,
            "ticks/s",
            "higher",
            INGEST_TARGET,
            BASELINE_NATS_SUBSCRIBE,
            how,
        ),
        Figure(
            "marketdata.tick_ingest.entries",
            ticks * 4 / elapsed,
            "entries/s",
            "higher",
            note="FIX MDEntries applied per second (4 per tick here)",
        ),
        Figure(
            "marketdata.tick_ingest.published",
            published / elapsed,
            "quotes/s",
            "higher",
            note="quotes published on the NATS tick subjects (each symbol at most once per flush)",
        ),
        Figure(
            "marketdata.tick_ingest.quotes_per_batch",
            published / max(1.0, batches),
            "count",
            "higher",
            note="quotes per TickBatch message",
        ),
        Figure(
            "marketdata.tick_ingest.service_cpu", cpu, "cores", "lower", note="svc_marketdata over the run"
        ),
        Figure(
            "marketdata.tick_ingest.hot_path_per_core",
            1 / per_tick,
            "ticks/s",
            "higher",
            INGEST_TARGET,
            BASELINE_NATS_SUBSCRIBE,
            "the service's per-tick work alone, in process, per CPU-second: "
            + ", ".join(f"{step} {seconds * 1e6:.2f} µs" for step, seconds in steps.items())
            + " per tick (quickfix = its C++ parse on the FIX thread; encode = changed quotes "
            "every 10 messages)",
        ),
        Figure(
            "marketdata.tick_ingest.per_core",
            ticks / elapsed / max(cpu, 0.01),
            "ticks/s",
            "higher",
            note="throughput per core of service CPU: steadier than the throughput on a shared machine",
        ),
    ]


def hot_path(messages: list[str], *, rounds: int, flush_every: int = 10) -> dict[str, float]:
    """CPU seconds per tick of each step the service takes (the least over `rounds`), in this
    process, from the raw text of incremental refreshes: quickfix's parse (C++, with the
    dictionary, as on the service's FIX thread), then ours, the quote, depth and candle books,
    and the encoding of the changed quotes every `flush_every` messages (a flush every ~5 ms at 100,000 ticks/s of 50-symbol
    messages). CPU time, not wall time: it holds on a machine shared with other work."""
    import quickfix as fix

    from svc_marketdata.adapters.fix_codec import parse_incremental
    from svc_marketdata.domain.candles import CandleBook
    from svc_marketdata.domain.depth import DepthBook
    from svc_marketdata.domain.quotes import QuoteBook
    from svc_marketdata.transport.wire import encode_quote
    from svc_runtime.fix import data_dictionary

    dictionary = fix.DataDictionary(str(data_dictionary()))
    book = QuoteBook(sequence_floor=1)
    depth, candles = DepthBook(), CandleBook()
    dirty: set[str] = set()
    clock = time.process_time
    # Each step's least time over the rounds: other work on a shared machine only ever
    # adds to a round's CPU time (cache misses, frequency), so the minimum is the steadiest.
    best: dict[str, float] = {}
    for n in range(rounds):
        spent = dict.fromkeys(("quickfix", "parse", "apply", "encode"), 0.0)
        ticks = 0
        for k, sent_text in enumerate(messages):
            t0 = clock()
            received = fix.Message(sent_text, dictionary, False).toString()
            t1 = clock()
            updates = parse_incremental(received)
            t2 = clock()
            dirty.update(book.apply_batch(updates))
            depth.apply_batch(updates)
            candles.apply_batch(updates)
            t3 = clock()
            spent["quickfix"] += t1 - t0
            spent["parse"] += t2 - t1
            spent["apply"] += t3 - t2
            ticks += len(updates)
            if (n * len(messages) + k) % flush_every == flush_every - 1:
                t4 = clock()
                for symbol in dirty:
                    encode_quote(book.quotes[symbol])
                spent["encode"] += clock() - t4
                dirty.clear()
        for step, seconds in spent.items():
            best[step] = min(best.get(step, seconds / ticks), seconds / ticks)
    return best


# --- StreamQuotes fan-out -------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    streams: int
    symbols: int

    @property
    def name(self) -> str:
        return f"{self.streams}x{self.symbols}"


async def _fanout_one(ctx: BenchContext, shape: Shape) -> list[Figure]:
    fix_exchange = _fix_exchange()
    listing = [*fix_exchange.DEFAULT_LISTING, *fix_exchange.synthetic_listing(max(shape.symbols, 100))]
    symbols = [item.symbol for item in listing if item.symbol.startswith("SYN")][: shape.symbols]
    rig = await _rig(ctx, f"fanout-{shape.name}", listing)
    ages = load.Samples("tick age")
    opens = load.Samples("open → snapshot")
    delivered = {"quotes": 0, "messages": 0}
    errors: list[str] = []
    channels = [
        channel(rig.stack.plan.target(SERVICE), signer=rig.stack.plan.service_signer("gateway"))
        for _ in range(max(1, shape.streams // 100))
    ]
    try:
        rss_before = rig.process.memory_info().rss

        async def client(i: int, ready: asyncio.Event) -> None:
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channels[i % len(channels)])
            sampled = load.age_sampled(i, shape.streams)
            opened = time.perf_counter()
            call = stub.StreamQuotes(
                marketdata_pb2.StreamQuotesRequest(symbols=symbols, max_updates_per_second=STREAM_RATE)
            )
            try:
                first = True
                async for message in call:
                    now_ns = time.time_ns()
                    if first:
                        opens.add((time.perf_counter() - opened) * 1000)
                        first = False
                        ready.set()
                        continue
                    delivered["messages"] += 1
                    delivered["quotes"] += len(message.quotes)
                    if sampled:
                        for quote in message.quotes:
                            ages.add((now_ns - quote.exchange_time.ToNanoseconds()) / 1e6)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    errors.append(exc.code().name)
                    ages.error(exc.code().name)
            finally:
                ready.set()

        ready = [asyncio.Event() for _ in range(shape.streams)]
        ctx.progress(f"{shape.name}: opening streams")
        tasks = [asyncio.create_task(client(i, ready[i])) for i in range(shape.streams)]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 120)
        rig.exchange.start_feeder(symbols, TICKS_PER_SYMBOL)
        try:
            ctx.progress(f"{shape.name}: warm-up")
            await asyncio.sleep(2.0)
            ages.reset()
            delivered.update(quotes=0, messages=0)
            duration = 4.0 if ctx.quick else 10.0
            cpu0 = sum(rig.process.cpu_times()[:2])
            client0 = time.process_time()
            started = time.perf_counter()
            ctx.progress(f"{shape.name}: measuring")
            await asyncio.sleep(duration)
            window = time.perf_counter() - started
            cpu = (sum(rig.process.cpu_times()[:2]) - cpu0) / window
            client_cpu = (time.process_time() - client0) / window
            rss_after = rig.process.memory_info().rss
            quotes, messages = delivered["quotes"], delivered["messages"]
        finally:
            rig.exchange.stop_feeder()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for ch in channels:
            await ch.close()
        await rig.close()

    prefix = f"marketdata.stream_fanout.{shape.name}"
    how = (
        f"{shape.streams} streams × {shape.symbols} symbols, {TICKS_PER_SYMBOL} ticks/s per symbol, "
        f"tick age on every quote of {sum(load.age_sampled(i, shape.streams) for i in range(shape.streams))} "
        "streams, quotes counted on all; "
        f"≤ {STREAM_RATE} pushes/s per stream; service CPU {cpu:.2f} cores, client CPU "
        f"{client_cpu:.2f} cores (near 1: the readers, not the service, set the age)"
    )
    result = ages.result(window_s=window)
    figures = result.figures(
        prefix, baseline=BASELINE_GRPC_STREAM, targets=AGE_TARGETS, note=how, throughput=False
    )
    figures += [
        Figure(
            f"{prefix}.delivered",
            quotes / window,
            "quotes/s",
            "higher",
            baseline=BASELINE_GRPC_STREAM,
            note=f"{messages / window:.0f} messages/s; {how}",
        ),
    ]
    if shape.streams >= 50:  # with fewer, RSS noise (MBs) swamps what a stream costs
        figures.append(
            Figure(
                f"{prefix}.memory_per_stream",
                (rss_after - rss_before) / 1024 / shape.streams,
                "KB",
                "lower",
                note=f"service RSS growth over {shape.streams} open streams "
                f"({rss_before / 2**20:.0f} → {rss_after / 2**20:.0f} MB)",
            )
        )
    figures += opens.result().figures(f"{prefix}.open", note="request → snapshot received", throughput=False)
    return [f for f in figures if not f.name.endswith(".open.errors")]


async def stream_fanout(ctx: BenchContext) -> list[Figure]:
    shapes = (
        [Shape(50, 10)] if ctx.quick else [Shape(50, 10), Shape(2000, 10), Shape(100, 100), Shape(10, 1000)]
    )
    # On a shared machine, measure only the shapes in question: `2000x10`.
    chosen = os.environ.get("BROKERMESH_BENCH_STREAM_SHAPES", "").strip()
    if chosen:
        shapes = [Shape(*(int(n) for n in item.split("x"))) for item in chosen.split(",")]
    figures: list[Figure] = []
    for shape in shapes:
        figures += await _fanout_one(ctx, shape)
    return figures


# --- search --------------------------------------------------------------------------------

QUERIES = [
    "t",
    "ta",
    "tat",
    "tata",
    "tata m",
    "tata mo",
    "syn",
    "synth",
    "synthetic 12",
    "inf",
    "hdfc",
    "m&m",
    "SYN1",
]


# Misspellings and abbreviations: each is answered by the near-match tier (rapidfuzz).
FUZZY_QUERIES = [
    "infsys",
    "infosis",
    "tata motrs",
    "relaince",
    "hdfc bnk",
    "tcsl",
    "mahindra mahindr",
    "bajaj auot",
    "synthetc industris 12",
    "sythetic 7",
]
FUZZY_RATE = 500  # searches per second offered
FUZZY_TARGETS = {"p99": "<= 20 ms", "errors": "<= 0"}


async def _search_runs(
    ctx: BenchContext, rig: Rig, queries: list[str], rate: int, *, saturate: bool
) -> list[load.LoadResult]:
    """One at a time, an open loop at `rate`, and (if `saturate`) a closed loop."""

    async def query(i: int) -> None:
        await rig.quotes.SearchInstruments(
            marketdata_pb2.SearchInstrumentsRequest(query=queries[i % len(queries)], page_size=20),
            timeout=30,
        )

    duration = 2.0 if ctx.quick else 6.0
    runs = 1 if ctx.quick else 3
    results = [
        await load.median_of(
            runs,
            lambda: load.sequential(query, duration=duration, label="one at a time", progress=ctx.progress),
        ),
        await load.median_of(
            runs,
            lambda: load.open_loop(
                query, rate=rate, duration=duration, label=f"{rate}/s", progress=ctx.progress
            ),
        ),
    ]
    if saturate:
        results.append(
            await load.median_of(
                runs,
                lambda: load.closed_loop(
                    query, duration=duration, label="at saturation", progress=ctx.progress
                ),
            )
        )
    return results


async def search(ctx: BenchContext) -> list[Figure]:
    fix_exchange = _fix_exchange()
    listing = [*fix_exchange.DEFAULT_LISTING, *fix_exchange.synthetic_listing(3000)]
    rig = await _rig(ctx, "search", listing)
    try:
        # Sized for 10 M users × 5 searches a day ≈ 580 searches a second.
        alone, offered, busy = await _search_runs(ctx, rig, QUERIES, SEARCH_RATE, saturate=True)
    finally:
        await rig.close()

    from svc_marketdata.domain.instruments import Instrument, InstrumentIndex

    index = InstrumentIndex.build(
        Instrument(f"S{n:05d}", f"Company {n} {['Steel', 'Motors', 'Bank', 'Power'][n % 4]} Limited")
        for n in range(50_000)
    )
    local = load.Samples("in process")
    for _ in range(20 if ctx.quick else 100):
        for text in ("s", "s1", "s12", "s123", "motors", "bank lim", "company 4", "power"):
            started = time.perf_counter()
            index.search(text, limit=20)
            local.add((time.perf_counter() - started) * 1000)
    in_process = local.result()

    figures = alone.figures(
        "marketdata.search.alone", baseline=BASELINE_GRPC_UNARY, targets=SEARCH_TARGETS, throughput=False
    )
    figures += offered.figures(
        f"marketdata.search.open_{SEARCH_RATE}",
        baseline=BASELINE_GRPC_UNARY,
        targets={**SEARCH_TARGETS, "throughput": f">= {SEARCH_RATE * 0.99:g} ops/s"},
    )
    figures += busy.figures("marketdata.search", baseline=BASELINE_GRPC_UNARY, latency=False)
    figures += [
        Figure(
            "marketdata.search.index_p99",
            in_process.percentiles["p99"] * 1000,
            "µs",
            "lower",
            note=f"InstrumentIndex.search over 50,000 instruments, p50 {in_process.percentiles['p50'] * 1000:.0f} µs",
        )
    ]
    return figures


async def _cpu_per_search(rig: Rig, queries: list[str], count: int) -> tuple[float, float]:
    """CPU microseconds per search of the service and of this client, over `count` searches
    sent 8 at a time: CPU time, not wall time, so it holds on a machine shared with other work."""
    process = rig.process
    service0, client0 = sum(process.cpu_times()[:2]), time.process_time()

    async def worker(start: int) -> None:
        for i in range(start, count, 8):
            await rig.quotes.SearchInstruments(
                marketdata_pb2.SearchInstrumentsRequest(query=queries[i % len(queries)], page_size=20),
                timeout=30,
            )

    await asyncio.gather(*(worker(k) for k in range(8)))
    service = sum(process.cpu_times()[:2]) - service0
    return service / count * 1e6, (time.process_time() - client0) / count * 1e6


async def fuzzy_search(ctx: BenchContext) -> list[Figure]:
    """Misspelt and abbreviated queries over the same 3,000-instrument master, at 500/s."""
    fix_exchange = _fix_exchange()
    listing = [*fix_exchange.DEFAULT_LISTING, *fix_exchange.synthetic_listing(3000)]
    rig = await _rig(ctx, "fuzzy_search", listing)
    try:
        alone, offered = await _search_runs(ctx, rig, FUZZY_QUERIES, FUZZY_RATE, saturate=False)
        service_cpu, client_cpu = await _cpu_per_search(rig, FUZZY_QUERIES, 1000 if ctx.quick else 5000)
    finally:
        await rig.close()
    figures = alone.figures(
        "marketdata.fuzzy_search.alone", baseline=BASELINE_GRPC_UNARY, targets=FUZZY_TARGETS, throughput=False
    )
    figures += offered.figures(
        f"marketdata.fuzzy_search.open_{FUZZY_RATE}",
        baseline=BASELINE_GRPC_UNARY,
        targets={**FUZZY_TARGETS, "throughput": f">= {FUZZY_RATE * 0.99:g} ops/s"},
    )
    figures.append(
        Figure(
            "marketdata.fuzzy_search.service_cpu_per_search",
            service_cpu,
            "µs",
            "lower",
            note=f"svc_marketdata CPU per SearchInstruments (the gRPC client's: {client_cpu:.0f} µs)",
        )
    )
    return figures


SCENARIOS = [
    Scenario("marketdata.tick_ingest", "FIX market data → quote cache → NATS tick batches", tick_ingest),
    Scenario(
        "marketdata.stream_fanout", "StreamQuotes: N streams × M symbols, tick age at delivery", stream_fanout
    ),
    Scenario("marketdata.search", "SearchInstruments type-ahead latency and throughput", search),
    Scenario(
        "marketdata.fuzzy_search",
        "SearchInstruments with misspellings and abbreviations, 500/s",
        fuzzy_search,
    ),
]
