"""What TLS costs a gRPC call: unary echo calls per second and CPU per call (client and server
together), in plain text and over TLS, in the same run, alternating rounds.

    python -m bench.tls_cost [--seconds 5] [--rounds 3] [--concurrency 16]

The server is a separate process listening the way every brokermesh server does
(`svc_runtime.tls.add_port`), the client connects as every brokermesh client does
(`svc_runtime.grpc_client.raw_channel`), each with BROKERMESH_INSECURE_PLAINTEXT set for the
plain-text rounds. Connections are set up before measuring: the figure is the per-call cost
of encryption, not of handshakes (a channel handshakes once and then multiplexes calls).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from google.protobuf import wrappers_pb2

from svc_runtime import grpc_client, tls
from svc_runtime.infra.processes import free_port

METHOD = "/bench.TlsCost/Echo"
PAYLOAD = 256


async def _serve(port: int) -> None:
    import uvloop

    uvloop.install()

    async def echo(
        request: wrappers_pb2.BytesValue, context: grpc.aio.ServicerContext
    ) -> wrappers_pb2.BytesValue:
        return request

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        echo,
        request_deserializer=wrappers_pb2.BytesValue.FromString,
        response_serializer=wrappers_pb2.BytesValue.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.TlsCost", {"Echo": handler}),)
    )
    tls.add_port(server, f"127.0.0.1:{port}", what="bench echo server")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def _round(port: int, seconds: float, concurrency: int, server: psutil.Process) -> tuple[float, float]:
    """(calls per second, CPU microseconds per call, client + server)."""
    async with grpc_client.raw_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            METHOD,
            request_serializer=wrappers_pb2.BytesValue.SerializeToString,
            response_deserializer=wrappers_pb2.BytesValue.FromString,
        )
        payload = wrappers_pb2.BytesValue(value=b"x" * PAYLOAD)
        for _ in range(200):  # connect, warm up
            await call(payload, timeout=10)
        done = 0
        until = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < until:
                await call(payload, timeout=10)
                done += 1

        cpu_before = time.process_time() + sum(server.cpu_times()[:2])
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() + sum(server.cpu_times()[:2]) - cpu_before
    return done / elapsed, cpu / done * 1e6


def _start_server(port: int, plaintext: bool) -> subprocess.Popen[str]:
    env = {**os.environ, tls.PLAINTEXT: "1" if plaintext else "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.tls_cost", "serve", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError("the echo server did not start")
    return process


async def _measure(args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[float, float]]] = {"plain text": [], "TLS": []}
    for _ in range(args.rounds):
        for mode, rounds in results.items():
            plaintext = mode == "plain text"
            os.environ[tls.PLAINTEXT] = "1" if plaintext else "0"
            port = free_port()
            server = _start_server(port, plaintext)
            try:
                rounds.append(await _round(port, args.seconds, args.concurrency, psutil.Process(server.pid)))
            finally:
                server.terminate()
                server.wait(10)
    print(f"gRPC unary echo, {PAYLOAD}-byte messages, {args.concurrency} calls in flight, one channel;")
    print(f"median of {args.rounds} rounds of {args.seconds:g}s each, modes alternating:")
    medians = {}
    for mode, rounds in results.items():
        rate = statistics.median(r for r, _ in rounds)
        cpu = statistics.median(c for _, c in rounds)
        medians[mode] = (rate, cpu)
        every = ", ".join(f"{r:,.0f}" for r, _ in rounds)
        print(f"  {mode:<10} {rate:8,.0f} calls/s  {cpu:6.1f} µs CPU per call  (rounds: {every})")
    (plain_rate, plain_cpu), (tls_rate, tls_cpu) = medians["plain text"], medians["TLS"]
    print(
        f"  TLS costs {tls_cpu - plain_cpu:+.1f} µs CPU per call ({(tls_cpu / plain_cpu - 1) * 100:+.0f}%), "
        f"throughput {(tls_rate / plain_rate - 1) * 100:+.0f}%"
    )


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(_serve(int(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="brokermesh-tls-cost-") as scratch:
        if tls.configured() is None:
            os.environ.update(tls.ensure(Path(scratch)).env())
        asyncio.run(_measure(args))


if __name__ == "__main__":
    main()
