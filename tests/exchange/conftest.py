"""Fixtures of the exchange simulator's tests: a running exchange_sim process with a quiet
book (no liquidity agents) and FIX counterparties connected to it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from brokermesh.exchange.v1 import exchange_admin_pb2_grpc
from svc_runtime.stack import Stack
from tests.exchange.fix_client import FixClient
from tests.support.grpc import service_channel

QUIET = {"BROKERMESH_EXCHANGE_AGENTS": "off"}

ClientFactory = Callable[..., Awaitable[FixClient]]


@pytest.fixture
async def exchange(make_stack: Callable[..., Awaitable[Stack]]) -> Stack:
    return await make_stack(["exchange_sim"], extra_env=QUIET)


@pytest.fixture
async def admin(exchange: Stack) -> AsyncIterator[exchange_admin_pb2_grpc.ExchangeAdminServiceStub]:
    async with service_channel(exchange.plan, "exchange_sim") as ch:
        yield exchange_admin_pb2_grpc.ExchangeAdminServiceStub(ch)


@pytest.fixture
async def fix_clients(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[FixClient]]]:
    """Starts FIX initiators (logged on when returned); stops them after the test."""
    clients: list[FixClient] = []

    async def connect(stack: Stack, sender: str = "BROKER", *, work_dir: Path | None = None) -> FixClient:
        client = FixClient(
            work_dir or tmp_path / f"fix-{sender}-{len(clients)}",
            stack.plan.ports["exchange_sim"]["fix"],
            sender,
        )
        clients.append(client)
        client.start()
        await client.wait_logged_on()
        return client

    yield connect
    for client in clients:
        with contextlib.suppress(Exception):
            client.stop(force=True)
