"""What a benchmark scenario is and what it reports.

A scenario module in `bench/scenarios/` exports `SCENARIOS`, a list of `Scenario`. Its `run`
receives a `BenchContext` (real PostgreSQL and NATS, a way to start stack processes) and
returns `Figure`s. Every throughput or latency figure names the same-run baseline it should
be compared with, so the ratio, which survives a noisy shared machine, is reported beside
the absolute number.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from svc_runtime.stack import Stack

# Names of the baseline figures measured in every run.
BASELINE_GRPC_UNARY = "baseline.grpc_unary_echo.throughput"
BASELINE_GRPC_STREAM = "baseline.grpc_server_stream.throughput"
BASELINE_PG_TXN = "baseline.pg_single_row_txn.throughput"
BASELINE_JS_PUBLISH = "baseline.jetstream_publish_ack.throughput"
BASELINE_NATS_SUBSCRIBE = "baseline.nats_subscribe.throughput"
# A bare uvicorn + starlette JSON echo through the same HTTP client: what REST figures compare with.
BASELINE_HTTP_ECHO = "baseline.http_echo.throughput"
# What one open event stream costs a bare uvicorn (httptools, uvloop) process, over the
# gateway's TLS and in plain text: the floor under the gateway's memory per stream.
BASELINE_SSE_MEMORY = "baseline.sse_stream_memory"
BASELINE_SSE_MEMORY_PLAINTEXT = "baseline.sse_stream_memory_plaintext"
# Each baseline also reports the latency of one call with nothing else in flight, as
# `baseline.<name>.p50` … `.p99_9` (ms). A latency figure that names a baseline above is
# compared with the same percentile of it (its p50 when the figure is not a percentile).

# Latency targets are set at a rate ("p99 < 10 ms at half that rate"). These baselines run the
# bare parts of such a path in an open loop at that rate, so a latency figure can be set
# beside what the machine's own parts take at the same load, with no service logic at all:
# - a gRPC unary call whose handler runs one single-row PostgreSQL transaction (a ledger call),
#   at the rate of svc_funds' block latency target (half of 2,000 blocks/s);
BASELINE_GRPC_PG_AT_RATE = "baseline.grpc_pg_txn_open_loop.throughput"
FUNDS_BLOCK_HALF_RATE = 1000.0
# - a JetStream publish, a durable pull consumer in another process, one PostgreSQL
#   transaction per fetched batch, ack after commit (a settlement, publish → commit), at the
#   rate of svc_funds' settlement latency target (half of 3,000 fills/s).
BASELINE_JETSTREAM_PG_AT_RATE = "baseline.jetstream_to_pg_open_loop.throughput"
FUNDS_SETTLE_HALF_RATE = 1500.0


@dataclass
class Figure:
    """One measured number."""

    name: str  # dotted: "<area>.<scenario>.<metric>", e.g. "funds.block_many_accounts.throughput"
    value: float
    unit: str  # "ops/s", "msgs/s", "ms", "µs", "MB", "count"
    better: Literal["higher", "lower"] = "higher"
    target: str = ""  # the target (bench/README.md, "Targets"), e.g. ">= 2000 ops/s"; empty if none
    baseline: str = ""  # a BASELINE_* name to report the ratio against
    note: str = ""  # how it was measured, in a few words
    samples: list[float] = field(default_factory=list)  # raw latencies (ms) for plots, optional


@dataclass
class BenchContext:
    """What a scenario gets: real infrastructure and helpers to start the stack."""

    quick: bool
    workdir: Path
    database_url: str
    nats_url: str
    new_database: Callable[[], Awaitable[str]]
    new_namespace: Callable[[], str]
    start_stack: Callable[..., Awaitable[Stack]]  # (services, extra_env=None) -> Stack
    # Shows a short status line ("open loop 200/s: 3/6s") beside the progress bar; pass it on
    # as `progress=` to the runners of `bench.load`.
    progress: Callable[[str], None] = field(default=lambda _text: None)
    # Like `start_stack`, but scenarios asking for the same services and environment get the
    # same stack, started once and stopped at the end of the run (a full stack takes a while
    # to start). Share it only where leftover state from an earlier scenario cannot skew you.
    shared_stack: Callable[..., Awaitable[Stack]] | None = None
    # The servers the harness started (PostgreSQL's postmaster, NATS): name → pid, so a
    # scenario can read their CPU time (`bench.cost`). Empty for servers it does not own.
    servers: Callable[[], dict[str, int]] = field(default=lambda: {})


@dataclass(frozen=True)
class Scenario:
    name: str  # e.g. "funds.blocks"
    description: str
    run: Callable[[BenchContext], Awaitable[list[Figure]]]
    in_quick: bool = True  # part of `--quick`
