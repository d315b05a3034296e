"""svc_funds under test: in this process (fast, for API behaviour) or as a real process (for
crashes and true concurrency, through `make_stack`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import time
from pathlib import Path

import pytest

from svc_funds.domain.charges import ZERO_SCHEDULE, ChargesSchedule
from svc_funds.main import serve
from svc_funds.settings import FundsSettings
from svc_runtime.auth import ensure_credentials, service_signer
from svc_runtime.config import CommonSettings
from tests.funds.support import FundsClient
from tests.support.grpc import TEST_CALLER, process_identity
from tests.support.infra import SharedInfra, fresh_database, unique_name

StartFunds = Callable[..., Awaitable[FundsClient]]


@pytest.fixture
async def start_funds(infra: SharedInfra, tmp_path: Path) -> AsyncIterator[StartFunds]:
    """Start svc_funds' composition root on this event loop, on a fresh database and NATS
    namespace; stopped gracefully after the test."""
    running: list[tuple[asyncio.Event, asyncio.Task[None], FundsClient]] = []
    credentials = ensure_credentials(tmp_path)

    async def start(
        schedule: ChargesSchedule = ZERO_SCHEDULE,
        *,
        marketdata_target: str = "",
        database_url: str | None = None,
        namespace: str | None = None,
        end_of_day_at: time | None = None,
        bank_failing_accounts: tuple[str, ...] = (),
        bank_delay_ms: float = 50.0,
    ) -> FundsClient:
        database_url = database_url or await fresh_database(infra)
        namespace = namespace or unique_name("t")
        settings = FundsSettings(
            common=CommonSettings(database_url, infra.nats_url, namespace, tmp_path, "127.0.0.1:0", 0),
            marketdata_target=marketdata_target,
            schedule=schedule,
            writers=2,
            max_batch=1000,
            pool_size=8,
            end_of_day_at=end_of_day_at,
            bank_failing_accounts=bank_failing_accounts,
            bank_delay_ms=bank_delay_ms,
        )
        stop = asyncio.Event()
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_ready(port: int) -> None:
            ready.set_result(port)

        task = asyncio.create_task(serve(settings, stop, on_ready))
        done, _ = await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises why it stopped
        if ready not in done:
            raise TimeoutError("svc_funds did not start")
        client = FundsClient.connect(
            f"127.0.0.1:{ready.result()}",
            database_url,
            infra.nats_url,
            namespace,
            signer=service_signer(TEST_CALLER, credentials.service_key),
        )
        running.append((stop, task, client))
        return client

    # svc_funds runs in this process, which therefore serves and calls as svc_funds.
    with process_identity("svc_funds", credentials):
        yield start
        violations: list[str] = []
        for stop, task, client in reversed(running):
            # The ledger audit after every test, unless the test broke the ledger on purpose.
            if client.audit_at_teardown:
                violations += await client.violations()
            await client.close()
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
    assert not violations, "the ledger audit failed after the test:\n" + "\n".join(violations)


@pytest.fixture
async def funds(start_funds: StartFunds) -> FundsClient:
    """svc_funds with the zero charges schedule."""
    return await start_funds()
