"""Faults under load: a seeded schedule kills -9 service processes, the exchange, NATS and
PostgreSQL while REST clients place, modify and cancel orders at a steady rate, retrying every
unanswered request with the same idempotency key, as a careful client does. Whatever dies,
nothing is lost or doubled: every acknowledged placement is exactly one order, no order exists
that no client asked for, and the invariants hold (blocks equal open orders, every fill settled
once, the broker agrees with the exchange). Each fault's recovery time is reported.

The stack runs on servers of its own (the faults include them). The schedule is reproducible:
BROKERMESH_CHAOS_SEED picks it, BROKERMESH_CHAOS_FAULTS sets its length (the suite runs a short
one; `BROKERMESH_CHAOS_FAULTS=30` a long one), and the figures go to the test's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
import simplejson

from svc_runtime import admin, audit
from svc_runtime.infra.postgres import EmbeddedPostgres
from svc_runtime.stack import SERVICE_NAMES, Infrastructure, Stack, StackPlan
from tests.support.infra import scratch_dir, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED = int(os.environ.get("BROKERMESH_CHAOS_SEED", "20261206"))
TARGETS = (*SERVICE_NAMES, "nats", "postgres")
FAULTS = int(os.environ.get("BROKERMESH_CHAOS_FAULTS", str(len(TARGETS))))
SYMBOLS = ("INFY", "TCS", "RELIANCE")
# Answers after which the same request is sent again (same key): the outcome is not known.
RETRYABLE = {409, 429, 500, 502, 503, 504}
TRANSIENT = {"FUNDS_PENDING", "PENDING_EXCHANGE", "PENDING_CANCEL", "PENDING_MODIFY"}


@dataclass
class Ledger:
    """What the clients were told."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # idempotency key -> order id
    sent: set[str] = field(default_factory=set)  # every key ever sent
    refused: Counter[str] = field(default_factory=Counter)  # definitive 4xx, by status
    unanswered: int = 0
    server_errors: list[str] = field(default_factory=list)


@pytest.fixture
async def chaos_stack() -> AsyncIterator[tuple[Stack, Infrastructure]]:
    data_dir = scratch_dir("brokermesh-chaos-")
    infra = Infrastructure(data_dir)
    await asyncio.to_thread(infra.start)
    plan = StackPlan.allocate(
        data_dir,
        infra.database_url,
        infra.nats_url,
        namespace=unique_name("c"),
        jwt_secret=secrets.token_urlsafe(48),
    )
    stack = Stack(plan)
    try:
        await stack.start()
        yield stack, infra
    finally:
        with contextlib.suppress(Exception):
            await stack.stop()
        infra.stop()
        EmbeddedPostgres(data_dir / "postgres").remove()
        shutil.rmtree(data_dir, ignore_errors=True)


async def _send(
    client: httpx.AsyncClient, method: str, url: str, deadline: float, **kwargs: Any
) -> httpx.Response | None:
    """The request, again and again with the same headers and body, until a definitive answer
    or the deadline; None if it never got one."""
    while time.monotonic() < deadline:
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.HTTPError:
            await asyncio.sleep(0.3)
            continue
        if response.status_code not in RETRYABLE:
            return response
        await asyncio.sleep(min(float(response.headers.get("Retry-After", "0.3") or 0.3), 1.0))
    return None


async def _login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await _send(
        client,
        "POST",
        "/v1/sessions",
        time.monotonic() + 60,
        json={"username": username, "password": password},
    )
    assert response is not None and response.status_code == 200, response and response.text
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


async def _trader(
    gateway: str, username: str, password: str, rng: random.Random, until: float, ledger: Ledger
) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        headers = await _login(client, username, password)
        resting: list[str] = []
        while time.monotonic() < until:
            await asyncio.sleep(rng.uniform(0.2, 0.5))
            roll = rng.random()
            deadline = time.monotonic() + 60
            if roll < 0.65 or not resting:
                key = f"chaos-{username}-{len(ledger.sent)}-{rng.randrange(1 << 30)}"
                ledger.sent.add(key)
                limit = roll < 0.4
                body: dict[str, Any] = {
                    "symbol": rng.choice(SYMBOLS),
                    "side": "BUY",
                    "type": "LIMIT" if limit else "MARKET",
                    "quantity": rng.randint(1, 3),
                }
                if limit:
                    quote = await _send(
                        client, "GET", f"/v1/quotes?symbols={body['symbol']}", deadline, headers=headers
                    )
                    if quote is None or quote.status_code != 200:
                        continue
                    quotes = quote.json()["quotes"]
                    if not quotes or quotes[0].get("ltp") is None:
                        continue
                    last = Decimal(str(quotes[0]["ltp"]))
                    tick = Decimal("0.05")
                    body["limitPrice"] = (last * Decimal("0.97") / tick).to_integral_value() * tick
                response = await _send(
                    client,
                    "POST",
                    "/v1/orders",
                    deadline,
                    headers={**headers, "Idempotency-Key": key, "Content-Type": "application/json"},
                    content=simplejson.dumps(body, use_decimal=True),
                )
            else:
                order_id = rng.choice(resting)
                action = ":cancel" if roll < 0.9 else ":modify"
                payload = {} if action == ":cancel" else {"quantity": rng.randint(4, 6)}
                key = None
                response = await _send(
                    client, "POST", f"/v1/orders/{order_id}{action}", deadline, headers=headers, json=payload
                )
                if action == ":cancel":
                    resting.remove(order_id)
            if response is None:
                ledger.unanswered += 1
                continue
            if response.status_code >= 500:
                ledger.server_errors.append(f"{response.status_code} {response.text[:200]}")
            elif response.status_code >= 400:
                ledger.refused[f"{response.status_code} {response.json().get('reason', '')}"] += 1
            elif key is not None:
                order_id = response.json()["orderId"]
                previous = ledger.acknowledged.setdefault(key, order_id)
                assert previous == order_id, f"key {key} answered {previous} and then {order_id}"
                if body["type"] == "LIMIT":
                    resting.append(order_id)


async def _kill(stack: Stack, infra: Infrastructure, target: str) -> None:
    if target == "postgres":
        assert infra.postgres is not None
        infra.postgres.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(infra.postgres.process.wait)
    elif target == "nats":
        assert infra.nats is not None
        infra.nats.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(infra.nats.process.wait)
    else:
        await stack.kill(target)


async def _restart(stack: Stack, infra: Infrastructure, target: str) -> None:
    """As `up` does: the same process again, servers on the ports their clients know; a server
    killed a moment ago may still hold its resources, so a failed start is tried again."""
    for attempt in range(20):
        try:
            if target in ("postgres", "nats"):
                await asyncio.to_thread(infra.restart, target)
            else:
                await stack.start_service(target)
            return
        except Exception:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)


async def _healthy(gateway: str, headers: dict[str, str], deadline: float) -> None:
    """Until a read that crosses the gateway, svc_orders and PostgreSQL succeeds."""
    async with httpx.AsyncClient(base_url=gateway, timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/v1/orders?pageSize=1", headers=headers)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise AssertionError("the stack did not recover")


async def _orders_of(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    token = ""
    while True:
        response = await _send(
            client,
            "GET",
            f"/v1/orders?pageSize=100&pageToken={token}",
            time.monotonic() + 60,
            headers=headers,
        )
        assert response is not None and response.status_code == 200
        page = response.json()
        orders += page["orders"]
        token = page.get("nextPageToken", "")
        if not token:
            return orders


async def test_faults_under_load_lose_and_double_nothing(chaos_stack: tuple[Stack, Infrastructure]) -> None:
    stack, infra = chaos_stack
    gateway = stack.plan.gateway_url
    rng = random.Random(SEED)
    users = []
    for _ in range(3):
        username, password = unique_name("chaos"), "pw-" + secrets.token_hex(8)
        await admin.create_user(
            stack.plan.target("svc_funds"),
            username,
            password,
            username,
            "5000000.00",
            signer=stack.plan.operator_signer(),
        )
        users.append((username, password))
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        probe_headers = await _login(client, *users[0])

    ledger = Ledger()
    # Every target once (in a seeded order), then seeded picks.
    targets = rng.sample(TARGETS, len(TARGETS)) + [rng.choice(TARGETS) for _ in range(FAULTS)]
    schedule = [(rng.uniform(2.0, 5.0), target) for target in targets[:FAULTS]]
    until = time.monotonic() + sum(pause for pause, _ in schedule) + 5 + 10 * FAULTS
    traders = [
        asyncio.create_task(_trader(gateway, name, pw, random.Random(SEED + i), until, ledger))
        for i, (name, pw) in enumerate(users)
    ]
    recoveries: list[tuple[str, float]] = []
    try:
        for pause, target in schedule:
            await asyncio.sleep(pause)
            killed = time.monotonic()
            await _kill(stack, infra, target)
            await asyncio.sleep(0.5)  # `up`'s first restart delay
            await _restart(stack, infra, target)
            await _healthy(gateway, probe_headers, time.monotonic() + 120)
            recoveries.append((target, time.monotonic() - killed))
        # The load goes on a little after the last fault, then stops.
        for task in traders:
            task.cancel()
        await asyncio.gather(*traders, return_exceptions=True)
    finally:
        for task in traders:
            task.cancel()
    for task in traders:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    # Quiet: no order is still on its way anywhere.
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        deadline = time.monotonic() + 90
        while True:
            everyone = []
            for name, pw in users:
                everyone += await _orders_of(client, await _login(client, name, pw))
            moving = [o for o in everyone if o["status"] in TRANSIENT]
            if not moving or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    assert not moving, (
        f"orders still moving after the faults: {[(o['orderId'], o['status']) for o in moving][:10]}"
    )

    by_key = Counter(o["clientOrderId"] for o in everyone)
    doubled = {key: n for key, n in by_key.items() if n > 1}
    assert not doubled, f"keys with more than one order: {doubled}"
    unasked = [o["orderId"] for o in everyone if o["clientOrderId"] not in ledger.sent]
    assert not unasked, f"orders no client asked for: {unasked}"
    ids = {o["orderId"] for o in everyone}
    lost = {key: order for key, order in ledger.acknowledged.items() if order not in ids}
    assert not lost, f"acknowledged orders that do not exist: {lost}"
    assert not ledger.server_errors, f"5xx other than 503/504 answered: {ledger.server_errors[:5]}"

    report = await audit.run(
        stack.plan.describe(), signer=stack.plan.operator_signer("auditor"), settle_seconds=60
    )
    figures = {
        "seed": SEED,
        "faults": len(recoveries),
        "recovery_seconds": [(target, round(seconds, 2)) for target, seconds in recoveries],
        "acknowledged": len(ledger.acknowledged),
        "orders": len(everyone),
        "refused": dict(ledger.refused),
        "unanswered": ledger.unanswered,
        "statuses": dict(Counter(o["status"] for o in everyone)),
    }
    print("chaos:", json.dumps(figures))
    assert report.complete, report.render()
    assert len(ledger.acknowledged) >= FAULTS, "too little load to say anything"
