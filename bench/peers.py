"""Bare peers for the baselines, each its own process like a real service:

    python -m bench.peers grpc-echo PORT          gRPC unary echo and server stream (no interceptors)
    python -m bench.peers http-echo PORT          uvicorn + starlette JSON echo (the gateway's stack)
    python -m bench.peers sse-hold PORT [TLS_DIR]  uvicorn holding endless event streams (a 300-byte
                                                  event every 250 ms), over TLS with the
                                                  certificates made in TLS_DIR if given
    python -m bench.peers nats-publish URL SUBJECT COUNT SIZE RATE
                                                  core NATS publisher; RATE 0 = as fast as it can
    python -m bench.peers grpc-pg PORT DSN        gRPC unary call running one single-row
                                                  PostgreSQL transaction (`bench_accounts`)
    python -m bench.peers jetstream-pg URL STREAM SUBJECT DSN
                                                  durable pull consumer writing each fetched
                                                  batch in one PostgreSQL transaction
                                                  (`bench_settled`), acking after the commit

Servers print `ready` on stdout once listening and run until SIGTERM. Every message a peer
sends at a fixed rate starts with its wall-clock send time (8 bytes, ns), so the receiver can
measure its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

GRPC_SERVICE = "bench.Echo"
UNARY_METHOD = f"/{GRPC_SERVICE}/Unary"
STREAM_METHOD = f"/{GRPC_SERVICE}/Stream"
HTTP_ECHO_PATH = "/v1/echo"
STAMP = struct.Struct("<q")  # wall-clock ns at send


def stamped(size: int) -> bytes:
    """A payload of `size` bytes (at least 8) that starts with the current wall-clock time."""
    return STAMP.pack(time.time_ns()) + b"x" * max(0, size - STAMP.size)


def stamp_of(payload: bytes) -> int:
    return STAMP.unpack_from(payload)[0]


# --- gRPC ----------------------------------------------------------------------------------
async def _unary(request: wrappers_pb2.BytesValue, _ctx: grpc.aio.ServicerContext) -> wrappers_pb2.BytesValue:
    return wrappers_pb2.BytesValue(value=request.value)


async def _stream(
    request: wrappers_pb2.BytesValue, _ctx: grpc.aio.ServicerContext
) -> AsyncIterator[wrappers_pb2.BytesValue]:
    """`{"count": N, "rate": R, "size": B}`: N messages of B bytes, at R per second (0 = flat out)."""
    spec = json.loads(request.value)
    count, rate, size = int(spec["count"]), float(spec.get("rate", 0)), int(spec.get("size", 64))
    start = time.perf_counter()
    for k in range(count):
        if rate > 0:
            delay = start + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        yield wrappers_pb2.BytesValue(value=stamped(size))


async def _serve_grpc(port: int, methods: dict[str, grpc.RpcMethodHandler]) -> None:
    """Serve `methods` of the bare service (no interceptors) until SIGTERM."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, methods),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await _ready_then_wait_for_term()
    await server.stop(1.0)


def _bytes_unary(handler: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=wrappers_pb2.BytesValue.FromString,
        response_serializer=wrappers_pb2.BytesValue.SerializeToString,
    )


async def grpc_echo(port: int) -> None:
    stream = grpc.unary_stream_rpc_method_handler(
        _stream,
        request_deserializer=wrappers_pb2.BytesValue.FromString,
        response_serializer=wrappers_pb2.BytesValue.SerializeToString,
    )
    await _serve_grpc(port, {"Unary": _bytes_unary(_unary), "Stream": stream})


# A one-row transaction spread over many rows: the cost of a transaction, not a lock convoy.
PG_TXN_ROWS = 10_000
PG_TXN_TABLE = (
    "CREATE TABLE bench_accounts (id bigint PRIMARY KEY, balance numeric(20, 2) NOT NULL);"
    f"INSERT INTO bench_accounts SELECT g, 1000000.00 FROM generate_series(1, {PG_TXN_ROWS}) g"
)
PG_TXN_UPDATE = "UPDATE bench_accounts SET balance = balance - 1.00 WHERE id = $1 AND balance >= 1.00"
# What the jetstream-pg consumer writes: one row per message, stamped at insert.
PG_SETTLED_TABLE = "CREATE TABLE bench_settled (id text PRIMARY KEY, settled_at timestamptz NOT NULL DEFAULT clock_timestamp())"


def pg_txn_row(i: int) -> int:
    return (i * 7919) % PG_TXN_ROWS + 1


async def grpc_pg(port: int, dsn: str) -> None:
    """The bare shape of a ledger call: a gRPC unary call whose handler runs one single-row
    PostgreSQL transaction (BEGIN, UPDATE, COMMIT with fsync). The request names the row."""
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)

    async def unary(
        request: wrappers_pb2.BytesValue, _ctx: grpc.aio.ServicerContext
    ) -> wrappers_pb2.BytesValue:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(PG_TXN_UPDATE, int(request.value))
        return request

    try:
        await _serve_grpc(port, {"Unary": _bytes_unary(unary)})
    finally:
        await pool.close()


async def jetstream_pg(url: str, stream: str, subject: str, dsn: str) -> None:
    """The bare shape of settlement: svc_runtime's durable pull consumer, with the same
    batch and puller settings as svc_funds' execution-report consumer, writing one row per
    message (its Nats-Msg-Id) in one transaction per fetched batch and acking after commit."""
    import asyncpg

    from svc_funds.adapters import exec_reports
    from svc_runtime import messaging

    pool = await asyncpg.create_pool(dsn, min_size=exec_reports.PULLERS, max_size=exec_reports.PULLERS)
    nc = await messaging.connect(url, "bench-jetstream-pg")
    js = nc.jetstream()

    async def write(msgs: Any) -> None:
        ids = [m.headers[messaging.MSG_ID_HEADER] for m in msgs]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO bench_settled (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", ids
            )

    consumers = [
        messaging.DurableConsumer(
            js,
            stream=stream,
            durable="bench_jetstream_pg",
            filter_subject=subject,
            handler=write,
            batch_size=exec_reports.BATCH_SIZE,
            fetch_timeout=exec_reports.FETCH_TIMEOUT,
            linger=False,
        )
        for _ in range(exec_reports.PULLERS)
    ]
    pulling = [asyncio.create_task(c.run()) for c in consumers]
    await _ready_then_wait_for_term()
    for consumer in consumers:
        consumer.stop()
    await asyncio.gather(*pulling)
    await nc.close()
    await pool.close()


# --- HTTP ----------------------------------------------------------------------------------
async def _serve_http(server: Any) -> None:
    """Run a uvicorn server until SIGTERM, saying `ready` once it listens."""
    server.install_signal_handlers = lambda: None
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        if serving.done():
            serving.result()
    await _ready_then_wait_for_term()
    server.should_exit = True
    await serving


async def http_echo(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(await request.json())

    app = Starlette(routes=[Route(HTTP_ECHO_PATH, echo, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    await _serve_http(uvicorn.Server(config))


SSE_HOLD_EVENT = b"event: price_tick\ndata: " + b"x" * 280 + b"\n\n"


async def sse_hold(port: int, tls_dir: str = "") -> None:
    """The least an event stream can cost on the gateway's HTTP stack (uvicorn, httptools,
    uvloop, the same TLS settings): no middleware, no subscription; a stream's task and a
    wait for the client leaving, as the gateway has."""
    import uvicorn

    from svc_runtime import tls

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()  # the request (no body); the next message is the client leaving
        gone = asyncio.ensure_future(receive())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        while not gone.done():
            await send({"type": "http.response.body", "body": SSE_HOLD_EVENT, "more_body": True})
            await asyncio.wait([gone], timeout=0.25)

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="httptools",
    )
    config.load()
    if tls_dir:
        config.ssl = tls.server_context(tls.ensure(Path(tls_dir)))
    await _serve_http(uvicorn.Server(config))


# --- NATS ----------------------------------------------------------------------------------
async def nats_publish(url: str, subject: str, count: int, size: int, rate: float) -> None:
    import nats

    nc = await nats.connect(url, name="bench-publisher")
    start = time.perf_counter()
    for k in range(count):
        if rate > 0:
            delay = start + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await nc.publish(subject, stamped(size))
        if rate <= 0 and k % 2000 == 1999:
            # Let the socket drain: the client buffers without bound otherwise.
            await nc.flush()
    await nc.flush()
    await nc.close()


async def _ready_then_wait_for_term() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()


@contextlib.asynccontextmanager
async def running(
    kind: str, *args: str, ready_timeout: float = 30.0
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start a peer (`kind` as on the command line) and yield its process once it is ready;
    terminate it on exit. Publishers are not servers: use `run_to_end` for them."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.peers",
        kind,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), ready_timeout)
        if line.strip() != b"ready":
            raise RuntimeError(f"peer {kind} did not start (exit code {await process.wait()})")
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def run_to_end(kind: str, *args: str, timeout: float = 120.0) -> None:
    """Run a peer that ends by itself (a publisher) and wait for it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.peers", kind, *args, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        code = await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if code != 0:
        raise RuntimeError(f"peer {kind} exited with {code}")


def main(argv: list[str]) -> None:
    kind, *args = argv
    runners: dict[str, Any] = {
        "grpc-echo": lambda: grpc_echo(int(args[0])),
        "http-echo": lambda: http_echo(int(args[0])),
        "sse-hold": lambda: sse_hold(int(args[0]), *args[1:]),
        "nats-publish": lambda: nats_publish(args[0], args[1], int(args[2]), int(args[3]), float(args[4])),
        "grpc-pg": lambda: grpc_pg(int(args[0]), args[1]),
        "jetstream-pg": lambda: jetstream_pg(args[0], args[1], args[2], args[3]),
    }
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(runners[kind]())
    else:
        uvloop.run(runners[kind]())


if __name__ == "__main__":
    main(sys.argv[1:])
