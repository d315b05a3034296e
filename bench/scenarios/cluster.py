"""What replication costs an order: the same REST order load on a stack as `up` runs it (one
NATS server, one process per service: R1) and as `up --cluster` runs it (a three-node
JetStream cluster keeping every stream three times, two processes per service: R3).

Each stack runs on servers of its own (the cluster's three NATS nodes are its own), and
`bench.cost` reads the CPU every process used (services, PostgreSQL, each NATS node) per
order, net of what the stack uses idle, and PostgreSQL's and JetStream's work per order. The
orders are MARKET BUYs of one share, at a fixed rate spread over a few users, each through
the gateway and then followed until filled; the readings stop once every one is.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx

from bench import chaos, cost
from bench.api import BenchContext, Figure, Scenario
from svc_runtime import admin

NAME = "cluster.order_cost"
USERS = 4
# Orders per second over all users (the OMS allows each user 10 a second).
RATE = 20.0
IDLE_SECONDS = 5.0


def _servers(stack: chaos.ChaosStack) -> dict[str, int]:
    infra = stack.infra
    pids = {}
    if infra.postgres is not None:
        pids["postgres"] = infra.postgres.process.pid
    if infra.nats is not None:
        pids["nats"] = infra.nats.process.pid
    if infra.nats_cluster is not None:
        pids |= {f"nats-n{i + 1}": h.process.pid for i, h in enumerate(infra.nats_cluster.handles) if h}
    return pids


async def _users(stack: chaos.ChaosStack) -> list[tuple[str, str]]:
    users = []
    for _ in range(USERS):
        username, password = f"cost{secrets.token_hex(5)}", "pw-" + secrets.token_hex(8)
        await admin.create_user(
            stack.stack.plan.target("svc_funds"),
            username,
            password,
            username,
            "5000000.00",
            signer=stack.stack.plan.operator_signer(),
        )
        users.append((username, password))
    return users


async def _place_and_fill(client: httpx.AsyncClient, heads: list[dict[str, str]], orders: int) -> None:
    """`orders` market buys at RATE, then until every one is in a final state."""
    started = time.monotonic()
    sends = []
    for n in range(orders):
        await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
        headers = {**heads[n % len(heads)], "Idempotency-Key": f"cost-{secrets.token_hex(8)}"}
        sends.append(
            asyncio.create_task(
                chaos.send(
                    client,
                    "POST",
                    "/v1/orders",
                    time.monotonic() + 60,
                    headers=headers,
                    json={
                        "symbol": chaos.SYMBOLS[n % len(chaos.SYMBOLS)],
                        "side": "BUY",
                        "type": "MARKET",
                        "quantity": 1,
                    },
                )
            )
        )
    answers = await asyncio.gather(*sends)
    refused = [a.status_code if a is not None else None for a in answers if a is None or a.status_code != 201]
    if refused:
        raise RuntimeError(f"{len(refused)} placements not accepted: {refused[:5]}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        everyone = [o for h in heads for o in await chaos.orders_of(client, h)]
        if all(o["status"] not in chaos.TRANSIENT for o in everyone):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("orders still moving after 60 s")


async def _measure(ctx: BenchContext, *, cluster: bool, orders: int) -> tuple[cost.Cost, dict[str, float]]:
    """The cost per order, and each process's CPU per second idle."""
    label = "R3" if cluster else "R1"
    ctx.progress(f"{label}: starting a stack on servers of its own")
    async with chaos.chaos_stack(cluster=cluster) as stack:
        users = await _users(stack)
        plan = stack.stack.plan
        trust = plan.client_ssl() or True
        async with httpx.AsyncClient(base_url=plan.gateway_url, timeout=30, verify=trust) as client:
            heads = [await chaos.login(client, *user) for user in users]
            # A first order each: connections, caches and consumers warm, outside the readings.
            await _place_and_fill(client, heads, len(heads))
            async with cost.CostMeter(stack.stack, _servers(stack)) as meter:
                ctx.progress(f"{label}: CPU with no orders")
                idle = await meter.idle(IDLE_SECONDS)
                ctx.progress(f"{label}: {orders} orders at {RATE:g}/s")
                before = await meter.before()
                await _place_and_fill(client, heads, orders)
                after = await meter.after()
        return cost.CostMeter.cost(before, after, orders), idle


async def order_cost(ctx: BenchContext) -> list[Figure]:
    orders = 100 if ctx.quick else 600
    figures: list[Figure] = []
    totals = {}
    for cluster in (False, True):
        label = "r3" if cluster else "r1"
        measured, idle = await _measure(ctx, cluster=cluster, orders=orders)
        about = (
            "3 NATS nodes, streams x3, 2 processes per service"
            if cluster
            else "1 NATS server, 1 process per service"
        )
        figures += measured.figures(f"{NAME}.{label}", f"REST market buys at {RATE:g}/s; {about}", idle)
        per_order = measured.seconds / max(measured.orders, 1)
        totals[label] = sum(ms - idle.get(name, 0.0) * per_order for name, ms in measured.cpu_ms.items())
    figures.append(
        Figure(
            f"{NAME}.r3_over_r1",
            totals["r3"] / totals["r1"] if totals["r1"] else 0.0,
            "ratio",
            better="lower",
            note=f"CPU per order net of idle, every process: R3 {totals['r3']:.1f} ms, R1 {totals['r1']:.1f} ms",
        )
    )
    return figures


SCENARIOS = [
    Scenario(
        NAME,
        "CPU, PostgreSQL and JetStream work per REST order on R1 (as `up`) beside R3 (as `up --cluster`)",
        order_cost,
        in_quick=False,
    )
]
