"""`up --cluster` under faults: a three-node NATS JetStream cluster and two processes of every
service of ours, on one machine. While REST clients place, modify and cancel orders at a
steady rate (retrying every unanswered request with the same idempotency key), one NATS node,
then one replica of each service, then svc_exec's active replica (the FIX session's holder)
are killed with kill -9, and started again by `up`'s own supervision. Nothing is lost or
doubled, every fill is settled once (the audit), and each fault's recovery time is printed.

With replicas, a kill is not an outage: the other replica (or the NATS majority) keeps
serving, and "recovered" means the killed process is back and the whole stack ready again.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from bench import chaos

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED = 20261207
# One NATS node, a replica of each replicated service (the second: the first is as good),
# svc_marketdata's first replica (it usually holds the feed: the other takes it over),
# svc_exec's leader.
TARGETS = [
    "nats-n2",
    "svc_funds.2",
    "svc_orders.2",
    "gateway.2",
    "svc_marketdata",
    chaos.EXEC_LEADER,
]


@pytest.fixture
async def cluster() -> AsyncIterator[chaos.ChaosStack]:
    async with chaos.chaos_stack(cluster=True) as stack:
        yield stack


@pytest.mark.timeout(600)
async def test_kills_in_a_cluster_lose_and_double_nothing(cluster: chaos.ChaosStack) -> None:
    plan = cluster.stack.plan
    assert plan.target("svc_orders").startswith("ipv4:"), "the services run one process each"
    leader = await chaos.exec_leader(cluster.stack)
    began = time.monotonic()
    outcome = await chaos.run(
        cluster,
        seed=SEED,
        faults=len(TARGETS),
        targets=TARGETS,
        progress=lambda text: print(f"cluster: {time.monotonic() - began:6.1f}s {text}", flush=True),
    )
    print("cluster:", json.dumps(outcome.summary()))
    # The standby took the FIX session over from the killed leader.
    assert await chaos.exec_leader(cluster.stack) != leader
    moving = [(o["orderId"], o["status"]) for o in outcome.moving]
    assert not moving, f"orders still moving after the faults: {moving[:10]}"
    assert not outcome.doubled, f"keys with more than one order: {outcome.doubled}"
    assert not outcome.unasked, f"orders no client asked for: {outcome.unasked}"
    assert not outcome.lost, f"acknowledged orders that do not exist: {outcome.lost}"
    assert not outcome.ledger.unanswered, "a request retried with its idempotency key never succeeded"
    assert not outcome.ledger.server_errors, (
        f"5xx other than 503/504 answered: {outcome.ledger.server_errors[:5]}"
    )
    assert outcome.audit.complete, outcome.audit.render()
    assert len(outcome.ledger.acknowledged) >= len(TARGETS), "too little load to say anything"
