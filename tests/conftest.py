"""Fixtures shared by the whole suite.

- `infra`: real PostgreSQL + NATS for the session.
- `database_url`, `namespace`: a fresh database and NATS namespace for one test.
- `make_stack`: starts chosen services as real processes on a fresh database/namespace.
- `session_tls`: one CA and server certificate for every stack of the session, given to
  them as an operator gives their own (BROKERMESH_TLS_*), and trusted by this process's
  clients (httpx, urllib, grpcio, Playwright's Node.js driver) as `source .brokermesh/env`
  makes a shell trust a stack.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from svc_runtime import tls
from svc_runtime.stack import SERVICE_NAMES, Stack, StackPlan
from tests.support.infra import SharedInfra, fresh_database, scratch_dir, start_test_infra, unique_name
from tests.support.replica import Replicated, primary_and_replica

StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture(scope="session", autouse=True)
def session_tls() -> Iterator[tls.Material]:
    directory = scratch_dir("brokermesh-test-tls-")
    saved = dict(os.environ)
    for name in (tls.CERT_FILE, tls.KEY_FILE, tls.CA_FILE, tls.PLAINTEXT):
        os.environ.pop(name, None)
    material = tls.ensure(directory)
    os.environ.update({**material.env(), **material.client_env()})
    yield material
    os.environ.clear()
    os.environ.update(saved)
    shutil.rmtree(directory, ignore_errors=True)


# Every stack the session made, and how many of its unclean stops were already reported.
_stacks: dict[int, tuple[Stack, list[int]]] = {}


@pytest.fixture(scope="session", autouse=True)
def _stacks_are_watched() -> Iterator[None]:
    original = Stack.__init__

    def watched(self: Stack, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        _stacks[id(self)] = (self, [0])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Stack, "__init__", watched)
        yield
    # Stacks of the session stop before this: an unclean stop among them fails the session's
    # last test here, which also reaches the controller when workers run the suite.
    if unclean := _unreported_unclean_stops():
        pytest.fail("\n\n".join(unclean), pytrace=False)


def _unreported_unclean_stops() -> list[str]:
    found = []
    for stack, reported in _stacks.values():
        for name, code in stack.unclean_stops[reported[0] :]:
            log = (stack.log_dir / f"{name}.log").read_text(errors="replace")[-4000:]
            found.append(f"{name} did not stop cleanly on SIGTERM (exit {code}):\n{log}")
        reported[0] = len(stack.unclean_stops)
    return found


@pytest.fixture(autouse=True)
def _services_stop_cleanly() -> Iterator[None]:
    """A service asked to stop exits 0: a crash or a hang while shutting down fails the test
    that stopped it (a stack of a module or the session: the next test)."""
    yield
    if unclean := _unreported_unclean_stops():
        pytest.fail("\n\n".join(unclean), pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if unclean := _unreported_unclean_stops():
        print("\n\n".join(unclean))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def infra() -> Iterator[SharedInfra]:
    handle = start_test_infra()
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def replicated() -> Iterator[Replicated]:
    """A PostgreSQL primary with a streaming replica of its own, for the tests of reads from a
    replica (started on first use, shared after)."""
    with primary_and_replica() as servers:
        yield servers


@pytest.fixture
async def database_url(infra: SharedInfra) -> str:
    return await fresh_database(infra)


@pytest.fixture
def namespace() -> str:
    return unique_name("t")


async def new_stack(
    infra: SharedInfra,
    data_dir: Path,
    services: tuple[str, ...] | list[str] = SERVICE_NAMES,
    extra_env: dict[str, str] | None = None,
    *,
    replicas: int = 1,
) -> Stack:
    plan = StackPlan.allocate(
        data_dir,
        await fresh_database(infra),
        infra.nats_url,
        namespace=unique_name("t"),
        jwt_secret=secrets.token_urlsafe(48),
        replicas=replicas,
    )
    plan.extra_env.update(extra_env or {})
    stack = Stack(plan)
    try:
        await stack.start(services)
    except BaseException:
        await stack.stop()
        raise
    return stack


@pytest.fixture
async def make_stack(infra: SharedInfra, tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Start services as separate processes; they are stopped after the test."""
    stacks: list[Stack] = []

    async def factory(
        services: tuple[str, ...] | list[str] = SERVICE_NAMES, extra_env: dict[str, str] | None = None
    ) -> Stack:
        stack = await new_stack(infra, tmp_path / f"stack{len(stacks)}", services, extra_env)
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        with contextlib.suppress(Exception):
            await stack.stop()
