"""Faults under load at length: the chaos test's schedule and driver (bench/chaos.py) with
many more faults (30 by default; BROKERMESH_CHAOS_FAULTS, BROKERMESH_CHAOS_SEED), on a stack
and servers of its own, since the faults include PostgreSQL and NATS.

Reports each fault's recovery time (from the fault to a read through the gateway succeeding
and svc_exec's FIX session logged on again), their median and worst per target, and the
totals: faults, acknowledged placements, orders, and what must be zero (lost, doubled,
unasked-for orders, server errors, audit violations). A run that finds anything lost or
doubled still reports its figures; the zero targets show it as not met.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter, defaultdict

from bench import chaos
from bench.api import BenchContext, Figure, Scenario

NAME = "chaos.faults_under_load"
SEED = int(os.environ.get("BROKERMESH_CHAOS_SEED", "20261207"))


def _faults(quick: bool) -> int:
    return int(os.environ.get("BROKERMESH_CHAOS_FAULTS", str(len(chaos.TARGETS) if quick else 30)))


def figures_of(outcome: chaos.ChaosOutcome) -> list[Figure]:
    seconds = [s for _, s in outcome.recoveries]
    figures = [
        Figure(f"{NAME}.faults", len(seconds), "count", note=f"seed {outcome.seed}"),
        Figure(
            f"{NAME}.recovery.p50",
            statistics.median(seconds) * 1000,
            "ms",
            better="lower",
            samples=[s * 1000 for s in seconds],
        ),
        Figure(f"{NAME}.recovery.max", max(seconds) * 1000, "ms", better="lower"),
        Figure(
            f"{NAME}.acknowledged", len(outcome.ledger.acknowledged), "count", note="placements answered 201"
        ),
        Figure(f"{NAME}.orders", len(outcome.orders), "count"),
        Figure(
            f"{NAME}.unanswered",
            outcome.ledger.unanswered,
            "count",
            better="lower",
            note="requests without a definitive answer within 60 s of retries",
        ),
    ]
    must_be_zero = {
        "lost": len(outcome.lost),
        "doubled": len(outcome.doubled),
        "unasked": len(outcome.unasked),
        "still_moving": len(outcome.moving),
        "server_errors": len(outcome.ledger.server_errors),
        "audit_violations": len(outcome.audit.violations),
        "audit_unverified": len(outcome.audit.unverified),
    }
    moving = Counter(o["status"] for o in outcome.moving)
    notes = {"still_moving": ", ".join(f"{status} {n}" for status, n in moving.items())}
    figures += [
        Figure(f"{NAME}.{name}", value, "count", better="lower", target="<= 0", note=notes.get(name, ""))
        for name, value in must_be_zero.items()
    ]
    by_target: dict[str, list[float]] = defaultdict(list)
    for target, s in outcome.recoveries:
        by_target[target].append(s * 1000)
    for target, values in sorted(by_target.items()):
        figures.append(
            Figure(
                f"{NAME}.recovery.{target}.max",
                max(values),
                "ms",
                better="lower",
                note=f"{len(values)} faults, median {statistics.median(values):.0f} ms",
            )
        )
    for n, (target, s) in enumerate(outcome.recoveries, 1):
        figures.append(Figure(f"{NAME}.recovery.fault{n:02d}_{target}", s * 1000, "ms", better="lower"))
    return figures


async def faults_under_load(ctx: BenchContext) -> list[Figure]:
    faults = _faults(ctx.quick)
    ctx.progress("starting a stack on servers of its own")
    async with chaos.chaos_stack() as stack:
        outcome = await chaos.run(stack, seed=SEED, faults=faults, progress=ctx.progress)
    return figures_of(outcome)


SCENARIOS = [
    Scenario(
        NAME,
        "kill -9 of services, the exchange, NATS and PostgreSQL and FIX cuts, under REST order load",
        faults_under_load,
        in_quick=False,
    )
]
