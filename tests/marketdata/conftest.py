"""Fixtures for svc_marketdata: an exchange double on FIX, the service as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from brokermesh.marketdata.v1 import marketdata_pb2_grpc, watchlists_pb2_grpc
from svc_runtime import config
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.marketdata.fix_exchange import DEFAULT_LISTING, ExchangeDouble, Listed, synthetic_listing
from tests.support.grpc import service_channel
from tests.support.infra import SharedInfra

T = TypeVar("T")


@dataclass
class MarketDataProcess:
    """svc_marketdata running as its own process against an exchange double."""

    stack: Stack
    exchange: ExchangeDouble
    channel: grpc.aio.Channel
    quotes: marketdata_pb2_grpc.MarketDataServiceStub
    watchlists: watchlists_pb2_grpc.WatchlistServiceStub

    @property
    def log(self) -> str:
        return (self.stack.log_dir / "svc_marketdata.log").read_text(errors="replace")

    async def restart_after_kill(self) -> None:
        """Start the killed service again, on a fresh channel that is connected before it is
        used: channels with the same options share gRPC's subchannels, so the new one can
        inherit the old one's back-off from its failed connects and fail calls at once."""
        await self.stack.start_service("svc_marketdata")
        await self.channel.close()
        self.channel = service_channel(self.stack.plan, "svc_marketdata")
        await asyncio.wait_for(self.channel.channel_ready(), timeout=30)
        self.quotes = marketdata_pb2_grpc.MarketDataServiceStub(self.channel)
        self.watchlists = watchlists_pb2_grpc.WatchlistServiceStub(self.channel)

    async def metrics(self) -> str:
        """The process's Prometheus metrics page."""
        port = self.stack.plan.ports["svc_marketdata"]["metrics"]
        url = f"http://127.0.0.1:{port}/metrics"
        return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())


def env_for(exchange: ExchangeDouble, **extra: str) -> dict[str, str]:
    return {
        config.FIX_PORT: str(exchange.port),
        "BROKERMESH_MARKETDATA_INSTRUMENT_WAIT_SECONDS": "2",
        **extra,
    }


async def start_market_data(
    infra: SharedInfra, work_dir: Path, exchange: ExchangeDouble, **extra_env: str
) -> MarketDataProcess:
    stack = await new_stack(infra, work_dir, ["svc_marketdata"], env_for(exchange, **extra_env))
    ch = service_channel(stack.plan, "svc_marketdata")
    return MarketDataProcess(
        stack,
        exchange,
        ch,
        marketdata_pb2_grpc.MarketDataServiceStub(ch),
        watchlists_pb2_grpc.WatchlistServiceStub(ch),
    )


async def close(process: MarketDataProcess) -> None:
    await process.channel.close()
    with contextlib.suppress(Exception):
        await process.stack.stop()


ExchangeFactory = Callable[..., ExchangeDouble]


@pytest.fixture
def exchanges() -> Iterator[ExchangeFactory]:
    """Start exchange doubles (`exchanges(work_dir, listing, **options)`); every one is
    stopped after the test, however it ends, so the next test can start its own."""
    made: list[ExchangeDouble] = []

    def make(work_dir: Path, listing: Sequence[Listed] = DEFAULT_LISTING, **options: Any) -> ExchangeDouble:
        exchange = ExchangeDouble(work_dir, listing, **options).start()
        made.append(exchange)
        return exchange

    yield make
    for exchange in made:
        exchange.stop()


@pytest.fixture(scope="module")
def module_exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExchangeDouble]:
    listing = [*DEFAULT_LISTING, *synthetic_listing(120)]
    exchange = ExchangeDouble(tmp_path_factory.mktemp("exchange"), listing).start()
    yield exchange
    exchange.stop()


@pytest.fixture(scope="module")
async def md(
    infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory, module_exchange: ExchangeDouble
) -> AsyncIterator[MarketDataProcess]:
    """One service process shared by a module's tests (each test uses its own symbols or
    users), subscribed and serving quotes."""
    process = await start_market_data(infra, tmp_path_factory.mktemp("md"), module_exchange)
    await module_exchange.wait_subscribed()
    yield process
    await close(process)
