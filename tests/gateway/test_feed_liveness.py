"""A feed outage is visible on every open price stream, SSE and gRPC alike, within 2 s, and
so is the recovery: the exchange hung (its connection open, nothing coming out), the
exchange killed, the price tracker killed. Real processes throughout: an exchange double
on FIX → svc_marketdata → NATS → gateway → SSE, and svc_marketdata's StreamQuotes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from brokermesh.marketdata.v1 import marketdata_pb2_grpc
from svc_runtime import config
from svc_runtime.auth import Signer
from svc_runtime.grpc_client import channel
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.gateway.conftest import bearer, events
from tests.marketdata.fix_exchange import ExchangeDouble
from tests.support.infra import SharedInfra

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# "Within 2 s of the last expected update": the exchange answers a probe within
# milliseconds, so its last word comes at most a probe interval before it stops.
OUTAGE_SHOWN_WITHIN = 2.0
SYMBOLS = ["INFY", "TCS"]


@dataclass
class Watched:
    """Feed states as a stream reports them: (monotonic time received, state)."""

    states: list[tuple[float, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, state: str) -> None:
        if not self.states or self.states[-1][1] != state:
            self.states.append((time.monotonic(), state))
            self.changed.set()

    async def until(self, state: str, *, timeout: float) -> float:
        """When the stream first said `state` (waiting up to `timeout` for it)."""
        async with asyncio.timeout(timeout):
            while True:
                for at, said in self.states:
                    if said == state:
                        return at
                self.changed.clear()
                await self.changed.wait()

    def reset(self) -> None:
        last = self.states[-1:]
        self.states[:] = last


async def watch_sse(url: str, auth: dict[str, str], watched: Watched) -> None:
    async with (
        httpx.AsyncClient(base_url=url, timeout=None) as client,
        client.stream(
            "GET", "/v1/marketdata/stream", params={"symbols": ",".join(SYMBOLS)}, headers=auth
        ) as r,
    ):
        assert r.status_code == 200
        async for event in events(r):
            if event.event == "feed_status":
                watched.note(event.json()["status"])


async def watch_grpc(target: str, watched: Watched, signer: Signer) -> None:
    async with channel(target, signer=signer) as ch:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(ch)
        call = stub.StreamQuotes(pb.StreamQuotesRequest(symbols=SYMBOLS, max_updates_per_second=10))
        async for response in call:
            if response.HasField("feed_status"):
                watched.note(pb.FeedStatus.State.Name(response.feed_status.state).removeprefix("STATE_"))


@dataclass
class PricePath:
    exchange: ExchangeDouble
    stack: Stack
    sse: Watched
    grpc: Watched
    tasks: list[asyncio.Task[None]]


@pytest.fixture
async def price_path(infra: SharedInfra, tmp_path: Path) -> AsyncIterator[PricePath]:
    exchange = ExchangeDouble(tmp_path / "exchange").start()
    env = {config.FIX_PORT: str(exchange.port), "BROKERMESH_MARKETDATA_INSTRUMENT_WAIT_SECONDS": "2"}
    stack = await new_stack(infra, tmp_path / "stack", ["svc_marketdata", "gateway"], env)
    await exchange.wait_subscribed()
    sse, grpc_ = Watched(), Watched()
    tasks = [
        asyncio.create_task(watch_sse(stack.plan.gateway_url, bearer(stack), sse)),
        asyncio.create_task(
            watch_grpc(stack.plan.target("svc_marketdata"), grpc_, stack.plan.service_signer("gateway"))
        ),
    ]
    path = PricePath(exchange, stack, sse, grpc_, tasks)
    try:
        for watched in (sse, grpc_):
            await watched.until("LIVE", timeout=30)
        yield path
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await stack.stop()
        with contextlib.suppress(Exception):
            path.exchange.thaw()
        path.exchange.stop()


def _reset(path: PricePath) -> None:
    path.sse.reset()
    path.grpc.reset()


async def test_a_hung_exchange_shows_as_stale_on_every_stream_and_recovers(price_path: PricePath) -> None:
    _reset(price_path)
    price_path.exchange.freeze()
    frozen = time.monotonic()
    try:
        for watched in (price_path.sse, price_path.grpc):
            at = await watched.until("STALE", timeout=10)
            assert at - frozen <= OUTAGE_SHOWN_WITHIN, watched.states
    finally:
        price_path.exchange.thaw()
    thawed = time.monotonic()
    _reset(price_path)
    for watched in (price_path.sse, price_path.grpc):
        at = await watched.until("LIVE", timeout=10)
        assert at - thawed <= OUTAGE_SHOWN_WITHIN, watched.states


async def test_a_killed_exchange_shows_as_stale_and_a_new_one_brings_the_feed_back(
    price_path: PricePath,
) -> None:
    _reset(price_path)
    old = price_path.exchange
    old.kill()
    killed = time.monotonic()
    for watched in (price_path.sse, price_path.grpc):
        at = await watched.until("STALE", timeout=10)
        assert at - killed <= OUTAGE_SHOWN_WITHIN, watched.states
    _reset(price_path)
    price_path.exchange = ExchangeDouble(old.work_dir, port=old.port).start()
    # The session reconnects (1 s back-off at first) and resubscribes.
    for watched in (price_path.sse, price_path.grpc):
        await watched.until("LIVE", timeout=30)


async def test_a_killed_price_tracker_shows_as_stale_on_the_sse_streams(price_path: PricePath) -> None:
    _reset(price_path)
    await price_path.stack.kill("svc_marketdata")
    killed = time.monotonic()
    at = await price_path.sse.until("STALE", timeout=10)
    assert at - killed <= OUTAGE_SHOWN_WITHIN, price_path.sse.states
    _reset(price_path)
    await price_path.stack.start_service("svc_marketdata")
    await price_path.sse.until("LIVE", timeout=30)
