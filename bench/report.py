"""Turning figures into a table, a JSON file, a markdown report and latency plots.

Ratios: a throughput figure is divided by its baseline's throughput (0.25 = a quarter of
what the bare hop does); a latency figure by the same percentile of its baseline's
one-at-a-time latency (40 = forty bare hops). The absolute numbers move with the machine's
load; the ratios move much less.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.api import Figure
from bench.load import DISTRIBUTION_POINTS, PERCENTILES, percentile

TIME_UNITS = {"s": 1000.0, "ms": 1.0, "µs": 0.001, "us": 0.001}
PERCENTILE_SUFFIXES = {name for _, name in PERCENTILES}


@dataclass
class Outcome:
    """One scenario's run: its figures, or why it failed."""

    name: str
    description: str
    figures: list[Figure] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""  # the traceback
    summary: str = ""  # the error in one line


@dataclass
class Row:
    """A figure with everything the outputs show beside it."""

    scenario: str
    figure: Figure
    baseline_value: float | None = None
    baseline_unit: str = ""
    ratio: float | None = None
    target_met: bool | None = None


def is_rate(unit: str) -> bool:
    return unit.endswith("/s")


def to_ms(value: float, unit: str) -> float | None:
    factor = TIME_UNITS.get(unit)
    return None if factor is None else value * factor


def latency_baseline_name(baseline: str, figure_name: str) -> str:
    """The baseline latency figure a latency figure is compared with."""
    stem = baseline.rsplit(".", 1)[0] if baseline.endswith(".throughput") else baseline
    suffix = figure_name.rsplit(".", 1)[-1]
    return f"{stem}.{suffix if suffix in PERCENTILE_SUFFIXES else 'p50'}"


def compare(figure: Figure, by_name: dict[str, Figure]) -> tuple[float | None, str, float | None]:
    """(baseline value, its unit, ratio) for a figure that names a baseline."""
    if not figure.baseline or math.isnan(figure.value):
        return None, "", None
    if is_rate(figure.unit):
        base = by_name.get(figure.baseline)
        if base is None or not base.value or math.isnan(base.value):
            return None, "", None
        return base.value, base.unit, figure.value / base.value
    value_ms = to_ms(figure.value, figure.unit)
    if value_ms is None:
        return None, "", None
    base = by_name.get(latency_baseline_name(figure.baseline, figure.name))
    if base is None:
        return None, "", None
    base_ms = to_ms(base.value, base.unit)
    if not base_ms or math.isnan(base_ms):
        return None, "", None
    return base.value, base.unit, value_ms / base_ms


_TARGET = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*([0-9][0-9,_]*(?:\.[0-9]+)?)\s*([^\s(]*)")


def target_met(figure: Figure) -> bool | None:
    """Whether the figure meets a target written like `>= 2000 ops/s` or `< 150 ms`; None
    when there is no target or it cannot be read."""
    match = _TARGET.match(figure.target)
    if not match or math.isnan(figure.value):
        return None
    op, number, unit = match.group(1), float(match.group(2).replace(",", "").replace("_", "")), match.group(3)
    value = figure.value
    if unit and unit != figure.unit:
        ours, theirs = to_ms(value, figure.unit), to_ms(number, unit)
        if ours is None or theirs is None:
            return None
        value, number = ours, theirs
    return {
        "<": value < number,
        "<=": value <= number,
        "≤": value <= number,
        ">": value > number,
        ">=": value >= number,
        "≥": value >= number,
    }[op]


def rows_of(outcomes: Iterable[Outcome]) -> list[Row]:
    outcomes = list(outcomes)
    by_name = {f.name: f for o in outcomes for f in o.figures}
    rows = []
    for outcome in outcomes:
        for figure in outcome.figures:
            base, base_unit, ratio = compare(figure, by_name)
            rows.append(Row(outcome.name, figure, base, base_unit, ratio, target_met(figure)))
    return rows


# --- formatting ---------------------------------------------------------------------------
def number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude == 0:
        return "0"
    return f"{value:.3g}"


def ratio_text(row: Row) -> str:
    if row.ratio is None:
        return ""
    short = row.figure.baseline.removeprefix("baseline.").removesuffix(".throughput")
    return f"{number(row.ratio)}× {short}"


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[met]


def table(outcomes: list[Outcome]) -> str:
    """The terminal table: one block per scenario."""
    rows = rows_of(outcomes)
    headers = ("figure", "value", "unit", "target", "met", "vs baseline")
    lines_data: list[tuple[str, ...] | str] = []
    by_scenario: dict[str, list[Row]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, []).append(row)
    for outcome in outcomes:
        lines_data.append(
            f"{outcome.name} ({outcome.seconds:.0f}s)"
            + (f"  FAILED: {outcome.summary or first_line(outcome.error)}" if outcome.error else "")
        )
        for row in by_scenario.get(outcome.name, []):
            f = row.figure
            lines_data.append(
                (f.name, number(f.value), f.unit, f.target, met_text(row.target_met), ratio_text(row))
            )
    widths = [len(h) for h in headers]
    for item in lines_data:
        if isinstance(item, tuple):
            widths = [max(w, len(c)) for w, c in zip(widths, item, strict=True)]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(
            (c.rjust(w) if i == 1 else c.ljust(w)) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [fmt(headers), "  ".join("-" * w for w in widths)]
    for item in lines_data:
        out.append(fmt(item) if isinstance(item, tuple) else f"[{item}]")
    return "\n".join(out)


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# --- JSON ---------------------------------------------------------------------------------
def figure_record(row: Row) -> dict[str, Any]:
    f = row.figure
    record: dict[str, Any] = {
        "name": f.name,
        "scenario": row.scenario,
        "value": None if math.isnan(f.value) else f.value,
        "unit": f.unit,
        "better": f.better,
        "target": f.target,
        "target_met": row.target_met,
        "baseline": f.baseline,
        "baseline_value": row.baseline_value,
        "baseline_unit": row.baseline_unit,
        "ratio": row.ratio,
        "note": f.note,
    }
    if f.samples:
        ordered = sorted(f.samples)
        record["samples"] = len(ordered)
        record["distribution_ms"] = {f"p{p:g}": percentile(ordered, p) for p in DISTRIBUTION_POINTS}
    return record


def results_document(outcomes: list[Outcome], run: dict[str, Any]) -> dict[str, Any]:
    rows = rows_of(outcomes)
    return {
        "schema": 1,
        **run,
        "scenarios": [
            {
                "name": o.name,
                "description": o.description,
                "seconds": o.seconds,
                "error": o.summary or first_line(o.error) or None,
                "traceback": o.error or None,
            }
            for o in outcomes
        ],
        "figures": [figure_record(r) for r in rows],
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n")


# --- plots --------------------------------------------------------------------------------
def plot_scenario(outcome: Outcome, directory: Path) -> Path | None:
    """Latency distributions of a scenario's figures that carry samples: a histogram and the
    percentile spectrum (x: 1/(1 − q), so the tail gets the room it deserves)."""
    series = [(f.name.rsplit(".", 1)[0], sorted(f.samples)) for f in outcome.figures if len(f.samples) >= 2]
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (hist_ax, spec_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    low = max(1e-3, min(s[0] for _, s in series if s[0] > 0) if any(s[0] > 0 for _, s in series) else 1e-3)
    high = max(s[-1] for _, s in series)
    bins = np.logspace(math.log10(low), math.log10(max(high, low * 1.01)), 60)
    for label, values in series:
        hist_ax.hist(values, bins=bins, histtype="step", label=f"{label} (n={len(values):,})")
        n = len(values)
        q = (np.arange(1, n + 1) - 0.5) / n
        spec_ax.plot(1.0 / (1.0 - q), values, label=label)
    hist_ax.set_xscale("log")
    hist_ax.set_xlabel("latency (ms)")
    hist_ax.set_ylabel("count")
    hist_ax.set_title("histogram")
    spec_ax.set_xscale("log")
    spec_ax.set_yscale("log")
    ticks = [2, 10, 100, 1000, 10000]
    spec_ax.set_xticks(ticks, ["p50", "p90", "p99", "p99.9", "p99.99"])
    spec_ax.set_xlabel("percentile")
    spec_ax.set_ylabel("latency (ms)")
    spec_ax.set_title("latency by percentile")
    spec_ax.grid(True, which="both", alpha=0.3)
    hist_ax.legend(fontsize="small")
    spec_ax.legend(fontsize="small")
    fig.suptitle(outcome.name)
    fig.tight_layout()
    path = directory / f"{outcome.name.replace('/', '_')}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --- markdown -----------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(outcomes: list[Outcome], run: dict[str, Any], plots: dict[str, Path]) -> str:
    rows = rows_of(outcomes)
    machine = run.get("machine", {})
    lines = [
        f"# brokermesh benchmark, {run.get('started_at', '')}",
        "",
        f"- command: `{run.get('command', '')}`" + (" (quick mode)" if run.get("quick") else ""),
        f"- git commit: `{machine.get('git', {}).get('commit', '?')}`"
        + (" (uncommitted changes)" if machine.get("git", {}).get("dirty") else ""),
        f"- machine: {machine.get('cpu_model', '?')}, {machine.get('cpus', '?')} CPUs, "
        f"{machine.get('memory_gib', '?')} GiB, {machine.get('os', '?')}, Python {machine.get('python', '?')}",
        f"- load average at start / end: {machine.get('load_average_start', '?')} / {run.get('load_average_end', '?')}",
        f"- took {run.get('seconds', 0):.0f} s",
        "",
        "Ratios: throughput ÷ the baseline's throughput; latency ÷ the same percentile of the "
        "baseline's one-at-a-time latency. They survive a noisy machine better than the absolute numbers.",
        "",
    ]
    targeted = [r for r in rows if r.figure.target]
    if targeted:
        lines += [
            "## Against the targets",
            "",
            "| figure | value | target | met | vs baseline |",
            "|---|---:|---|---|---|",
        ]
        for r in targeted:
            f = r.figure
            lines.append(
                f"| {f.name} | {number(f.value)} {f.unit} | {_md_escape(f.target)} | {met_text(r.target_met)} | {ratio_text(r)} |"
            )
        lines.append("")
    failed = [o for o in outcomes if o.error]
    if failed:
        lines += ["## Failed scenarios", ""]
        for o in failed:
            lines += [f"### {o.name}", "", "```", o.error.strip()[-3000:], "```", ""]
    for outcome in outcomes:
        own = [r for r in rows if r.scenario == outcome.name]
        lines += [f"## {outcome.name}", "", f"{outcome.description} ({outcome.seconds:.0f} s)", ""]
        if own:
            lines += [
                "| figure | value | unit | target | met | vs baseline | how |",
                "|---|---:|---|---|---|---|---|",
            ]
            for r in own:
                f = r.figure
                lines.append(
                    f"| {f.name} | {number(f.value)} | {f.unit} | {_md_escape(f.target)} | {met_text(r.target_met)} "
                    f"| {ratio_text(r)} | {_md_escape(f.note)} |"
                )
            lines.append("")
        if outcome.name in plots:
            lines += [f"![{outcome.name} latency]({plots[outcome.name].name})", ""]
    versions = machine.get("versions", {})
    if versions:
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())), ""]
    return "\n".join(lines)
