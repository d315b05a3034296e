"""Price streams to mobile clients: SSE fan-out through the gateway.

N clients each open `GET /v1/marketdata/stream?symbols=…` for M symbols. A tick's **age at
delivery** is the client's receipt time minus the exchange timestamp the tick carries (`ts`),
on one machine and so one clock. It includes the conflation the gateway does on purpose (at
most a few pushes per second per stream), so it is what a user sees, not a transport time.

- `sse.fanout`: ticks are published on the stack's NATS tick subjects at a fixed rate per
  symbol (stamped with the time of publication as their exchange time), with the exchange's
  market makers paused, so the load is known and only the fan-out is measured: NATS →
  gateway → N × M SSE streams. Per (N, M): tick age percentiles, events delivered per second,
  errors (failed opens, disconnects, `event: error`), time to open a stream (first event),
  gateway memory per stream (RSS growth over N) and the gateway's CPU.
- `sse.exchange_ticks`: the whole price path with nothing injected: exchange simulator → FIX
  market data → svc_marketdata → NATS → gateway → 1,000 SSE streams, at whatever rate the
  simulator trades; beside it, the age of the same ticks on NATS (the part before the gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import socket
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import grpc
import psutil
from google.protobuf import timestamp_pb2

from bench import clients, fullstack, load
from bench.api import BASELINE_NATS_SUBSCRIBE, BenchContext, Figure, Scenario
from brokermesh.exchange.v1 import exchange_admin_pb2, exchange_admin_pb2_grpc
from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc, tick_pb2
from brokermesh.type.v1 import decimal_pb2
from svc_runtime import messaging, tls
from svc_runtime.grpc_client import raw_channel, signing_interceptors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from nats.aio.msg import Msg

    from svc_runtime.stack import Stack

# Targets (bench/README.md): SSE quotes p99 ≤ 250 ms up to 5,000 streams, no errors;
# ≤ 30 KB of gateway memory per stream.
AGE_TARGETS = {"p99": "<= 250 ms", "errors": "<= 0"}
# The whole path (exchange → SSE): p99 ≤ 150 ms at 1,000 streams, no errors.
WHOLE_PATH_STREAMS = 1000
WHOLE_PATH_TARGETS = {"p99": "<= 150 ms", "errors": "<= 0"}
MEMORY_TARGET = "<= 30 KB"
SHAPES_VARIABLE = "BROKERMESH_BENCH_SSE_SHAPES"
WORKERS_VARIABLE = "BROKERMESH_BENCH_SSE_WORKERS"
GATEWAY_WORKERS = "BROKERMESH_GATEWAY_WORKERS"
TICK = Decimal("0.05")


@dataclass(frozen=True)
class Shape:
    clients: int
    symbols: int

    @property
    def name(self) -> str:
        return f"{self.clients}x{self.symbols}"


@dataclass(frozen=True)
class Plan:
    shapes: tuple[Shape, ...]
    ticks_per_symbol: float  # injected ticks per second per symbol
    warmup: float
    duration: float
    users: int

    @classmethod
    def of(cls, ctx: BenchContext) -> Plan:
        if ctx.quick:
            plan = cls((Shape(100, 10),), ticks_per_symbol=5.0, warmup=2.0, duration=3.0, users=5)
        else:
            plan = cls(
                (Shape(100, 10), Shape(1000, 10), Shape(1000, 50), Shape(5000, 10)),
                ticks_per_symbol=10.0,
                warmup=3.0,
                duration=10.0,
                users=20,
            )
        # On a shared machine, measure only the shapes in question: `1000x10,5000x10`.
        chosen = os.environ.get(SHAPES_VARIABLE, "").strip()
        if chosen:
            shapes = tuple(Shape(*(int(n) for n in item.split("x"))) for item in chosen.split(","))
            plan = dataclasses.replace(plan, shapes=shapes)
        return plan


@dataclass
class Clients:
    """N SSE clients and what they saw."""

    ages: load.Samples = field(default_factory=lambda: load.Samples("tick age"))
    opens: load.Samples = field(default_factory=lambda: load.Samples("open → first event"))
    delivered: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    measuring: bool = False
    ready: int = 0
    expected: int = 0
    settled: int = 0  # clients that got their first event or failed to open
    all_settled: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def settle(self) -> None:
        self.settled += 1
        if self.settled >= self.expected:
            self.all_settled.set()


_TICK = b"event: price_tick"
_TS = b'"ts":"'


def _age_ms(frame_ts: bytes, received_ns: int, seconds_cache: dict[bytes, int]) -> float:
    """`ts` of a PriceTick (RFC 3339, UTC, 0–9 fraction digits) → age in ms, without parsing
    a datetime per tick: the whole-second part is looked up once per second."""
    head, _, frac = frame_ts.rstrip(b"Z").partition(b".")
    seconds = seconds_cache.get(head)
    if seconds is None:
        seconds = int(datetime.fromisoformat(head.decode() + "+00:00").timestamp())
        seconds_cache[head] = seconds
    nanos = int((frac + b"000000000")[:9]) if frac else 0
    return (received_ns - (seconds * 1_000_000_000 + nanos)) / 1e6


class LeanSseClient(asyncio.Protocol):
    """One SSE stream over a raw socket: HTTP/1.1 GET, then count `price_tick` events in the
    bytes as they come (chunk framing never splits an event: the gateway writes whole
    frames), recording tick ages if sampled. No per-event objects, no JSON."""

    def __init__(self, request: bytes, seen: Clients, *, sampled: bool, began: float) -> None:
        self.request = request
        self.seen = seen
        self.sampled = sampled
        self.began = began
        self.buffer = b""
        self.started = False
        self.transport: asyncio.Transport | None = None
        self.answered = asyncio.Event()  # the response head came (or the connection ended)
        self.closed = asyncio.Event()
        self._seconds: dict[bytes, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        received_ns = time.time_ns()
        seen = self.seen
        buffer = self.buffer + data
        if not self.started:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                seen.errors[f"open failed: HTTP {buffer[9:12].decode(errors='replace')}"] += 1
                seen.settle()
                self.started = True
                self.answered.set()
                assert self.transport is not None
                self.transport.close()
                return
            self.started = True
            self.answered.set()
            seen.ready += 1
            seen.opens.add((time.perf_counter() - self.began) * 1000.0)
            seen.settle()
            buffer = buffer[head_end + 4 :]
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self.buffer = buffer
            return
        complete, self.buffer = buffer[:cut], buffer[cut + 2 :]
        if not seen.measuring:
            return
        if b"event: error" in complete:
            seen.errors["event error"] += 1
        ticks = complete.count(_TICK)
        seen.delivered += ticks
        if self.sampled and ticks:
            at = complete.find(_TS)
            while at >= 0:
                end = complete.find(b'"', at + 6)
                seen.ages.add(_age_ms(complete[at + 6 : end], received_ns, self._seconds))
                at = complete.find(_TS, end)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started:
            self.seen.errors["open failed: connection closed"] += 1
            self.seen.settle()
        elif self.seen.measuring:
            self.seen.errors["disconnected" if exc else "stream ended"] += 1
        self.answered.set()
        self.closed.set()


def _address(url: str) -> tuple[str, int, bool]:
    """The gateway's host, port and whether it speaks TLS."""
    parsed = urlsplit(url)
    secure = parsed.scheme == "https"
    return parsed.hostname or "127.0.0.1", parsed.port or (443 if secure else 80), secure


async def _client(
    url: str, token: str, symbols: list[str], seen: Clients, gate: asyncio.Semaphore, *, sampled: bool
) -> None:
    host, port, secure = _address(url)
    request = (
        f"GET /v1/marketdata/stream?symbols={','.join(symbols)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    async with gate:  # open streams a few at a time (until each is answered), as clients arriving
        began = time.perf_counter()
        try:
            transport, protocol = await loop.create_connection(
                lambda: LeanSseClient(request, seen, sampled=sampled, began=began),
                host,
                port,
                ssl=tls.client_context() if secure else None,
            )
        except OSError as error:
            seen.errors[f"open failed: {load.error_kind(error)}"] += 1
            seen.settle()
            return
        await protocol.answered.wait()
    try:
        await protocol.closed.wait()
    finally:
        transport.close()


async def _symbols(stack: Stack, count: int) -> list[str]:
    """`count` instrument symbols from the price tracker's instrument master."""
    found: list[str] = [s for s in fullstack.SYMBOLS]
    async with raw_channel(
        stack.plan.target("svc_marketdata"),
        interceptors=signing_interceptors(stack.plan.service_signer("gateway")),
    ) as channel:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            if len(found) >= count:
                break
            with contextlib.suppress(grpc.aio.AioRpcError):
                page = await stub.SearchInstruments(
                    marketdata_pb2.SearchInstrumentsRequest(query=letter, page_size=100), timeout=10
                )
                found += [i.symbol for i in page.instruments if i.symbol not in found]
        quotes = await stub.BatchGetQuotes(
            marketdata_pb2.BatchGetQuotesRequest(symbols=found[:500]), timeout=10
        )
    # Traded symbols first; any listed one will do after them, since the ticks are injected.
    traded = [q.symbol for q in quotes.quotes if q.HasField("last_price")]
    known = traded + [q.symbol for q in quotes.quotes if not q.HasField("last_price")]
    if len(known) < count:
        raise RuntimeError(f"the instrument master has {len(known)} quoted symbols; {count} needed")
    return known[:count]


class TickInjector:
    """Publishes quotes for `symbols` on the stack's tick subjects at a fixed rate per symbol,
    each stamped with its publication time as the exchange time."""

    def __init__(self, nats_url: str, namespace: str, symbols: list[str], per_symbol: float) -> None:
        self.nats_url = nats_url
        self.topology = messaging.Topology(namespace)
        self.symbols = symbols
        self.rate = per_symbol * len(symbols)
        self.prices = {s: Decimal(1000) + TICK * random.randint(0, 20000) for s in symbols}
        self.sequence = itertools.count(10**12)  # after anything the exchange has sent
        self.sent = 0

    def _quote(self, symbol: str) -> marketdata_pb2.Quote:
        previous = self.prices[symbol]
        price = max(TICK, previous + TICK * random.choice((-2, -1, 1, 2)))
        self.prices[symbol] = price
        close = Decimal(1000)
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(time.time_ns())
        change = price - close
        return marketdata_pb2.Quote(
            symbol=symbol,
            last_price=decimal_pb2.Decimal(value=f"{price:.2f}"),
            change=decimal_pb2.Decimal(value=f"{change:.2f}"),
            change_percent=decimal_pb2.Decimal(value=f"{(change / close * 100).quantize(Decimal('0.01'))}"),
            previous_close=decimal_pb2.Decimal(value=f"{close:.2f}"),
            exchange_time=stamp,
            sequence=next(self.sequence),
        )

    async def run(self) -> None:
        nc = await messaging.connect(self.nats_url, "bench-ticks")
        try:
            start = time.perf_counter()
            for k in itertools.count():
                delay = start + k / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                symbol = self.symbols[k % len(self.symbols)]
                batch = tick_pb2.TickBatch(quotes=[self._quote(symbol)])
                await nc.publish(self.topology.tick_subject_for(symbol), batch.SerializeToString())
                self.sent += 1
        finally:
            await nc.close()


class UpstreamAges:
    """Tick age where gateways take ticks: receipt on the stack's NATS tick subjects − the
    exchange time. Beside the SSE figure it splits the whole path in two: what comes before
    the gateway (exchange, FIX, svc_marketdata, NATS) and the gateway's own share (pacing,
    framing, writes)."""

    def __init__(self, nats_url: str, namespace: str, symbols: list[str]) -> None:
        self.nats_url = nats_url
        self.topology = messaging.Topology(namespace)
        self.symbols = set(symbols)
        self.ages = load.Samples("tick age on NATS")
        self.measuring = False

    async def _on_batch(self, msg: Msg) -> None:
        if not self.measuring:
            return
        received = time.time_ns()
        for quote in tick_pb2.TickBatch.FromString(msg.data).quotes:
            if quote.symbol in self.symbols and quote.HasField("exchange_time"):
                self.ages.add(load.age_ms(quote.exchange_time.ToNanoseconds(), received))

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[UpstreamAges]:
        nc = await messaging.connect(self.nats_url, "bench-tick-ages")
        try:
            for subject in self.topology.tick_subjects_for(self.symbols):
                await nc.subscribe(subject, cb=self._on_batch)
            yield self
        finally:
            await nc.close()


async def _market_makers(stack: Stack, *, paused: bool) -> None:
    """Pause the exchange's market makers so injected ticks are the only ones (best effort:
    if the simulator refuses, organic ticks are mixed in and still carry exchange times)."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        async with raw_channel(
            stack.plan.target("exchange_sim"),
            interceptors=signing_interceptors(stack.plan.service_signer("gateway")),
        ) as channel:
            await exchange_admin_pb2_grpc.ExchangeAdminServiceStub(channel).SetScenario(
                exchange_admin_pb2.SetScenarioRequest(pause_market_makers=paused), timeout=10
            )


class Gateway:
    """The gateway's processes (worker 0 and the workers it started): CPU and memory summed."""

    def __init__(self, stack: Stack) -> None:
        process = stack.processes.get("gateway")
        self.root = None if process is None or process.returncode is not None else psutil.Process(process.pid)

    def processes(self) -> list[psutil.Process]:
        return [] if self.root is None else [self.root, *self.root.children(recursive=True)]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.processes())

    def cpu_seconds(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.processes())

    def __bool__(self) -> bool:
        return self.root is not None


async def _settled(gateway: Gateway, processes: int, timeout: float = 60.0) -> None:
    """Until a restarted gateway runs all its `processes` (its workers start after it is
    ready) and their memory has stopped growing: the start of a memory figure."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        if len(gateway.processes()) >= processes:
            rss = gateway.rss()
            if abs(rss - last) < 2**20:
                return
            last = rss
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the restarted gateway did not settle with {processes} processes in {timeout:g}s")


async def _open(stack: Stack, tokens: list[str], symbols: list[str], shape: Shape, timeout: float) -> Clients:
    seen = Clients(expected=shape.clients)
    gate = asyncio.Semaphore(50)
    for n in range(shape.clients):
        # Every client watches the same M symbols: the worst case, each tick goes to all N.
        seen.tasks.append(
            asyncio.create_task(
                _client(
                    stack.plan.gateway_url,
                    tokens[n % len(tokens)],
                    symbols,
                    seen,
                    gate,
                    sampled=load.age_sampled(n, shape.clients),
                )
            )
        )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(seen.all_settled.wait(), timeout)
    return seen


async def _close(seen: Clients) -> None:
    seen.measuring = False
    for task in seen.tasks:
        task.cancel()
    await asyncio.gather(*seen.tasks, return_exceptions=True)


async def _measure_shape(
    ctx: BenchContext,
    *,
    stack: Stack,
    tokens: list[str],
    symbols: list[str],
    shape: Shape,
    plan: Plan,
    prefix: str,
    upstream: UpstreamAges | None = None,
    targets: dict[str, str] = AGE_TARGETS,
) -> list[Figure]:
    gateway = Gateway(stack)
    rss_before = gateway.rss() if gateway else 0
    ctx.progress(f"{prefix}: opening {shape.clients} streams of {shape.symbols} symbols")
    seen = await _open(stack, tokens, symbols[: shape.symbols], shape, timeout=180.0)
    try:
        if seen.settled < shape.clients:
            seen.errors["no first event in time"] += shape.clients - seen.settled
        ctx.progress(f"{prefix}: warm-up")
        await asyncio.sleep(plan.warmup)
        seen.measuring = True
        seen.ages.reset()
        if upstream is not None:
            upstream.measuring = True
        cpu_before = gateway.cpu_seconds() if gateway else None
        wall_before, client_cpu_before = time.perf_counter(), time.process_time()
        ctx.progress(f"{prefix}: measuring {plan.duration:g}s")
        await asyncio.sleep(plan.duration)
        seen.measuring = False
        if upstream is not None:
            upstream.measuring = False
        wall = time.perf_counter() - wall_before
        client_cores = (time.process_time() - client_cpu_before) / wall
        gateway_cores = (
            (gateway.cpu_seconds() - cpu_before) / wall
            if gateway and cpu_before is not None
            else float("nan")
        )
        rss_after = gateway.rss() if gateway else 0
    finally:
        await _close(seen)
    fullstack.assert_alive(stack)
    ages = seen.ages.result(window_s=wall)
    ages.errors.update(seen.errors)
    ages.client_cpu = client_cores
    sampled = sum(load.age_sampled(n, shape.clients) for n in range(shape.clients))
    note = (
        f"{shape.clients} SSE clients × the same {shape.symbols} symbols (raw-socket client); tick age ="
        f" receipt − exchange ts, every tick of {sampled} clients; events counted on all"
    )
    figures = ages.figures(
        prefix, baseline=BASELINE_NATS_SUBSCRIBE, targets=targets, note=note, throughput_unit="events/s"
    )
    for figure in figures:
        if figure.name == f"{prefix}.throughput":  # every client's events, not the sampled ones'
            figure.value = seen.delivered / wall
    opens = seen.opens.result()
    figures += [
        f
        for f in opens.figures(f"{prefix}.open", note="stream request → first event", throughput=False)
        if f.name.endswith((".p50", ".p99"))
    ]
    if gateway is not None:
        growth = rss_after - rss_before
        figures.append(
            Figure(
                f"{prefix}.memory_per_stream",
                # RSS that fell while streams opened says nothing about what they hold.
                growth / 1024 / max(1, seen.ready) if growth > 0 else float("nan"),
                "KB",
                "lower",
                MEMORY_TARGET,
                note=f"gateway RSS growth over {seen.ready} open streams ({rss_before / 2**20:.0f} → {rss_after / 2**20:.0f} MB);"
                " the bare HTTP stack's own is baseline.sse_stream_memory",
            )
        )
        figures.append(
            Figure(
                f"{prefix}.gateway_cpu_per_event",
                gateway_cores * 1e6 / max(1.0, seen.delivered / wall),
                "µs",
                "lower",
                note="gateway CPU time per price_tick event delivered (all clients)",
            )
        )
        figures.append(
            Figure(
                f"{prefix}.gateway_cpu",
                gateway_cores,
                "cores",
                "lower",
                note=f"gateway process CPU while measuring; client CPU {client_cores:.2f} cores",
            )
        )
    return figures


async def fanout(ctx: BenchContext) -> list[Figure]:
    """Every shape; with `BROKERMESH_BENCH_SSE_WORKERS=1,2` every shape once per gateway
    worker count, in the same run (figures `sse.fanout_w<n>_<shape>`)."""
    counts = [int(n) for n in os.environ.get(WORKERS_VARIABLE, "").replace(" ", "").split(",") if n]
    if not counts:
        return await _fanout(ctx, "sse.fanout_")
    stack = await fullstack.full_stack(ctx)
    figures: list[Figure] = []
    for count in counts:
        ctx.progress(f"gateway with {count} worker(s)")
        async with _gateway_workers(stack, count):
            figures += await _fanout(ctx, f"sse.fanout_w{count}_")
    return figures


@contextlib.asynccontextmanager
async def _gateway_workers(stack: Stack, count: int) -> AsyncIterator[None]:
    """The shared stack's gateway restarted with `count` worker processes, and restarted as
    it was afterwards."""
    before = stack.plan.extra_env.get(GATEWAY_WORKERS)
    try:
        await stack.stop_service("gateway")
        stack.plan.extra_env[GATEWAY_WORKERS] = str(count)
        await stack.start_service("gateway")
        yield
    finally:
        if before is None:
            stack.plan.extra_env.pop(GATEWAY_WORKERS, None)
        else:
            stack.plan.extra_env[GATEWAY_WORKERS] = before
        await stack.stop_service("gateway")
        await stack.start_service("gateway")


async def _fanout(ctx: BenchContext, prefix: str) -> list[Figure]:
    plan = Plan.of(ctx)
    stack = await fullstack.full_stack(ctx)
    most_clients = max(s.clients for s in plan.shapes)
    per_user = fullstack.streams_per_user(stack)
    users = await fullstack.create_users(stack, max(plan.users, -(-most_clients // per_user)), deposit="0")
    async with clients.session(stack.plan.gateway_url, connections=16) as http:
        tokens = await fullstack.login_all(http, users)
    most = max(s.symbols for s in plan.shapes)
    symbols = await _symbols(stack, most)
    figures: list[Figure] = []
    await _market_makers(stack, paused=True)
    processes = int(stack.plan.extra_env.get(GATEWAY_WORKERS) or os.environ.get(GATEWAY_WORKERS) or 1)
    try:
        for number, shape in enumerate(plan.shapes):
            if number:
                # A fresh gateway per shape: the memory the last shape's streams held (and
                # the allocator keeps or returns as it likes) would blur this one's growth.
                ctx.progress(f"{prefix}{shape.name}: restarting the gateway")
                await stack.stop_service("gateway")
                await stack.start_service("gateway")
            await _settled(Gateway(stack), processes)
            injector = TickInjector(
                stack.plan.nats_url, stack.plan.namespace, symbols[: shape.symbols], plan.ticks_per_symbol
            )
            publishing = asyncio.create_task(injector.run())
            try:
                shape_figures = await _measure_shape(
                    ctx,
                    stack=stack,
                    tokens=tokens,
                    symbols=symbols,
                    shape=shape,
                    plan=plan,
                    prefix=f"{prefix}{shape.name}",
                )
            finally:
                publishing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publishing
            for figure in shape_figures:
                figure.note = f"{figure.note}; {plan.ticks_per_symbol:g} ticks/s per symbol injected"
            figures += shape_figures
    finally:
        await _market_makers(stack, paused=False)
    return figures


async def exchange_ticks(ctx: BenchContext) -> list[Figure]:
    """With the gateway as `brokermesh up` runs it: a worker process per core."""
    stack = await fullstack.full_stack(ctx)
    workers = int(os.environ.get(GATEWAY_WORKERS) or os.cpu_count() or 1)
    async with _gateway_workers(stack, workers):
        figures = await _exchange_ticks(ctx, stack)
    for figure in figures:
        figure.note = f"{figure.note}; {workers} gateway worker(s)"
    return figures


async def _exchange_ticks(ctx: BenchContext, stack: Stack) -> list[Figure]:
    plan = Plan.of(ctx)
    shape = Shape(WHOLE_PATH_STREAMS if not ctx.quick else 20, len(fullstack.SYMBOLS))
    # As many users as `fanout` uses: one user opening every stream would meet the
    # per-user request rate (a burst of 40), not the price path.
    users = await fullstack.create_users(
        stack, max(plan.users, -(-shape.clients // fullstack.streams_per_user(stack))), deposit="0"
    )
    async with clients.session(stack.plan.gateway_url, connections=4) as http:
        tokens = await fullstack.login_all(http, users)
    symbols = await _symbols(stack, shape.symbols)
    prefix = "sse.exchange_ticks"
    async with UpstreamAges(stack.plan.nats_url, stack.plan.namespace, symbols).listening() as upstream:
        figures = await _measure_shape(
            ctx,
            stack=stack,
            tokens=tokens,
            symbols=symbols,
            shape=shape,
            plan=plan,
            prefix=prefix,
            upstream=upstream,
            targets=WHOLE_PATH_TARGETS,
        )
    for figure in figures:
        figure.note = f"{figure.note}; ticks from the exchange simulator over FIX, nothing injected"
    # The same ticks as svc_marketdata publishes them: the part of the age before the gateway.
    figures += [
        f
        for f in upstream.ages.result().figures(
            f"{prefix}.upstream",
            note="tick age = receipt on the NATS tick subjects − exchange ts (exchange → FIX → svc_marketdata → NATS)",
            throughput=False,
        )
        if f.name.endswith((".p50", ".p99"))
    ]
    return figures


# --- a client that cannot keep up ------------------------------------------------------------

SLOW_READ_BYTES = 256  # every quarter second: 1 KB/s against ~20–40 KB/s of events
SLOW_SYMBOLS = 50
DROP_TARGET = "<= 15 s"
DROPPED = 'gateway_sse_dropped_total{kind="marketdata",reason="slow_consumer"}'


def _metric(url: str, sample: str) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " "))


async def slow_consumer(ctx: BenchContext) -> list[Figure]:
    """One stream of 50 symbols (10 ticks/s each injected) read at 1 KB/s through a 4 KB
    receive window: how long until the gateway drops it, and whether the client, once it
    reads what is left, finds `event: error` with reason SLOW_CONSUMER before the end."""
    stack = await fullstack.full_stack(ctx)
    metrics = f"http://127.0.0.1:{stack.plan.ports['gateway']['metrics']}/metrics"
    users = await fullstack.create_users(stack, 1, deposit="0")
    async with clients.session(stack.plan.gateway_url, connections=1) as http:
        (token,) = await fullstack.login_all(http, users)
    symbols = await _symbols(stack, SLOW_SYMBOLS)
    injector = TickInjector(stack.plan.nats_url, stack.plan.namespace, symbols, 10.0)
    dropped_before = await asyncio.to_thread(_metric, metrics, DROPPED)
    host, port, secure = _address(stack.plan.gateway_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if secure:
        sock = tls.client_context().wrap_socket(sock, server_hostname=host)
    sock.settimeout(30)
    await _market_makers(stack, paused=True)
    publishing = asyncio.create_task(injector.run())
    try:
        await asyncio.to_thread(sock.connect, (host, port))
        sock.sendall(
            f"GET /v1/marketdata/stream?symbols={','.join(symbols)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        received = [await asyncio.to_thread(sock.recv, SLOW_READ_BYTES)]
        started = time.perf_counter()
        ctx.progress("reading 1 KB/s until the gateway drops the stream")
        dropped_after = float("nan")
        while time.perf_counter() - started < 60:
            await asyncio.sleep(0.25)
            received.append(await asyncio.to_thread(sock.recv, SLOW_READ_BYTES))
            if await asyncio.to_thread(_metric, metrics, DROPPED) > dropped_before:
                dropped_after = time.perf_counter() - started
                break
        ctx.progress("reading what is left")
        while chunk := await asyncio.to_thread(sock.recv, 65536):
            received.append(chunk)
    finally:
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        sock.close()
        await _market_makers(stack, paused=False)
    data = b"".join(received)
    last_event = data[data.rfind(b"event: ") :]  # chunk framing follows it
    told = b"event: error" in last_event and b"SLOW_CONSUMER" in last_event
    note = (
        f"one stream of {SLOW_SYMBOLS} symbols × 10 ticks/s read at 1 KB/s (4 KB receive window); "
        f"{len(data) / 1024:.0f} KB received in all; drop = the gateway's slow_consumer counter"
    )
    return [
        Figure("sse.slow_consumer.dropped_after", dropped_after, "s", "lower", DROP_TARGET, note=note),
        Figure(
            "sse.slow_consumer.told",
            1.0 if told else 0.0,
            "count",
            "higher",
            ">= 1",
            note="1: the stream's last event is `event: error` with reason SLOW_CONSUMER",
        ),
    ]


SCENARIOS = [
    Scenario(
        "sse.fanout",
        "SSE price fan-out through the gateway: N clients × M symbols at a fixed tick rate; tick age, memory per stream",
        fanout,
    ),
    Scenario(
        "sse.exchange_ticks",
        "tick age over the whole price path (exchange → FIX → price tracker → NATS → gateway → SSE)",
        exchange_ticks,
        in_quick=False,
    ),
    Scenario(
        "sse.slow_consumer",
        "a client that cannot keep up is told (event: error, SLOW_CONSUMER) and dropped within 15 s",
        slow_consumer,
        in_quick=False,
    ),
]
