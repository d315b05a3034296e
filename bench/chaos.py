"""Faults under load, shared by the chaos test (tests/e2e/test_chaos.py, a short schedule) and
the bench scenario `chaos` (a long one).

A seeded schedule kills -9 service processes, the exchange, NATS and PostgreSQL, and cuts the
FIX order-entry session, while REST clients place, modify and cancel orders at a steady rate,
retrying every unanswered request with the same idempotency key, as a careful client does.
What dies is restarted by `up`'s own supervision (`svc_runtime.cli.supervise`: the same
process again with back-off, servers on the ports their clients know), including a service
that stopped because of the fault (crash-only: svc_exec stops when it cannot persist). Each
fault is timed until the stack has recovered: every process runs, a read across the gateway,
svc_orders and PostgreSQL succeeds and svc_exec's FIX session is logged on again.

The FIX cut is a network fault, not a process kill: svc_exec reaches the exchange's FIX
acceptor through a relay in this process (`FixLine`), which can drop every connection it
carries and refuse new ones for a moment. Both ends stay up and only the wire goes, so what
is tested is the session layer (logon again, sequence numbers, resends, the orders and reports
that were on the wire), which a process kill never reaches: a killed end loses its memory too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import simplejson

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc
from svc_runtime import admin, audit, config, grpc_client, readiness
from svc_runtime.cli import CLUSTER_NATS_NODES, CLUSTER_REPLICAS, cluster_settings, supervise
from svc_runtime.infra.postgres import EmbeddedPostgres
from svc_runtime.stack import SERVICE_NAMES, Infrastructure, Stack, StackPlan

log = logging.getLogger(__name__)
TARGETS = (*SERVICE_NAMES, "nats", "postgres", "fix")
SYMBOLS = ("INFY", "TCS", "RELIANCE")
# Answers after which the same request is sent again (same key): the outcome is not known.
RETRYABLE = {409, 429, 500, 502, 503, 504}
TRANSIENT = {"FUNDS_PENDING", "PENDING_EXCHANGE", "PENDING_CANCEL", "PENDING_MODIFY"}


class FixLine:
    """A TCP relay from svc_exec to the exchange's FIX acceptor that can be cut."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._down_until = 0.0
        self.cuts = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self, seconds: float) -> None:
        """Drop every connection now and refuse new ones for `seconds`."""
        self.cuts += 1
        self._down_until = time.monotonic() + seconds
        self._drop()

    def _drop(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._down_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:  # the exchange is down: so is the line
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._open |= pair

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()

        try:
            await asyncio.wait(
                {asyncio.create_task(pump(reader, up_writer)), asyncio.create_task(pump(up_reader, writer))},
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            # One end gone: so is the other, as over a real line.
            for end in pair:
                end.transport.abort()
            self._open -= pair


@dataclass
class Ledger:
    """What the clients were told."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # idempotency key -> order id
    sent: set[str] = field(default_factory=set)  # every key ever sent
    refused: Counter[str] = field(default_factory=Counter)  # definitive 4xx, by status
    unanswered: int = 0
    server_errors: list[str] = field(default_factory=list)
    acknowledged_at: list[float] = field(default_factory=list)  # time.monotonic() of each

    def first_acknowledged_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first placement acknowledged after it (None: none yet)."""
        return next((at - moment for at in self.acknowledged_at if at >= moment), None)


@dataclass
class ChaosStack:
    stack: Stack
    infra: Infrastructure
    line: FixLine


@contextlib.asynccontextmanager
async def chaos_stack(
    extra_env: dict[str, str] | None = None, *, cluster: bool = False
) -> AsyncIterator[ChaosStack]:
    """A whole stack on servers of its own (the faults include them), svc_exec's FIX session
    through a `FixLine`; deleted afterwards. `cluster`: as `up --cluster` runs it (a NATS
    cluster, replicas of every service)."""
    data_dir = _scratch_dir()
    infra = Infrastructure(data_dir, nats_nodes=CLUSTER_NATS_NODES if cluster else 1)
    await asyncio.to_thread(infra.start)
    plan = StackPlan.allocate(
        data_dir,
        infra.database_url,
        infra.nats_url,
        namespace=f"c{secrets.token_hex(5)}",
        jwt_secret=secrets.token_urlsafe(48),
        replicas=CLUSTER_REPLICAS if cluster else 1,
    )
    if cluster:
        cluster_settings(plan)
    plan.extra_env.update(extra_env or {})
    line = FixLine(plan.ports["exchange_sim"]["fix"])
    await line.start()
    plan.service_env["svc_exec"] = {config.FIX_PORT: str(line.port)}
    stack = Stack(plan)
    try:
        await stack.start()
        yield ChaosStack(stack, infra, line)
    finally:
        with contextlib.suppress(Exception):
            await stack.stop()
        await line.close()
        infra.stop()
        EmbeddedPostgres(data_dir / "postgres").remove()
        shutil.rmtree(data_dir, ignore_errors=True)


def _scratch_dir() -> Path:
    """Traversable by PostgreSQL's own user when run as root (mkdtemp makes it 0700)."""
    path = Path(tempfile.mkdtemp(prefix="brokermesh-chaos-"))
    path.chmod(0o711)
    return path


def schedule(seed: int, faults: int) -> list[tuple[float, str]]:
    """(pause before, target) per fault: every target once in a seeded order, then seeded picks."""
    rng = random.Random(seed)
    targets = rng.sample(TARGETS, len(TARGETS)) + [rng.choice(TARGETS) for _ in range(faults)]
    return [(rng.uniform(2.0, 5.0), target) for target in targets[:faults]]


async def send(
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


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await send(
        client,
        "POST",
        "/v1/sessions",
        time.monotonic() + 60,
        json={"username": username, "password": password},
    )
    if response is None or response.status_code != 200:
        raise AssertionError(f"login failed: {response and response.text}")
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


async def _trader(
    gateway: str, username: str, password: str, *, rng: random.Random, until: float, ledger: Ledger
) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        headers = await login(client, username, password)
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
                    quote = await send(
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
                response = await send(
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
                response = await send(
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
                ledger.acknowledged_at.append(time.monotonic())
                previous = ledger.acknowledged.setdefault(key, order_id)
                if previous != order_id:
                    raise AssertionError(f"key {key} answered {previous} and then {order_id}")
                if body["type"] == "LIMIT":
                    resting.append(order_id)


async def _kill(chaos: ChaosStack, target: str, rng: random.Random) -> None:
    infra = chaos.infra
    if target == "fix":
        chaos.line.cut(rng.uniform(0.5, 3.0))
    elif target == "postgres":
        assert infra.postgres is not None
        infra.postgres.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(infra.postgres.process.wait)
    elif target == "nats":
        assert infra.nats is not None
        infra.nats.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(infra.nats.process.wait)
    elif target.startswith("nats-n"):  # one node of a cluster
        assert infra.nats_cluster is not None
        node = infra.nats_cluster.handles[int(target.removeprefix("nats-n")) - 1]
        assert node is not None
        node.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(node.process.wait)
    elif target == EXEC_LEADER:
        await chaos.stack.kill(await exec_leader(chaos.stack))
    else:
        await chaos.stack.kill(target)


# A fault target: whichever svc_exec replica holds the FIX session.
EXEC_LEADER = "svc_exec-leader"


async def exec_leader(stack: Stack) -> str:
    """The svc_exec process that holds the FIX session (asked of each replica)."""
    for name in stack.plan.instances("svc_exec"):
        async with grpc_client.channel(
            stack.plan.instance_target(name), signer=stack.plan.operator_signer()
        ) as ch:
            status = await exec_pb2_grpc.ExecutionServiceStub(ch).GetSessionStatus(
                exec_pb2.GetSessionStatusRequest(), timeout=5
            )
        if status.active:
            return name
    raise AssertionError("no svc_exec replica holds the FIX session")


async def _recovered(chaos: ChaosStack, headers: dict[str, str], deadline: float) -> None:
    """Until every process runs again, the stack is ready as `up` means it (every service
    healthy, the FIX session logged on, …: svc_runtime/readiness.py) and a read that crosses
    the gateway, svc_orders and PostgreSQL succeeds."""
    stack = chaos.stack
    problem = ""
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=5) as client:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if chaos.infra.exited() or not all(stack.running(name) for name in stack.plan.ports):
                problem = "a process is not running"
                continue
            if problem := await readiness.missing(stack.plan):
                continue
            try:
                listed = await client.get("/v1/orders?pageSize=1", headers=headers)
            except httpx.HTTPError as error:
                problem = f"listing orders: {error!r}"
                continue
            if listed.status_code == 200:
                return
            problem = f"listing orders: {listed.status_code}"
    raise AssertionError(f"the stack did not recover: {problem}")


async def orders_of(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    orders: list[dict[str, Any]] = []
    token = ""
    while True:
        response = await send(
            client,
            "GET",
            f"/v1/orders?pageSize=100&pageToken={token}",
            time.monotonic() + 60,
            headers=headers,
        )
        if response is None or response.status_code != 200:
            raise AssertionError(f"listing orders failed: {response and response.text}")
        page = response.json()
        orders += page["orders"]
        token = page.get("nextPageToken", "")
        if not token:
            return orders


@dataclass
class ChaosOutcome:
    """What a run did and found."""

    seed: int
    recoveries: list[tuple[str, float]]  # (target, seconds from the fault to recovered)
    # (target, seconds from the fault to the next placement acknowledged to a client)
    orders_again: list[tuple[str, float | None]]
    ledger: Ledger
    orders: list[dict[str, Any]]
    moving: list[dict[str, Any]]  # orders still on their way when the run gave up waiting
    audit: audit.AuditReport
    elapsed: float

    @property
    def doubled(self) -> dict[str, int]:
        """Idempotency keys with more than one order."""
        return {key: n for key, n in Counter(o["clientOrderId"] for o in self.orders).items() if n > 1}

    @property
    def unasked(self) -> list[str]:
        """Orders no client asked for."""
        return [o["orderId"] for o in self.orders if o["clientOrderId"] not in self.ledger.sent]

    @property
    def lost(self) -> dict[str, str]:
        """Acknowledged placements (key → order id) whose order does not exist."""
        ids = {o["orderId"] for o in self.orders}
        return {key: order for key, order in self.ledger.acknowledged.items() if order not in ids}

    def summary(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "faults": len(self.recoveries),
            "recovery_seconds": [(target, round(seconds, 2)) for target, seconds in self.recoveries],
            "next_order_acknowledged_seconds": [
                (target, None if seconds is None else round(seconds, 2))
                for target, seconds in self.orders_again
            ],
            "acknowledged": len(self.ledger.acknowledged),
            "orders": len(self.orders),
            "lost": len(self.lost),
            "doubled": len(self.doubled),
            "unasked": len(self.unasked),
            "server_errors": len(self.ledger.server_errors),
            "refused": dict(self.ledger.refused),
            "unanswered": self.ledger.unanswered,
            "statuses": dict(Counter(o["status"] for o in self.orders)),
            "audit_violations": len(self.audit.violations),
            "audit_unverified": len(self.audit.unverified),
            "elapsed_seconds": round(self.elapsed, 1),
        }


async def run(
    chaos: ChaosStack,
    *,
    seed: int,
    faults: int,
    traders: int = 3,
    progress: Callable[[str], None] = lambda _text: None,
    targets: list[str] | None = None,
) -> ChaosOutcome:
    """The schedule of `seed` with `faults` faults (or `targets`, in that order, with seeded
    pauses) under the load of `traders` clients, then the count of what the clients were told
    against what exists, and the audit."""
    started = time.monotonic()
    stack = chaos.stack
    gateway = stack.plan.gateway_url
    rng = random.Random(seed)
    users = []
    for _ in range(traders):
        username, password = f"chaos{secrets.token_hex(5)}", "pw-" + secrets.token_hex(8)
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
        probe_headers = await login(client, *users[0])

    ledger = Ledger()
    plan = schedule(seed, faults)
    if targets is not None:
        plan = [
            (pause, target) for (pause, _), target in zip(schedule(seed, len(targets)), targets, strict=True)
        ]
        faults = len(plan)
    until = time.monotonic() + sum(pause for pause, _ in plan) + 5 + 10 * faults
    tasks = [
        asyncio.create_task(
            _trader(gateway, name, pw, rng=random.Random(seed + i), until=until, ledger=ledger)
        )
        for i, (name, pw) in enumerate(users)
    ]
    recoveries: list[tuple[str, float]] = []
    struck_at: list[tuple[str, float]] = []
    # What dies is started again by `up`'s own supervision (whatever died: the target, or a
    # service that stopped because of it), with its back-off.
    stopping = asyncio.Event()
    supervision = asyncio.create_task(supervise(stack, chaos.infra, stopping, say=log.info))
    try:
        for n, (pause, target) in enumerate(plan, 1):
            await asyncio.sleep(pause)
            progress(f"fault {n}/{len(plan)}: {target}")
            struck = time.monotonic()
            struck_at.append((target, struck))
            await _kill(chaos, target, rng)
            await _recovered(chaos, probe_headers, time.monotonic() + 120)
            recoveries.append((target, time.monotonic() - struck))
            progress(f"fault {n}/{len(plan)}: {target} recovered in {recoveries[-1][1]:.1f}s")
        # The load goes on a little after the last fault, then stops.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        stopping.set()
        await supervision
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    # Quiet: no order is still on its way anywhere.
    progress("waiting for quiet")
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        deadline = time.monotonic() + 90
        while True:
            everyone = []
            for name, pw in users:
                everyone += await orders_of(client, await login(client, name, pw))
            moving = [o for o in everyone if o["status"] in TRANSIENT]
            if not moving or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    progress("audit")
    report = await audit.run(
        stack.plan.describe(), signer=stack.plan.operator_signer("auditor"), settle_seconds=60
    )
    orders_again = [(target, ledger.first_acknowledged_after(at)) for target, at in struck_at]
    return ChaosOutcome(
        seed, recoveries, orders_again, ledger, everyone, moving, report, time.monotonic() - started
    )
