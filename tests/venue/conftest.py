"""Fixtures for trading against a FIX venue brokermesh did not write (`acceptor.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from svc_runtime import config
from svc_runtime.stack import Stack
from tests.conftest import StackFactory
from tests.exec.support import Oms, wait_logged_on
from tests.support.infra import SharedInfra
from tests.venue.acceptor import Acceptor, Venue

VenueFactory = Callable[[Venue], Acceptor]


@pytest.fixture
def start_venue() -> Iterator[VenueFactory]:
    started: list[Acceptor] = []

    def start(venue: Venue) -> Acceptor:
        acceptor = Acceptor(venue).start()
        started.append(acceptor)
        return acceptor

    yield start
    for acceptor in started:
        acceptor.stop()


@pytest.fixture
async def exec_against(
    make_stack: StackFactory, infra: SharedInfra
) -> AsyncIterator[Callable[..., Awaitable[tuple[Stack, Oms]]]]:
    """svc_exec with a venue profile (and any other settings), logged on to `acceptor`,
    and an OMS double."""
    opened: list[Oms] = []

    async def start(acceptor: Acceptor, profile: str, **env: str) -> tuple[Stack, Oms]:
        stack = await make_stack(
            ["svc_exec"],
            extra_env={config.FIX_PORT: str(acceptor.port), config.VENUE_PROFILE: profile, **env},
        )
        await wait_logged_on(stack)
        oms = await Oms(infra.nats_url, stack.plan.namespace).__aenter__()
        opened.append(oms)
        return stack, oms

    yield start
    for oms in opened:
        await oms.__aexit__(None, None, None)
