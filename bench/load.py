"""Load generation shared by every scenario: closed loop, open loop, sequential.

- **Closed loop** (`closed_loop`): N workers, each sends its next operation as soon as the
  previous one answers. It finds the saturation throughput; its latencies are what a caller
  waits under that load, not what users at a given rate would see.
- **Open loop** (`open_loop`): operations are *due* at a fixed rate whatever the system does.
  Latency runs from the intended send time, so a stall shows up in every operation that was
  due during it (no coordinated omission), and a system slower than the rate shows a growing
  latency and an achieved rate below the offered one.
- **Sequential** (`sequential`): one operation at a time; the bare latency of one call.

Every run has a warm-up that is excluded, then a measured window. Only operations that
complete inside the window count: throughput is those completions over the window, and the
percentiles are exact (nearest rank over every recorded latency; no histogram buckets).
Failures are counted by kind and never enter the latency distribution.

An operation is `async def op(i: int) -> object`; `i` numbers the calls from 0, so an operation
can derive unique idempotency keys or pick accounts from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.api import Figure

Operation = Callable[[int], Awaitable[Any]]
Progress = Callable[[str], None]

_due: contextvars.ContextVar[float] = contextvars.ContextVar("bench_load_due")


def due_time() -> float:
    """Inside an operation: when it was meant to start, on the `time.perf_counter` clock (the
    intended send time in an open loop, the actual start otherwise). Latencies an operation
    observes later, such as placed → filled on a stream, run from here."""
    return _due.get()


# The percentiles every latency figure reports, and their figure-name suffixes.
PERCENTILES: tuple[tuple[float, str], ...] = ((50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99_9"))
# Workers of a closed loop "at saturation": enough in flight to keep a Python service busy
# on a 2-core machine. Baselines and scenarios use the same number so their ratio compares
# like with like.
SATURATION_CONCURRENCY = 32
# Points of the latency distribution kept in results.json (the raw samples are not).
DISTRIBUTION_POINTS: tuple[float, ...] = (0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values: the smallest value such that at
    least p % of the values are less than or equal to it. NaN when there are none."""
    if not sorted_values:
        return math.nan
    if p <= 0:
        return sorted_values[0]
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def error_kind(error: BaseException) -> str:
    """A short, stable name for a failure: the gRPC status code, the HTTP status, or the type."""
    code = getattr(error, "code", None)
    if callable(code):
        with contextlib.suppress(Exception):
            name = getattr(code(), "name", None)
            if isinstance(name, str):
                return name
    status = getattr(error, "status", None)  # aiohttp and bench.clients errors
    if not isinstance(status, int):
        status = getattr(getattr(error, "response", None), "status_code", None)  # httpx
    if isinstance(status, int):
        return f"HTTP {status}"
    return type(error).__name__


@dataclass
class LoadResult:
    """What one load run measured (or, from `median_of`, the median of several runs)."""

    label: str
    mode: Literal["closed", "open", "sequential"]
    window_s: float  # the measured window, warm-up excluded
    ok: int  # operations that succeeded inside the window
    latencies_ms: list[float]  # of those operations, sorted
    errors: dict[str, int] = field(default_factory=dict)  # failures inside the window, by kind
    offered_rate: float | None = None  # open loop: operations due per second
    concurrency: int | None = None  # closed loop: workers
    client_cpu: float = 0.0  # this process's CPU over the window, in cores (is the client the limit?)
    runs: int = 1
    rate: float = math.nan  # successful operations per second; by default ok / window_s
    percentiles: dict[str, float] = field(default_factory=dict)  # "p50" … "p99_9" → ms
    # The measured window on the perf_counter clock: operations due (open loop) or completed
    # (closed loop) inside it are the ones counted.
    window_start: float = math.nan
    window_end: float = math.nan

    def __post_init__(self) -> None:
        self.latencies_ms.sort()
        if math.isnan(self.rate):
            self.rate = self.ok / self.window_s if self.window_s > 0 else 0.0
        if not self.percentiles:
            self.percentiles = {name: percentile(self.latencies_ms, p) for p, name in PERCENTILES}

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def max_ms(self) -> float:
        return self.latencies_ms[-1] if self.latencies_ms else math.nan

    def distribution(self) -> dict[str, float]:
        """A compact description of the latency distribution for results files."""
        return {f"p{p:g}": percentile(self.latencies_ms, p) for p in DISTRIBUTION_POINTS}

    def describe(self) -> str:
        if self.mode == "closed":
            how = f"closed loop, {self.concurrency} in flight"
        elif self.mode == "sequential":
            how = "one at a time"
        elif self.offered_rate is not None:
            how = f"open loop at {self.offered_rate:g}/s"
        else:
            how = "observed"
        runs = f", median of {self.runs} runs" if self.runs > 1 else ""
        return f"{how}, {self.window_s:g} s measured{runs}, client CPU {self.client_cpu:.2f} cores"

    def figures(
        self,
        prefix: str,
        *,
        baseline: str = "",
        targets: Mapping[str, str] | None = None,
        note: str = "",
        throughput_unit: str = "ops/s",
        latency: bool = True,
        throughput: bool = True,
    ) -> list[Figure]:
        """Figures `<prefix>.throughput`, `<prefix>.p50` … `<prefix>.p99_9` (ms) and
        `<prefix>.errors`. `targets` maps a metric ("throughput", "p99", …) to its target text.
        The raw latencies ride on the p50 figure (for plots; results.json keeps only a summary)."""
        targets = targets or {}
        how = f"{note}; {self.describe()}" if note else self.describe()
        out: list[Figure] = []
        if throughput:
            out.append(
                Figure(
                    f"{prefix}.throughput",
                    self.rate,
                    throughput_unit,
                    "higher",
                    targets.get("throughput", ""),
                    baseline,
                    how if self.offered_rate is None else f"{how}; offered {self.offered_rate:g}/s",
                )
            )
        if latency:
            for _, name in PERCENTILES:
                out.append(
                    Figure(
                        f"{prefix}.{name}",
                        self.percentiles[name],
                        "ms",
                        "lower",
                        targets.get(name, ""),
                        baseline,
                        how,
                        samples=list(self.latencies_ms) if name == "p50" else [],
                    )
                )
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        out.append(
            Figure(
                f"{prefix}.errors",
                float(self.error_count),
                "count",
                "lower",
                targets.get("errors", ""),
                "",
                kinds,
            )
        )
        return out


class _Window:
    """Collects outcomes of the operations that belong to the measured window [start, end)
    on the perf_counter clock: by completion time (closed loop) or by due time (open loop,
    so that slow answers to operations due near the end are not dropped)."""

    def __init__(self, start: float, end: float, *, by_due_time: bool = False) -> None:
        self.start = start
        self.end = end
        self.by_due_time = by_due_time
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.completed = 0  # all completions, for progress
        self.ok_completed_inside = 0  # successes completing inside the window: the achieved rate

    def record(self, started: float, done: float, error: BaseException | None) -> None:
        self.completed += 1
        if error is None and self.start <= done < self.end:
            self.ok_completed_inside += 1
        belongs = started if self.by_due_time else done
        if not self.start <= belongs < self.end:
            return
        if error is None:
            self.latencies.append((done - started) * 1000.0)
        else:
            self.errors[error_kind(error)] += 1


async def _report_progress(progress: Progress | None, label: str, window: _Window, total_s: float) -> None:
    if progress is None:
        return
    began = time.perf_counter()
    while True:
        await asyncio.sleep(1.0)
        elapsed = time.perf_counter() - began
        phase = "warm-up" if time.perf_counter() < window.start else "measuring"
        progress(f"{label}: {phase} {elapsed:.0f}/{total_s:.0f}s, {window.completed} done")


async def _call(op: Operation, i: int, due: float) -> BaseException | None:
    _due.set(due)
    try:
        await op(i)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        return error
    return None


async def closed_loop(
    op: Operation,
    *,
    concurrency: int = SATURATION_CONCURRENCY,
    duration: float = 5.0,
    warmup: float = 1.0,
    label: str = "closed loop",
    progress: Progress | None = None,
) -> LoadResult:
    """`concurrency` workers call `op` back to back for `warmup + duration` seconds."""
    counter = iter(range(1 << 62))
    start = time.perf_counter()
    window = _Window(start + warmup, start + warmup + duration)

    async def worker() -> None:
        while True:
            began = time.perf_counter()
            if began >= window.end:
                return
            error = await _call(op, next(counter), began)
            window.record(began, time.perf_counter(), error)

    cpu = _CpuMeter(window)
    reporter = asyncio.create_task(_report_progress(progress, label, window, warmup + duration))
    meter = asyncio.create_task(cpu.run())
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        reporter.cancel()
        meter.cancel()
    return LoadResult(
        label,
        "closed",
        duration,
        len(window.latencies),
        window.latencies,
        dict(window.errors),
        concurrency=concurrency,
        client_cpu=cpu.cores,
        window_start=window.start,
        window_end=window.end,
    )


async def open_loop(
    op: Operation,
    *,
    rate: float,
    duration: float = 5.0,
    warmup: float = 1.0,
    max_outstanding: int = 20_000,
    drain_timeout: float = 10.0,
    label: str = "",
    progress: Progress | None = None,
) -> LoadResult:
    """Operation k is due at `start + k / rate`; its latency runs from that moment.

    The scheduler never waits for answers. The operations due inside the window make the
    latency distribution and the error counts, however late they answer; the achieved rate
    is the successes that completed inside the window per second. Operations still
    unanswered `drain_timeout` seconds after the window are cancelled and counted as
    "unanswered"; with more than `max_outstanding` in flight, due operations are not sent
    and count as "client backlog" errors, so an overwhelmed system shows as errors and a
    growing latency, never as a silently lower rate."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    label = label or f"open loop {rate:g}/s"
    interval = 1.0 / rate
    start = time.perf_counter() + 0.01
    total = warmup + duration
    window = _Window(start + warmup, start + total, by_due_time=True)
    in_flight: dict[asyncio.Task[None], float] = {}

    async def one(i: int, due: float) -> None:
        error = await _call(op, i, due)
        window.record(due, time.perf_counter(), error)

    cpu = _CpuMeter(window)
    reporter = asyncio.create_task(_report_progress(progress, label, window, total))
    meter = asyncio.create_task(cpu.run())
    k = 0
    try:
        while True:
            due = start + k * interval
            if due >= window.end:
                break
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            # Launch everything that is due (the loop may have woken late: latency is from
            # the due time, so sending in a burst is honest).
            while due <= now and due < window.end:
                if len(in_flight) >= max_outstanding:
                    if due >= window.start:
                        window.errors["client backlog"] += 1
                else:
                    task = asyncio.create_task(one(k, due))
                    in_flight[task] = due
                    task.add_done_callback(in_flight.pop)
                k += 1
                due = start + k * interval
        if in_flight:
            _, pending = await asyncio.wait(set(in_flight), timeout=drain_timeout)
            for task in pending:
                if in_flight.get(task, 0.0) >= window.start:
                    window.errors["unanswered"] += 1
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        reporter.cancel()
        meter.cancel()
        for task in list(in_flight):
            task.cancel()
    return LoadResult(
        label,
        "open",
        duration,
        len(window.latencies),
        window.latencies,
        dict(window.errors),
        offered_rate=rate,
        client_cpu=cpu.cores,
        rate=window.ok_completed_inside / duration,
        window_start=window.start,
        window_end=window.end,
    )


async def sequential(
    op: Operation,
    *,
    duration: float = 3.0,
    warmup: float = 0.5,
    label: str = "sequential",
    progress: Progress | None = None,
) -> LoadResult:
    """One operation at a time: the latency of a single call with nothing else in flight."""
    result = await closed_loop(
        op, concurrency=1, duration=duration, warmup=warmup, label=label, progress=progress
    )
    result.mode = "sequential"
    return result


async def median_of(runs: int, measure: Callable[[], Awaitable[LoadResult]]) -> LoadResult:
    """Run `measure` `runs` times; the result holds the median throughput, the median of
    each percentile, the errors of all runs, and the latencies of the run whose throughput
    was the median (for plots)."""
    results = [await measure() for _ in range(max(1, runs))]
    if len(results) == 1:
        return results[0]
    by_rate = sorted(results, key=lambda r: r.rate)
    middle = by_rate[len(by_rate) // 2]
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    return LoadResult(
        middle.label,
        middle.mode,
        middle.window_s,
        middle.ok,
        list(middle.latencies_ms),
        dict(errors),
        offered_rate=middle.offered_rate,
        concurrency=middle.concurrency,
        client_cpu=statistics.median(r.client_cpu for r in results),
        runs=len(results),
        rate=statistics.median(r.rate for r in results),
        window_start=middle.window_start,
        window_end=middle.window_end,
        percentiles={
            name: statistics.median(
                r.percentiles[name] for r in results if not math.isnan(r.percentiles[name])
            )
            if any(not math.isnan(r.percentiles[name]) for r in results)
            else math.nan
            for _, name in PERCENTILES
        },
    )


class _CpuMeter:
    """CPU time this process spent during the measured window, in cores."""

    def __init__(self, window: _Window) -> None:
        self.window = window
        self.cores = 0.0

    async def run(self) -> None:
        now = time.perf_counter()
        if now < self.window.start:
            await asyncio.sleep(self.window.start - now)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        try:
            await asyncio.sleep(max(0.0, self.window.end - wall0))
        finally:
            wall = time.perf_counter() - wall0
            if wall > 0.05:
                self.cores = (time.process_time() - cpu0) / wall


# Streams whose every event's age is recorded; the others only count their events, so one
# load-generator process can drive thousands of streams without becoming the bottleneck.
AGE_SAMPLED_STREAMS = 200


def age_sampled(index: int, streams: int) -> bool:
    """Whether stream `index` of `streams` records its events' ages (an even spread of
    about `AGE_SAMPLED_STREAMS`)."""
    return index % max(1, streams // AGE_SAMPLED_STREAMS) == 0


def age_ms(sent_unix_ns: int, received_unix_ns: int | None = None) -> float:
    """Age in ms of something stamped with wall-clock nanoseconds (same machine, so one clock)."""
    received = time.time_ns() if received_unix_ns is None else received_unix_ns
    return (received - sent_unix_ns) / 1e6


class Samples:
    """Latencies observed rather than timed by a loop (tick ages on a stream, placed → filled
    times): record them as they arrive, then summarise over a window."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.latencies_ms: list[float] = []
        self.errors: Counter[str] = Counter()
        self.started = time.perf_counter()
        self.stopped: float | None = None

    def add(self, latency_ms: float) -> None:
        self.latencies_ms.append(latency_ms)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def reset(self) -> None:
        """Drop what was seen so far (the end of a warm-up)."""
        self.latencies_ms.clear()
        self.errors.clear()
        self.started = time.perf_counter()

    def result(self, *, window_s: float | None = None) -> LoadResult:
        window = window_s if window_s is not None else (self.stopped or time.perf_counter()) - self.started
        return LoadResult(
            self.label, "open", window, len(self.latencies_ms), list(self.latencies_ms), dict(self.errors)
        )


class Completions:
    """Open-loop operations whose completion is seen later as a wall-clock stamp written
    somewhere else (a row's insert time in the settling transaction): note each operation
    when it is sent, wait until the stamps are all there, and turn them into latencies from
    each operation's intended send time."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.sent: dict[str, tuple[float, float]] = {}  # key → (due on perf_counter, intended wall time)

    def sending(self, key: str) -> float:
        """Inside an open-loop operation: note `key` as sent; returns its intended wall time."""
        due = due_time()
        intended = time.time() - (time.perf_counter() - due)
        self.sent[key] = (due, intended)
        return intended

    async def wait(self, count: Callable[[], Awaitable[int]], *, timeout: float) -> None:
        """Until `count()` (how many stamps are written) covers everything sent, or `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await count() >= len(self.sent):
                return
            await asyncio.sleep(0.1)

    def result(self, sent: LoadResult, stamps: Mapping[str, float], *, missing: str) -> LoadResult:
        """Latencies of the operations due inside `sent`'s window (the open loop that sent
        them), from intended send time to stamp; one without a stamp counts as `missing`."""
        samples = Samples(self.label)
        for key, (due, intended) in self.sent.items():
            if not sent.window_start <= due < sent.window_end:
                continue  # warm-up
            if key in stamps:
                samples.add((stamps[key] - intended) * 1000.0)
            else:
                samples.error(missing)
        result = samples.result(window_s=sent.window_end - sent.window_start)
        result.offered_rate = sent.offered_rate
        return result
