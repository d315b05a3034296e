"""What end-to-end scenarios share: the whole stack, users with cash, logins, liveness.

The bench stack runs with the production defaults except two knobs that would otherwise
measure the wrong thing: tokens live for two hours (a full run outlasts the default 15
minutes), and one user may hold many price streams (fan-out is about streams, not users).
Order rates stay per user as in production, so order load is spread over many users.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import grpc

from bench import clients
from bench.api import BenchContext
from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from svc_runtime import admin
from svc_runtime.grpc_client import raw_channel, signing_interceptors

if TYPE_CHECKING:
    from svc_runtime.stack import Stack

STREAMS_PER_USER = "BROKERMESH_GATEWAY_STREAMS_PER_USER"
BENCH_ENV = {
    "BROKERMESH_JWT_TTL_SECONDS": "7200",
    STREAMS_PER_USER: "100000",
}
# The gateway's documented default (OpenAPI: "at most 5 concurrent streams" per user).
DEFAULT_STREAMS_PER_USER = 5
# Liquid NSE names the exchange simulator lists.
SYMBOLS = ("INFY", "TCS", "RELIANCE", "HDFCBANK", "ICICIBANK", "SBIN", "ITC", "LT")
PASSWORD = "bench-password-1"
# Set-up calls that timed out on a busy machine and are safe to repeat.
RETRIED = frozenset({grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class BenchUser:
    user_id: str
    username: str

    @property
    def parent(self) -> str:
        return f"users/{self.user_id}"


async def full_stack(ctx: BenchContext) -> Stack:
    """The whole stack, shared with the other end-to-end scenarios of this run, once the
    price tracker has the instrument master and prices (orders need a reference price)."""
    from svc_runtime.stack import SERVICE_NAMES

    start = ctx.shared_stack or ctx.start_stack
    stack = await start(SERVICE_NAMES, extra_env=BENCH_ENV)
    ctx.progress("waiting for prices")
    await wait_for_prices(stack)
    return stack


async def wait_for_prices(stack: Stack, *, timeout: float = 90.0) -> None:
    """Until svc_marketdata quotes every symbol of `SYMBOLS`."""
    deadline = time.monotonic() + timeout
    async with raw_channel(
        stack.plan.target("svc_marketdata"),
        interceptors=signing_interceptors(stack.plan.service_signer("gateway")),
    ) as channel:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        while True:
            try:
                reply = await stub.BatchGetQuotes(
                    marketdata_pb2.BatchGetQuotesRequest(symbols=SYMBOLS), timeout=5
                )
                if all(q.last_price.value for q in reply.quotes) and len(reply.quotes) == len(SYMBOLS):
                    return
                problem = f"unquoted or unknown symbols: {list(reply.unknown_symbols)}"
            except grpc.aio.AioRpcError as error:
                problem = f"{error.code().name}: {error.details()}"
            assert_alive(stack)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no prices after {timeout:g}s: {problem}")
            await asyncio.sleep(0.5)


def streams_per_user(stack: Stack) -> int:
    """How many price streams one user may hold on this stack (a running stack started by
    `brokermesh up` has the production limit)."""
    return int(stack.plan.extra_env.get(STREAMS_PER_USER, DEFAULT_STREAMS_PER_USER))


def assert_alive(stack: Stack) -> None:
    """Fail loudly, with the log tail, if a service died during a measurement."""
    for name, process in stack.processes.items():
        if process.returncode is not None:
            log = stack.log_dir / f"{name}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{name} exited with {process.returncode} during the benchmark:\n{tail}")


async def create_users(
    stack: Stack, count: int, *, deposit: str = "10000000.00", concurrency: int = 8, attempts: int = 5
) -> list[BenchUser]:
    """`count` new users, each with `deposit` rupees, through the funds service's public API."""
    tag = secrets.token_hex(3)
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> BenchUser:
        username = f"b{tag}u{n}"
        for attempt in range(attempts):
            try:
                async with gate:
                    made = await admin.create_user(
                        stack.plan.target("svc_funds"),
                        username,
                        PASSWORD,
                        username,
                        deposit,
                        signer=stack.plan.operator_signer(),
                    )
                return BenchUser(made["account"]["user_id"], username)
            except grpc.aio.AioRpcError as error:
                # Password hashing is slow on a saturated machine; creating a user is
                # idempotent (keyed by the username), so a timed-out one is tried again.
                if error.code() not in RETRIED or attempt == attempts - 1:
                    raise
                await asyncio.sleep(1.0)
        raise AssertionError("unreachable")

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def login(http: aiohttp.ClientSession, user: BenchUser, *, attempts: int = 50) -> str:
    """A bearer token for `user` from `POST /v1/sessions`. Logins are rate limited per client
    address and every bench user logs in from this one: wait as `Retry-After` says, as a
    well-behaved client does; a login that timed out (503/504) is tried again."""
    for _ in range(attempts - 1):
        async with http.post(
            "/v1/sessions", json={"username": user.username, "password": PASSWORD}
        ) as response:
            if response.status == 429:
                await response.read()
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status in {503, 504}:
                # Password hashing is slow on a saturated machine: a login that timed out
                # is set-up, not a measurement, so it is tried again.
                await response.read()
                await asyncio.sleep(1.0)
                continue
            await clients.expect(response, 200, 201)
            body = await response.json()
        return str(body["accessToken"])
    async with http.post("/v1/sessions", json={"username": user.username, "password": PASSWORD}) as response:
        await clients.expect(response, 200, 201)
        body = await response.json()
    return str(body["accessToken"])


async def login_all(
    http: aiohttp.ClientSession, users: list[BenchUser], *, concurrency: int = 8
) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(user: BenchUser) -> str:
        async with gate:
            return await login(http, user)

    return list(await asyncio.gather(*(one(u) for u in users)))
