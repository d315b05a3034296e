"""Bare baselines, measured in every run on the same machine with the same Python.

Each reports a throughput at saturation (closed loop, `SATURATION_CONCURRENCY` in flight,
except where noted) under its `BASELINE_*` name, and the latency of one operation with
nothing else in flight as `baseline.<name>.p50` … `.p99_9`. A scenario's figure divided by
its baseline is the number that survives a noisy machine.
"""

from __future__ import annotations

import asyncio
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import psutil
from google.protobuf import wrappers_pb2
from nats.js.api import StorageType, StreamConfig

from bench import clients, peers
from bench.api import (
    BASELINE_GRPC_PG_AT_RATE,
    BASELINE_GRPC_STREAM,
    BASELINE_GRPC_UNARY,
    BASELINE_HTTP_ECHO,
    BASELINE_JETSTREAM_PG_AT_RATE,
    BASELINE_JS_PUBLISH,
    BASELINE_NATS_SUBSCRIBE,
    BASELINE_PG_TXN,
    BASELINE_SSE_MEMORY,
    BASELINE_SSE_MEMORY_PLAINTEXT,
    FUNDS_BLOCK_HALF_RATE,
    FUNDS_SETTLE_HALF_RATE,
    BenchContext,
    Figure,
    Scenario,
)
from bench.load import (
    SATURATION_CONCURRENCY,
    Completions,
    LoadResult,
    Operation,
    Samples,
    age_ms,
    closed_loop,
    median_of,
    open_loop,
    sequential,
)
from svc_runtime import db, messaging, tls
from svc_runtime.infra.processes import free_port

# The size of an order-sized message: a PlaceOrderRequest or an order event is ~150–300 bytes.
PAYLOAD = 200
# A quote on the wire is ~100 bytes.
TICK_PAYLOAD = 100


@dataclass(frozen=True)
class Timing:
    warmup: float
    duration: float
    latency_duration: float
    runs: int
    stream_messages: int
    nats_messages: int

    @classmethod
    def of(cls, ctx: BenchContext) -> Timing:
        if ctx.quick:
            return cls(0.5, 2.0, 1.5, 1, 30_000, 60_000)
        return cls(1.0, 5.0, 3.0, 3, 150_000, 200_000)


def _stem(baseline: str) -> str:
    """`baseline.grpc_unary_echo.throughput` → `baseline.grpc_unary_echo`."""
    return baseline.rsplit(".", 1)[0]


def baseline_figures(
    baseline: str, throughput: LoadResult, latency: LoadResult, *, unit: str, note: str
) -> list[Figure]:
    stem = _stem(baseline)
    figures = [Figure(baseline, throughput.rate, unit, "higher", note=f"{note}; {throughput.describe()}")]
    for figure in latency.figures(stem, throughput=False, note=note):
        if figure.name.endswith(".errors"):
            figure.value += throughput.error_count
            for kind, count in throughput.errors.items():
                figure.note = (
                    f"{figure.note}; {kind}: {count}" if figure.note != "none" else f"{kind}: {count}"
                )
        figures.append(figure)
    return figures


async def saturation_and_latency(
    ctx: BenchContext, t: Timing, op: Operation, label: str
) -> tuple[LoadResult, LoadResult]:
    """A baseline's two measurements: throughput with many in flight, then latency one call
    at a time (each the median of the runs)."""
    throughput = await median_of(
        t.runs,
        lambda: closed_loop(op, duration=t.duration, warmup=t.warmup, label=label, progress=ctx.progress),
    )
    latency = await median_of(
        t.runs,
        lambda: sequential(
            op, duration=t.latency_duration, warmup=t.warmup, label=label, progress=ctx.progress
        ),
    )
    return throughput, latency


# --- gRPC ----------------------------------------------------------------------------------
async def grpc_unary(ctx: BenchContext) -> list[Figure]:
    t = Timing.of(ctx)
    port = free_port()
    async with peers.running("grpc-echo", str(port)), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(
            peers.UNARY_METHOD,
            request_serializer=wrappers_pb2.BytesValue.SerializeToString,
            response_deserializer=wrappers_pb2.BytesValue.FromString,
        )
        payload = wrappers_pb2.BytesValue(value=b"x" * PAYLOAD)

        async def echo(_i: int) -> None:
            await call(payload, timeout=10)

        throughput, latency = await saturation_and_latency(ctx, t, echo, "grpc echo")
    return baseline_figures(
        BASELINE_GRPC_UNARY,
        throughput,
        latency,
        unit="ops/s",
        note=f"grpc.aio + uvloop echo server in its own process, {PAYLOAD}-byte messages",
    )


async def grpc_stream(ctx: BenchContext) -> list[Figure]:
    t = Timing.of(ctx)
    port = free_port()
    async with peers.running("grpc-echo", str(port)), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_stream(
            peers.STREAM_METHOD,
            request_serializer=wrappers_pb2.BytesValue.SerializeToString,
            response_deserializer=wrappers_pb2.BytesValue.FromString,
        )

        def spec(count: int, rate: float) -> wrappers_pb2.BytesValue:
            return wrappers_pb2.BytesValue(
                value=f'{{"count": {count}, "rate": {rate}, "size": {TICK_PAYLOAD}}}'.encode()
            )

        async def flat_out() -> LoadResult:
            ctx.progress(f"grpc stream: {t.stream_messages} messages flat out")
            received, first, last = 0, 0.0, 0.0
            async for _ in call(spec(t.stream_messages, 0), timeout=120):
                last = time.perf_counter()
                if received == 0:
                    first = last
                received += 1
            # The first message opens the clock, so n messages give n − 1 intervals.
            elapsed = max(last - first, 1e-9)
            return LoadResult("grpc stream", "closed", elapsed, received - 1, [], concurrency=1)

        async def paced() -> LoadResult:
            rate = 1000.0
            ctx.progress(f"grpc stream: message age at {rate:g}/s")
            count = int(rate * (t.warmup + t.latency_duration))
            samples = Samples("grpc stream age")
            skip = int(rate * t.warmup)
            seen = 0
            async for message in call(spec(count, rate), timeout=120):
                seen += 1
                if seen > skip:
                    samples.add(age_ms(peers.stamp_of(message.value)))
            result = samples.result(window_s=t.latency_duration)
            result.mode, result.offered_rate = "open", rate
            return result

        throughput = await median_of(t.runs, flat_out)
        latency = await median_of(t.runs, paced)
    return baseline_figures(
        BASELINE_GRPC_STREAM,
        throughput,
        latency,
        unit="msgs/s",
        note=f"one server stream of {TICK_PAYLOAD}-byte messages; latency = age at receipt at 1,000 msgs/s",
    )


# --- PostgreSQL ------------------------------------------------------------------------------
async def pg_txn(ctx: BenchContext) -> list[Figure]:
    t = Timing.of(ctx)
    url = await ctx.new_database()
    pool = await asyncpg.create_pool(db.asyncpg_dsn(url), min_size=10, max_size=10)
    try:
        async with pool.acquire() as conn:
            await conn.execute(peers.PG_TXN_TABLE)

        async def txn(i: int) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(peers.PG_TXN_UPDATE, peers.pg_txn_row(i))

        throughput, latency = await saturation_and_latency(ctx, t, txn, "pg txn")
    finally:
        await pool.close()
    return baseline_figures(
        BASELINE_PG_TXN,
        throughput,
        latency,
        unit="ops/s",
        note="asyncpg pool of 10: BEGIN; conditional UPDATE of one row of 10,000; COMMIT (fsync on)",
    )


# --- NATS -------------------------------------------------------------------------------------
async def jetstream_publish(ctx: BenchContext) -> list[Figure]:
    t = Timing.of(ctx)
    namespace = ctx.new_namespace()
    stream = f"{namespace.upper()}_BENCH"
    subject = f"{namespace}.bench"
    nc = await messaging.connect(ctx.nats_url, "bench-jetstream")
    js = nc.jetstream()
    try:
        await js.add_stream(
            StreamConfig(
                name=stream, subjects=[f"{subject}.>"], storage=StorageType.FILE, duplicate_window=120.0
            )
        )
        payload = b"x" * PAYLOAD

        async def publish(i: int) -> None:
            # With a dedup id, as the outbox relay publishes.
            await js.publish(
                f"{subject}.{i % 16}", payload, headers={messaging.MSG_ID_HEADER: f"{stream}-{i}"}
            )

        counter = iter(range(1 << 62))

        async def fresh_ids(_i: int) -> None:
            await publish(next(counter))

        throughput, latency = await saturation_and_latency(ctx, t, fresh_ids, "jetstream publish")
        await js.delete_stream(stream)
    finally:
        await nc.close()
    return baseline_figures(
        BASELINE_JS_PUBLISH,
        throughput,
        latency,
        unit="msgs/s",
        note=f"file-stored stream on the stack's NATS server, {PAYLOAD}-byte messages with Nats-Msg-Id, each publish awaiting its ack",
    )


async def nats_subscribe(ctx: BenchContext) -> list[Figure]:
    t = Timing.of(ctx)
    subject = f"{ctx.new_namespace()}.bench.ticks"
    nc = await messaging.connect(ctx.nats_url, "bench-subscriber")
    try:

        async def flat_out() -> LoadResult:
            ctx.progress(f"nats subscribe: {t.nats_messages} messages from a publisher process")
            state = {"n": 0, "first": 0.0, "last": 0.0}

            async def on_message(_msg: object) -> None:
                now = time.perf_counter()
                if state["n"] == 0:
                    state["first"] = now
                state["n"] += 1
                state["last"] = now

            sub = await nc.subscribe(
                subject, cb=on_message, pending_msgs_limit=10_000_000, pending_bytes_limit=-1
            )
            await nc.flush()
            await peers.run_to_end(
                "nats-publish", ctx.nats_url, subject, str(t.nats_messages), str(TICK_PAYLOAD), "0"
            )
            # Wait for the tail to arrive (or stop arriving).
            seen = -1
            while state["n"] != seen and state["n"] < t.nats_messages:
                seen = int(state["n"])
                await asyncio.sleep(0.5)
            await sub.unsubscribe()
            received = int(state["n"])
            lost = t.nats_messages - received
            elapsed = max(state["last"] - state["first"], 1e-9)
            return LoadResult(
                "nats subscribe",
                "closed",
                elapsed,
                max(0, received - 1),
                [],
                {"lost (slow consumer)": lost} if lost else {},
                concurrency=1,
            )

        async def paced() -> LoadResult:
            rate = 1000.0
            ctx.progress(f"nats subscribe: message age at {rate:g}/s")
            samples = Samples("nats age")
            skip_until = time.time_ns() + int((t.warmup + 0.3) * 1e9)  # the publisher's start-up too

            async def on_message(msg: object) -> None:
                sent = peers.stamp_of(msg.data)  # type: ignore[attr-defined]
                if sent >= skip_until:
                    samples.add(age_ms(sent))

            sub = await nc.subscribe(subject, cb=on_message)
            await nc.flush()
            count = int(rate * (t.warmup + 0.3 + t.latency_duration))
            await peers.run_to_end(
                "nats-publish", ctx.nats_url, subject, str(count), str(TICK_PAYLOAD), str(rate)
            )
            await asyncio.sleep(0.2)
            await sub.unsubscribe()
            result = samples.result(window_s=t.latency_duration)
            result.mode, result.offered_rate = "open", rate
            return result

        throughput = await median_of(t.runs, flat_out)
        latency = await median_of(t.runs, paced)
    finally:
        await nc.close()
    return baseline_figures(
        BASELINE_NATS_SUBSCRIBE,
        throughput,
        latency,
        unit="msgs/s",
        note=f"core NATS subscriber doing no work, {TICK_PAYLOAD}-byte messages from a publisher process; latency = age at receipt at 1,000 msgs/s",
    )


# --- bare paths at a target's rate ------------------------------------------------------------
def open_loop_figures(baseline: str, result: LoadResult, *, unit: str, note: str) -> list[Figure]:
    """A baseline measured in an open loop: its achieved rate and its latency at that rate."""
    return result.figures(_stem(baseline), throughput_unit=unit, note=note)


async def _at_rate(ctx: BenchContext, t: Timing, op: Operation, rate: float, label: str) -> LoadResult:
    return await open_loop(
        op, rate=rate, duration=t.duration, warmup=t.warmup, label=label, progress=ctx.progress
    )


async def grpc_pg_at_rate(ctx: BenchContext) -> list[Figure]:
    t = Timing.of(ctx)
    url = await ctx.new_database()
    conn = await asyncpg.connect(db.asyncpg_dsn(url))
    try:
        await conn.execute(peers.PG_TXN_TABLE)
    finally:
        await conn.close()
    port = free_port()
    async with (
        peers.running("grpc-pg", str(port), db.asyncpg_dsn(url)),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch,
    ):
        call = ch.unary_unary(
            peers.UNARY_METHOD,
            request_serializer=wrappers_pb2.BytesValue.SerializeToString,
            response_deserializer=wrappers_pb2.BytesValue.FromString,
        )

        async def ledger_call(i: int) -> None:
            await call(wrappers_pb2.BytesValue(value=str(peers.pg_txn_row(i)).encode()), timeout=10)

        result = await median_of(
            t.runs,
            lambda: _at_rate(
                ctx, t, ledger_call, FUNDS_BLOCK_HALF_RATE, f"grpc + pg txn at {FUNDS_BLOCK_HALF_RATE:g}/s"
            ),
        )
    return open_loop_figures(
        BASELINE_GRPC_PG_AT_RATE,
        result,
        unit="ops/s",
        note=f"open loop at {FUNDS_BLOCK_HALF_RATE:g}/s: grpc.aio unary call into its own process, whose "
        "handler runs BEGIN; conditional UPDATE of one row of 10,000; COMMIT (fsync on)",
    )


async def jetstream_pg_at_rate(ctx: BenchContext) -> list[Figure]:
    t = Timing.of(ctx)
    url = await ctx.new_database()
    conn = await asyncpg.connect(db.asyncpg_dsn(url))
    namespace = ctx.new_namespace()
    stream = f"{namespace.upper()}_BENCH_SETTLE"
    subject = f"{namespace}.bench.settle"
    nc = await messaging.connect(ctx.nats_url, "bench-jetstream-pg")
    js = nc.jetstream()
    payload = b"x" * PAYLOAD
    counter = iter(range(1 << 62))
    try:
        await conn.execute(peers.PG_SETTLED_TABLE)
        await js.add_stream(
            StreamConfig(
                name=stream, subjects=[f"{subject}.>"], storage=StorageType.FILE, duplicate_window=120.0
            )
        )
        async with peers.running("jetstream-pg", ctx.nats_url, stream, f"{subject}.>", db.asyncpg_dsn(url)):

            async def run() -> LoadResult:
                messages = Completions("jetstream → pg")

                async def publish(_i: int) -> None:
                    msg_id = f"s-{next(counter)}"
                    messages.sending(msg_id)
                    await js.publish(f"{subject}.x", payload, headers={messaging.MSG_ID_HEADER: msg_id})

                published = await _at_rate(
                    ctx, t, publish, FUNDS_SETTLE_HALF_RATE, f"jetstream → pg at {FUNDS_SETTLE_HALF_RATE:g}/s"
                )
                await messages.wait(lambda: conn.fetchval("SELECT count(*) FROM bench_settled"), timeout=30)
                rows = await conn.fetch("SELECT id, settled_at FROM bench_settled")
                await conn.execute("TRUNCATE bench_settled")
                return messages.result(
                    published, {r["id"]: r["settled_at"].timestamp() for r in rows}, missing="not written"
                )

            result = await median_of(t.runs, run)
        await js.delete_stream(stream)
    finally:
        await nc.close()
        await conn.close()
    return open_loop_figures(
        BASELINE_JETSTREAM_PG_AT_RATE,
        result,
        unit="msgs/s",
        note=f"open loop at {FUNDS_SETTLE_HALF_RATE:g}/s: JetStream publish awaiting its ack → durable pull "
        "consumer in its own process → one PostgreSQL transaction per fetched batch, one row per "
        "message → ack; latency = intended publish time → the row's insert time",
    )


# --- HTTP -------------------------------------------------------------------------------------
async def http_echo(ctx: BenchContext) -> list[Figure]:
    t = Timing.of(ctx)
    port = free_port()
    body = {
        "symbol": "INFY",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": 10,
        "limitPrice": "1500.05",
        "pad": "x" * 80,
    }
    async with (
        peers.running("http-echo", str(port)),
        clients.session(f"http://127.0.0.1:{port}", connections=SATURATION_CONCURRENCY) as http,
    ):

        async def echo(_i: int) -> None:
            async with http.post(peers.HTTP_ECHO_PATH, json=body) as response:
                await clients.expect(response, 200)

        throughput, latency = await saturation_and_latency(ctx, t, echo, "http echo")
    return baseline_figures(
        BASELINE_HTTP_ECHO,
        throughput,
        latency,
        unit="ops/s",
        note="uvicorn + starlette JSON echo in its own process, aiohttp client with keep-alive",
    )


async def sse_memory(ctx: BenchContext) -> list[Figure]:
    streams = 200 if ctx.quick else 1000
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tls_dir:
        ca = tls.ensure(Path(tls_dir)).ca
        for name, tls_args in ((BASELINE_SSE_MEMORY, [tls_dir]), (BASELINE_SSE_MEMORY_PLAINTEXT, [])):
            port = free_port()
            ssl_context = tls.client_context(ca) if tls_args else None
            ctx.progress(f"{name}: {streams} streams")
            async with peers.running("sse-hold", str(port), *tls_args) as process:
                growth = await _stream_memory(psutil.Process(process.pid), port, ssl_context, streams)
            figures.append(
                Figure(
                    name,
                    growth / 1024 / streams,
                    "KB",
                    "lower",
                    note=f"RSS growth of a bare uvicorn + uvloop process over {streams} open event streams"
                    + (" (TLS as the gateway's listener)" if tls_args else " (plain text)"),
                )
            )
    return figures


async def _stream_memory(
    server: psutil.Process, port: int, ssl_context: ssl.SSLContext | None, streams: int
) -> int:
    """RSS growth of `server` while `streams` more streams open, each past its first event
    (after 50 that warm it up)."""
    loop = asyncio.get_running_loop()

    class Reader(asyncio.Protocol):
        def __init__(self) -> None:
            self.first: asyncio.Future[None] = loop.create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport.write(b"GET /prices HTTP/1.1\r\nHost: bench\r\n\r\n")  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            if not self.first.done():
                self.first.set_result(None)

    gate = asyncio.Semaphore(50)

    async def open_one() -> asyncio.BaseTransport:
        async with gate:
            transport, reader = await loop.create_connection(
                Reader,
                "127.0.0.1",
                port,
                ssl=ssl_context,
                server_hostname="localhost" if ssl_context else None,
            )
            await asyncio.wait_for(reader.first, 30)
            return transport

    held = list(await asyncio.gather(*(open_one() for _ in range(50))))
    try:
        await asyncio.sleep(1.0)
        before = server.memory_info().rss
        held += await asyncio.gather(*(open_one() for _ in range(streams)))
        await asyncio.sleep(2.0)
        return int(server.memory_info().rss - before)
    finally:
        for transport in held:
            transport.close()


SCENARIOS = [
    Scenario(
        "baselines.grpc_unary",
        "bare grpc.aio unary echo: throughput at saturation, latency alone",
        grpc_unary,
    ),
    Scenario(
        "baselines.grpc_stream",
        "bare grpc.aio server stream: messages/s on one stream, message age",
        grpc_stream,
    ),
    Scenario("baselines.pg_txn", "bare PostgreSQL single-row transaction from asyncpg", pg_txn),
    Scenario("baselines.jetstream_publish", "bare JetStream publish awaiting each ack", jetstream_publish),
    Scenario(
        "baselines.nats_subscribe", "bare core NATS subscriber: messages/s, message age", nats_subscribe
    ),
    Scenario("baselines.http_echo", "bare uvicorn + starlette JSON echo over aiohttp", http_echo),
    Scenario(
        "baselines.sse_memory",
        "bare uvicorn holding event streams: memory per stream, TLS and plain",
        sse_memory,
    ),
    Scenario(
        "baselines.grpc_pg_at_rate",
        f"bare gRPC call running one PostgreSQL transaction, open loop at {FUNDS_BLOCK_HALF_RATE:g}/s",
        grpc_pg_at_rate,
    ),
    Scenario(
        "baselines.jetstream_pg_at_rate",
        f"bare JetStream publish → pull consumer → PostgreSQL transaction, open loop at {FUNDS_SETTLE_HALF_RATE:g}/s",
        jetstream_pg_at_rate,
    ),
]
