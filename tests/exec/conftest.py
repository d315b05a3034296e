"""Fixtures for svc_exec's tests: a FIX acceptor standing in for the exchange, svc_exec
started as a real process against it, and an OMS double on JetStream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from svc_runtime import config
from svc_runtime.stack import Stack
from tests.conftest import StackFactory
from tests.exec.acceptor import ExchangeProcess
from tests.exec.support import Oms, wait_logged_on
from tests.support.infra import SharedInfra

ExecFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[ExchangeProcess]:
    acceptor = ExchangeProcess(tmp_path / "exchange").start()
    yield acceptor
    acceptor.stop()


@pytest.fixture
async def start_exec(make_stack: StackFactory, exchange: ExchangeProcess) -> AsyncIterator[ExecFactory]:
    """Start svc_exec against the test exchange (or `fix_port`) and wait for its FIX logon.
    svc_exec stops before the exchange does."""
    stacks: list[Stack] = []

    async def start(fix_port: int | None = None, wait: bool = True, **env: str) -> Stack:
        port = fix_port or exchange.port
        stack = await make_stack(["svc_exec"], extra_env={config.FIX_PORT: str(port), **env})
        stacks.append(stack)
        if wait:
            await wait_logged_on(stack)
        return stack

    yield start
    for stack in stacks:
        await stack.stop()


@pytest.fixture
async def oms_for(infra: SharedInfra) -> AsyncIterator[Callable[[Stack], Awaitable[Oms]]]:
    opened: list[Oms] = []

    async def open_for(stack: Stack) -> Oms:
        oms = await Oms(infra.nats_url, stack.plan.namespace).__aenter__()
        opened.append(oms)
        return oms

    yield open_for
    for oms in opened:
        await oms.__aexit__(None, None, None)
