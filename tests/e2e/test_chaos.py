"""Faults under load: a seeded schedule kills -9 service processes, the exchange, NATS and
PostgreSQL, and cuts the FIX session, while REST clients place, modify and cancel orders at a
steady rate, retrying every unanswered request with the same idempotency key, as a careful
client does. Whatever fails, nothing is lost or doubled: every acknowledged placement is
exactly one order, no order exists that no client asked for, and the invariants hold (blocks
equal open orders, every fill settled once, the broker agrees with the exchange). Each
fault's recovery time is reported.

The schedule and its driver are bench/chaos.py, which the bench scenario `chaos` runs at
length. The schedule is reproducible: BROKERMESH_CHAOS_SEED picks it, BROKERMESH_CHAOS_FAULTS
sets its length (the suite runs one fault per target; `BROKERMESH_CHAOS_FAULTS=30` a long
one), and the figures go to the test's output.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator

import pytest

from bench import chaos

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED = int(os.environ.get("BROKERMESH_CHAOS_SEED", "20261206"))
FAULTS = int(os.environ.get("BROKERMESH_CHAOS_FAULTS", str(len(chaos.TARGETS))))


@pytest.fixture
async def chaos_stack() -> AsyncIterator[chaos.ChaosStack]:
    async with chaos.chaos_stack() as stack:
        yield stack


def test_the_short_schedule_strikes_every_target() -> None:
    assert {target for _, target in chaos.schedule(SEED, len(chaos.TARGETS))} == set(chaos.TARGETS)


# Nine faults take about four and a half minutes on a busy two-core machine (each service
# restart is a Python process starting under load), plus the stack's own start.
@pytest.mark.timeout(600)
async def test_faults_under_load_lose_and_double_nothing(chaos_stack: chaos.ChaosStack) -> None:
    began = time.monotonic()
    outcome = await chaos.run(
        chaos_stack,
        seed=SEED,
        faults=FAULTS,
        progress=lambda text: print(f"chaos: {time.monotonic() - began:6.1f}s {text}", flush=True),
    )
    print("chaos:", json.dumps(outcome.summary()))
    if "fix" in {target for target, _ in outcome.recoveries}:
        assert chaos_stack.line.cuts, "the FIX line was never cut"
    moving = [(o["orderId"], o["status"]) for o in outcome.moving]
    assert not moving, f"orders still moving after the faults: {moving[:10]}"
    assert not outcome.doubled, f"keys with more than one order: {outcome.doubled}"
    assert not outcome.unasked, f"orders no client asked for: {outcome.unasked}"
    assert not outcome.lost, f"acknowledged orders that do not exist: {outcome.lost}"
    assert not outcome.ledger.server_errors, (
        f"5xx other than 503/504 answered: {outcome.ledger.server_errors[:5]}"
    )
    assert outcome.audit.complete, outcome.audit.render()
    assert len(outcome.ledger.acknowledged) >= FAULTS, "too little load to say anything"
