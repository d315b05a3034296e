"""Order placement end to end, over gRPC (`OrdersService.PlaceOrder`) and over REST
(`POST /v1/orders` through the gateway), on the whole stack: OMS, funds, executor, the
exchange simulator over FIX, and back.

Every order is a MARKET BUY of one share of a liquid symbol, spread round-robin over many
users (the OMS limits each user to 10 orders/s, as production does) who each hold plenty
of cash. Two latencies per order:

- **ack**: from the intended send time to the broker's reply (funds blocked, order written,
  command queued), the `p50 … p99.9` figures;
- **placed → filled**: from the intended send time to the moment the FILLED update arrives
  on the user's order stream (`StreamOrderUpdates` for gRPC, SSE `/v1/orders/stream` for
  REST), the `.filled.p50 …` figures. Orders that end otherwise (rejected, still open after
  the drain) count as `.filled.errors` by final state.

Load: a closed loop at saturation (`SATURATION_CONCURRENCY` in flight), then open loops at
fixed rates (50, 200, 500, 1,000 orders/s; only 50 in quick mode); a rate over 1.5× the
saturation throughput runs for a 2 s burst only, and its note says so. Between runs the
harness waits until every order placed so far has reached a final state, so each run
starts from a quiet system.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import grpc

from bench import clients, cost, fullstack, load
from bench.api import (
    BASELINE_GRPC_UNARY,
    BASELINE_HTTP_ECHO,
    BASELINE_JS_PUBLISH,
    BenchContext,
    Figure,
    Scenario,
)
from bench.fullstack import SYMBOLS, BenchUser
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import trading_pb2
from svc_runtime.grpc_client import raw_channel, signing_interceptors

if TYPE_CHECKING:
    from svc_runtime.stack import Stack

TERMINAL = {"FILLED", "CANCELLED", "REJECTED", "EXPIRED"}
# Targets (bench/README.md): order placement p99 < 150 ms; order to user notification < 1 s;
# 1,000 orders/s at peak.
ACK_TARGETS = {"p99": "< 150 ms", "errors": "<= 0"}
FILL_TARGETS = {"p99": "< 1000 ms", "errors": "<= 0"}
# Open loops beyond this multiple of the closed loop's saturation throughput run only
# `OVERLOAD_SECONDS`: enough to show how the system behaves past capacity.
OVERLOAD_LIMIT = 1.5
OVERLOAD_SECONDS = 2.0
# Picks the open-loop rates, e.g. "200" or "50,200" (default: the plan's).
RATES_ENV = "BROKERMESH_BENCH_ORDER_RATES"
# How long the stack's CPU use with no orders is measured (market makers, ticks, timers).
IDLE_SECONDS = 5.0


@dataclass(frozen=True)
class Plan:
    users: int
    warmup: float
    duration: float
    closed_runs: int
    rates: tuple[float, ...]
    drain: float  # how long to wait for the last orders of a run to finish

    @classmethod
    def of(cls, ctx: BenchContext) -> Plan:
        chosen = os.environ.get(RATES_ENV, "")
        rates = tuple(float(r) for r in chosen.split(",") if r.strip())
        if ctx.quick:
            return cls(users=40, warmup=1.0, duration=3.0, closed_runs=1, rates=rates or (50.0,), drain=20.0)
        return cls(
            users=250,
            warmup=2.0,
            duration=10.0,
            closed_runs=3,
            rates=rates or (50.0, 200.0, 500.0, 1000.0),
            drain=60.0,
        )


@dataclass
class OrderWatch:
    """What the order streams said: when each order first showed FILLED, and its last state."""

    placed_at: dict[str, float] = field(default_factory=dict)  # order id → intended send time
    filled_at: dict[str, float] = field(default_factory=dict)  # order id → receipt of FILLED
    last_status: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def placed(self, order_id: str, due: float) -> None:
        if order_id in self.placed_at:
            # The broker answered with an order placed earlier: an idempotency key was
            # reused, and this operation measured a replay, not a placement.
            raise RuntimeError(f"order {order_id} was already placed")
        self.placed_at[order_id] = due

    def update(self, order_id: str, status: str) -> None:
        now = time.perf_counter()
        self.last_status[order_id] = status
        if status == "FILLED":
            self.filled_at.setdefault(order_id, now)
        self.changed.set()

    def unfinished(self) -> int:
        return sum(1 for oid in self.placed_at if self.last_status.get(oid) not in TERMINAL)

    async def drain(self, timeout: float) -> None:
        """Until every placed order is in a final state, or `timeout`."""
        deadline = time.monotonic() + timeout
        while self.unfinished() and time.monotonic() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(1.0, max(0.01, deadline - time.monotonic())))

    def fills(self, run: load.LoadResult) -> load.LoadResult:
        """placed → filled of the orders due inside `run`'s window."""
        latencies, errors = [], Counter[str]()
        for order_id, due in self.placed_at.items():
            if not run.window_start <= due < run.window_end:
                continue
            filled = self.filled_at.get(order_id)
            if filled is not None:
                latencies.append((filled - due) * 1000.0)
            else:
                errors[f"not filled: {self.last_status.get(order_id, 'no update')}"] += 1
        return load.LoadResult(
            f"{run.label} filled",
            run.mode,
            run.window_s,
            len(latencies),
            latencies,
            dict(errors),
            offered_rate=run.offered_rate,
            concurrency=run.concurrency,
            client_cpu=run.client_cpu,
        )


Place = Callable[[int], Awaitable[None]]


async def _measure(
    ctx: BenchContext,
    *,
    stack: Stack,
    place: Place,
    watch: OrderWatch,
    plan: Plan,
    prefix: str,
    ack_baseline: str,
    note: str,
    meter: cost.CostMeter,
    idle: dict[str, float],
) -> list[Figure]:
    """The closed loop and every open-loop rate, each followed by a drain; what the orders of
    each cost the stack (`meter`), from before the run to the end of its drain."""
    figures: list[Figure] = []

    async def phase(name: str, run: Callable[[], Awaitable[load.LoadResult]], extra: str = "") -> float:
        """Run, drain, record the figures; the achieved rate."""
        what = f"{note}; {extra}" if extra else note
        before, placed = await meter.before(), len(watch.placed_at)
        result = await run()
        ctx.progress(f"{prefix}.{name}: waiting for {watch.unfinished()} orders to finish")
        await watch.drain(plan.drain)
        fullstack.assert_alive(stack)
        ctx.progress(f"{prefix}.{name}: reading what the orders cost")
        spent = meter.cost(before, await meter.after(), len(watch.placed_at) - placed)
        figures.extend(spent.figures(f"{prefix}.{name}.cost", what, idle))
        # Saturation should reach the peak target; an open loop should carry its offered rate.
        rate_target = (
            ">= 1000 ops/s" if result.offered_rate is None else f">= {0.99 * result.offered_rate:g} ops/s"
        )
        figures.extend(
            result.figures(
                f"{prefix}.{name}",
                baseline=ack_baseline,
                targets={**ACK_TARGETS, "throughput": rate_target},
                note=f"{what}; ack latency",
            )
        )
        figures.extend(
            watch.fills(result).figures(
                f"{prefix}.{name}.filled",
                baseline=BASELINE_JS_PUBLISH,
                targets=FILL_TARGETS,
                note=f"{what}; placed → FILLED on the order stream",
                throughput=False,
            )
        )
        return result.rate

    async def closed() -> load.LoadResult:
        return await load.median_of(
            plan.closed_runs,
            lambda: _drained(
                watch,
                plan,
                load.closed_loop(
                    place,
                    duration=plan.duration,
                    warmup=plan.warmup,
                    label=f"{prefix} closed",
                    progress=ctx.progress,
                ),
            ),
        )

    saturation = await phase("closed", closed)
    for rate in plan.rates:
        # Far past saturation a full-length run leaves a backlog that takes minutes to clear:
        # such a rate gets a short burst instead, enough to show what is carried and how
        # latency grows.
        overloaded = rate > OVERLOAD_LIMIT * saturation
        duration = min(plan.duration, OVERLOAD_SECONDS) if overloaded else plan.duration

        async def opened(rate: float = rate, duration: float = duration) -> load.LoadResult:
            return await load.open_loop(
                place,
                rate=rate,
                duration=duration,
                warmup=plan.warmup,
                drain_timeout=30.0,
                label=f"{prefix} open {rate:g}/s",
                progress=ctx.progress,
            )

        extra = (
            f"overload: a {duration:g} s burst, over {OVERLOAD_LIMIT:g}× the saturation "
            f"throughput ({saturation:.0f}/s)"
            if overloaded
            else ""
        )
        await phase(f"open_{rate:g}", opened, extra)
    return figures


async def _drained(watch: OrderWatch, plan: Plan, run: Awaitable[load.LoadResult]) -> load.LoadResult:
    """One closed-loop run, then wait for its orders, so repeated runs start quiet."""
    result = await run
    await watch.drain(plan.drain)
    return result


# --- gRPC ---------------------------------------------------------------------------------
async def _follow_grpc(stub: orders_pb2_grpc.OrdersServiceStub, user: BenchUser, watch: OrderWatch) -> None:
    status_name = orders_pb2.OrderStatus.Name
    while True:
        try:
            async for response in stub.StreamOrderUpdates(
                orders_pb2.StreamOrderUpdatesRequest(parent=user.parent)
            ):
                order = response.event.order
                watch.update(order.order_id, status_name(order.status).removeprefix("ORDER_STATUS_"))
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)  # the stream ended or the server restarted: follow again


# (user, idempotency key[, symbol]) → the new order id
PlaceOne = Callable[..., Awaitable[str]]


async def _prime(
    place_one: PlaceOne,
    users: list[BenchUser],
    watch: OrderWatch,
    timeout: float,
    rounds: int = 3,
) -> None:
    """One order per user, then wait until each stream has reported it: the streams are
    live and every path warm before anything is measured. A stream that connected after
    its user's order was already done never hears of it (a new stream starts live), so
    such users get another order, up to `rounds` times."""
    waiting = list(users)
    # As many at once as the closed loop keeps in flight: the OMS refuses placements past
    # its capacity (SERVER_BUSY) rather than queueing them.
    gate = asyncio.Semaphore(load.SATURATION_CONCURRENCY)

    async def prime(user: BenchUser) -> str:
        async with gate:
            return await place_one(user, f"prime-{secrets.token_hex(6)}")

    for round_ in range(1, rounds + 1):
        ids = await asyncio.gather(*(prime(u) for u in waiting))
        deadline = time.monotonic() + timeout / rounds
        for _ in range(int(timeout / rounds / 0.1) + 1):
            if all(oid in watch.last_status for oid in ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        waiting = [u for u, oid in zip(waiting, ids, strict=True) if oid not in watch.last_status]
        if not waiting:
            break
        if round_ == rounds:
            raise RuntimeError(
                f"{len(waiting)} of {len(users)} order streams reported nothing within {timeout:g}s"
            )
    await watch.drain(timeout)


def _order(symbol: str) -> orders_pb2.Order:
    return orders_pb2.Order(
        symbol=symbol, side=trading_pb2.SIDE_BUY, type=trading_pb2.ORDER_TYPE_MARKET, quantity=1
    )


async def _drive(
    ctx: BenchContext,
    *,
    stack: Stack,
    users: list[BenchUser],
    watch: OrderWatch,
    followers: list[asyncio.Task[None]],
    place_one: PlaceOne,
    prefix: str,
    ack_baseline: str,
    note: str,
) -> list[Figure]:
    """Prime the order streams, then measure `place_one` in the plan's loops; stop the
    stream followers at the end."""
    plan = Plan.of(ctx)
    run_tag = secrets.token_hex(4)
    serial = itertools.count()
    try:
        ctx.progress("priming order streams")
        await _prime(place_one, users, watch, plan.drain)

        async def place(i: int) -> None:
            due = load.due_time()
            # `i` restarts with every run: the key comes from a counter of the whole scenario.
            key = f"{run_tag}-{next(serial)}"
            order_id = await place_one(users[i % len(users)], key, SYMBOLS[i % len(SYMBOLS)])
            watch.placed(order_id, due)

        async with cost.CostMeter(stack, ctx.servers()) as meter:
            ctx.progress(f"{prefix}: the stack's CPU use with no orders")
            idle = await meter.idle(IDLE_SECONDS)
            figures = [
                Figure(
                    f"{prefix}.idle.cpu_ms_per_s.{name}",
                    ms,
                    "ms",
                    better="lower",
                    note=f"CPU per second with no orders, over {IDLE_SECONDS:g} s",
                )
                for name, ms in sorted(idle.items())
            ]
            return figures + await _measure(
                ctx,
                stack=stack,
                place=place,
                watch=watch,
                plan=plan,
                prefix=prefix,
                ack_baseline=ack_baseline,
                note=note,
                meter=meter,
                idle=idle,
            )
    finally:
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def grpc_orders(ctx: BenchContext) -> list[Figure]:
    plan = Plan.of(ctx)
    stack = await fullstack.full_stack(ctx)
    ctx.progress(f"creating {plan.users} users")
    users = await fullstack.create_users(stack, plan.users)
    watch = OrderWatch()
    async with raw_channel(
        stack.plan.target("svc_orders"),
        interceptors=signing_interceptors(stack.plan.service_signer("gateway")),
    ) as channel:
        stub = orders_pb2_grpc.OrdersServiceStub(channel)

        async def place_one(user: BenchUser, key: str, symbol: str = SYMBOLS[0]) -> str:
            order = await stub.PlaceOrder(
                orders_pb2.PlaceOrderRequest(parent=user.parent, order=_order(symbol), request_id=key),
                timeout=30,
            )
            return order.order_id

        return await _drive(
            ctx,
            stack=stack,
            users=users,
            watch=watch,
            followers=[asyncio.create_task(_follow_grpc(stub, u, watch)) for u in users],
            place_one=place_one,
            prefix="orders.grpc",
            ack_baseline=BASELINE_GRPC_UNARY,
            note=f"gRPC PlaceOrder, MARKET BUY 1 share, {plan.users} users",
        )


# --- REST ---------------------------------------------------------------------------------
async def _follow_sse(http: aiohttp.ClientSession, token: str, watch: OrderWatch) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    last_id: str | None = None
    while True:
        try:
            sent = dict(headers, **({"Last-Event-ID": last_id} if last_id else {}))
            async with http.get(
                "/v1/orders/stream", headers=sent, timeout=aiohttp.ClientTimeout(total=None)
            ) as response:
                await clients.expect_stream(response)
                async for event in clients.events(response):
                    last_id = event.id or last_id
                    if event.event != "order_update":
                        continue
                    order = json.loads(event.data).get("order", {})
                    watch.update(str(order.get("orderId", "")), str(order.get("status", "")))
        except (aiohttp.ClientError, clients.HttpError, TimeoutError):
            await asyncio.sleep(0.2)


async def rest_orders(ctx: BenchContext) -> list[Figure]:
    plan = Plan.of(ctx)
    stack = await fullstack.full_stack(ctx)
    ctx.progress(f"creating {plan.users} users")
    users = await fullstack.create_users(stack, plan.users)
    watch = OrderWatch()
    # Enough sockets that the client never queues requests an open loop has made due.
    async with (
        clients.session(stack.plan.gateway_url, connections=512) as http,
        clients.session(stack.plan.gateway_url, connections=len(users) + 8, timeout=None) as streams,
    ):
        ctx.progress("logging in")
        tokens = dict(zip((u.user_id for u in users), await fullstack.login_all(http, users), strict=True))

        async def place_one(user: BenchUser, key: str, symbol: str = SYMBOLS[0]) -> str:
            async with http.post(
                "/v1/orders",
                json={"symbol": symbol, "side": "BUY", "type": "MARKET", "quantity": 1},
                headers={"Authorization": f"Bearer {tokens[user.user_id]}", "Idempotency-Key": key},
            ) as response:
                body = json.loads(await clients.expect(response, 201))
            return str(body["orderId"])

        return await _drive(
            ctx,
            stack=stack,
            users=users,
            watch=watch,
            followers=[asyncio.create_task(_follow_sse(streams, tokens[u.user_id], watch)) for u in users],
            place_one=place_one,
            prefix="orders.rest",
            ack_baseline=BASELINE_HTTP_ECHO,
            note=f"REST POST /v1/orders through the gateway, MARKET BUY 1 share, {plan.users} users",
        )


SCENARIOS = [
    Scenario(
        "orders.grpc",
        "order placement over gRPC: closed loop at saturation and open loops at fixed rates; ack and placed → FILLED latency",
        grpc_orders,
    ),
    Scenario(
        "orders.rest",
        "order placement over REST through the gateway: closed loop and open loops; ack and placed → FILLED on SSE",
        rest_orders,
    ),
]
