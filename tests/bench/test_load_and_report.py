"""The load generator and the report's arithmetic: percentiles, open-loop honesty, ratios,
targets and scenario selection. Assertions on timing are lower bounds only: a slow machine
can make latencies larger, never smaller."""

from __future__ import annotations

import asyncio
import itertools
import math
import time

import pytest

from bench import harness, load, report
from bench.api import BASELINE_GRPC_UNARY, Figure, Scenario


def test_percentiles_are_exact_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert load.percentile(values, 50) == 50
    assert load.percentile(values, 90) == 90
    assert load.percentile(values, 99) == 99
    assert load.percentile(values, 99.9) == 100
    assert load.percentile(values, 0) == 1
    assert load.percentile([7.0], 99.9) == 7
    assert math.isnan(load.percentile([], 50))
    result = load.LoadResult("x", "closed", 2.0, 4, [4.0, 1.0, 3.0, 2.0])
    assert result.latencies_ms == [1.0, 2.0, 3.0, 4.0]
    assert result.rate == 2.0
    assert result.percentiles == {"p50": 2.0, "p90": 4.0, "p99": 4.0, "p99_9": 4.0}


async def test_open_loop_charges_a_stall_to_every_operation_due_during_it() -> None:
    """At 200/s, a 300 ms stall of the whole client (the event loop blocked, as in a GC pause)
    holds up the ~60 operations due during it: they are sent late, in a burst. Measured from
    when they were sent they would look fast; measured from when they were due they are slow."""

    async def op(i: int) -> None:
        if i == 0:
            time.sleep(0.3)  # noqa: ASYNC251 - the stall under test blocks the loop on purpose

    result = await load.open_loop(op, rate=200, duration=1.0, warmup=0.0)
    # Which operations are due inside the window does not depend on the machine's speed.
    assert abs(result.ok + result.error_count - 200) <= 1
    assert result.error_count == 0
    slow = [v for v in result.latencies_ms if v >= 100.0]
    assert len(slow) >= 35, len(slow)  # everything due in the first 200 ms waited ≥ 100 ms
    assert result.max_ms >= 280.0
    assert result.percentiles["p90"] >= 100.0


async def test_failures_are_counted_by_kind_and_kept_out_of_latencies() -> None:
    async def op(i: int) -> None:
        if i % 4 == 0:
            raise ValueError("no")

    result = await load.open_loop(op, rate=400, duration=0.5, warmup=0.1)
    assert result.errors.get("ValueError", 0) >= 40
    assert abs(result.ok + result.error_count - 200) <= 1
    figures = {f.name: f for f in result.figures("t.op", baseline=BASELINE_GRPC_UNARY)}
    assert set(figures) == {
        "t.op.throughput",
        "t.op.p50",
        "t.op.p90",
        "t.op.p99",
        "t.op.p99_9",
        "t.op.errors",
    }
    assert figures["t.op.errors"].value == result.error_count
    assert "ValueError" in figures["t.op.errors"].note
    assert len(figures["t.op.p50"].samples) == result.ok


async def test_closed_loop_keeps_its_workers_busy_and_median_of_takes_medians() -> None:
    in_flight, peak = 0, 0

    async def op(_i: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1

    result = await load.median_of(3, lambda: load.closed_loop(op, concurrency=8, duration=0.4, warmup=0.1))
    assert peak == 8
    assert result.runs == 3
    assert result.ok > 0
    assert result.percentiles["p50"] >= 5.0  # every call sleeps 5 ms


def _outcome(name: str, *figures: Figure) -> report.Outcome:
    return report.Outcome(name, name, list(figures))


def test_ratios_compare_throughput_with_throughput_and_latency_with_the_same_percentile() -> None:
    baselines = _outcome(
        "baselines.grpc_unary",
        Figure(BASELINE_GRPC_UNARY, 4000.0, "ops/s"),
        Figure("baseline.grpc_unary_echo.p50", 0.5, "ms", "lower"),
        Figure("baseline.grpc_unary_echo.p99", 2.0, "ms", "lower"),
    )
    scenario = _outcome(
        "orders.grpc",
        Figure(
            "orders.place.throughput", 1000.0, "ops/s", target=">= 500 ops/s", baseline=BASELINE_GRPC_UNARY
        ),
        Figure("orders.place.p99", 40.0, "ms", "lower", target="< 150 ms", baseline=BASELINE_GRPC_UNARY),
        Figure("orders.place.mean", 0.01, "s", "lower", target="< 5 ms", baseline=BASELINE_GRPC_UNARY),
        Figure("orders.place.errors", 3.0, "count", "lower", target="0"),
    )
    rows = {r.figure.name: r for r in report.rows_of([baselines, scenario])}
    assert rows["orders.place.throughput"].ratio == pytest.approx(0.25)
    assert rows["orders.place.throughput"].target_met is True
    assert rows["orders.place.p99"].ratio == pytest.approx(20.0)  # 40 ms ÷ the baseline's p99
    assert rows["orders.place.p99"].target_met is True
    assert rows["orders.place.mean"].ratio == pytest.approx(20.0)  # 10 ms ÷ the baseline's p50
    assert rows["orders.place.mean"].target_met is False  # units converted: 10 ms is not < 5 ms
    assert rows["orders.place.errors"].ratio is None
    assert rows["orders.place.errors"].target_met is None  # not a comparison it can read
    text = report.table([baselines, scenario])
    assert "0.25× grpc_unary_echo" in text
    assert "NO" in text


def test_selection_by_name_prefix_module_and_glob_brings_the_baselines_along() -> None:
    async def nothing(_ctx: object) -> list[Figure]:
        return []

    modules = {
        "baselines": [Scenario("baselines.a", "", nothing), Scenario("baselines.b", "", nothing)],
        "orders_e2e": [
            Scenario("orders.grpc", "", nothing),
            Scenario("orders.rest", "", nothing, in_quick=False),
        ],
        "sse": [Scenario("sse.fanout", "", nothing)],
    }

    def names(patterns: list[str], *, quick: bool = False, baselines: bool = True) -> list[str]:
        return [s.name for _, s in harness.select(modules, patterns, quick=quick, baselines=baselines)]

    assert names(["orders"]) == ["baselines.a", "baselines.b", "orders.grpc", "orders.rest"]
    assert names(["orders_e2e"], baselines=False) == ["orders.grpc", "orders.rest"]
    assert names(["*.rest", "sse"]) == ["baselines.a", "baselines.b", "orders.rest", "sse.fanout"]
    assert names(["baselines.b"]) == ["baselines.b"]
    assert names([], quick=True) == ["baselines.a", "baselines.b", "orders.grpc", "sse.fanout"]
    with pytest.raises(SystemExit):
        names(["nope"])


async def test_operations_know_their_intended_send_time() -> None:
    dues: list[float] = []

    async def op(_i: int) -> None:
        dues.append(load.due_time())
        await asyncio.sleep(0.05)  # later operations start while earlier ones are in flight

    await load.open_loop(op, rate=100, duration=0.3, warmup=0.0)
    dues.sort()
    assert len(dues) == 30
    # Due times are the schedule, not when the loop got round to sending.
    gaps = [b - a for a, b in itertools.pairwise(dues)]
    assert all(abs(gap - 0.01) < 1e-6 for gap in gaps)
