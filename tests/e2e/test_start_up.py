"""Start-up that cannot race or half-start: a port is known to be free only once bound, so a
service that finds one of its ports taken starts on others (and whoever calls it learns its new
address); and `up` says it is up only when a first order could succeed end to end."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from svc_runtime import config, readiness
from svc_runtime.infra.postgres import EmbeddedPostgres
from svc_runtime.stack import Stack, StackPlan
from tests.e2e.test_up_command import _ctrl_c, _https, _login, _processes_of, _start, _wait_until_up
from tests.support.infra import SharedInfra, fresh_database, scratch_dir, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@contextmanager
def _held(port: int) -> Iterator[socket.socket]:
    """`port` listened on by someone else (this test) for the duration."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock


async def _plan(infra: SharedInfra, data_dir: Path) -> StackPlan:
    return StackPlan.allocate(
        data_dir,
        await fresh_database(infra),
        infra.nats_url,
        namespace=unique_name("t"),
        jwt_secret=secrets.token_urlsafe(48),
    )


async def test_a_service_whose_port_is_taken_starts_on_another_and_its_callers_follow(
    infra: SharedInfra, tmp_path: Path
) -> None:
    plan = await _plan(infra, tmp_path)
    funds, marketdata = plan.ports["svc_funds"]["grpc"], plan.ports["svc_marketdata"]["grpc"]
    stack = Stack(plan)
    try:
        # svc_funds calls svc_marketdata, which starts after it: its address changes under svc_funds.
        with _held(funds), _held(marketdata):
            await stack.start(["svc_funds", "svc_marketdata"])
        assert plan.ports["svc_funds"]["grpc"] != funds
        assert plan.ports["svc_marketdata"]["grpc"] != marketdata
        assert all(stack.running(name) for name in ("svc_funds", "svc_marketdata"))
        assert stack.started_env["svc_funds"][config.MARKETDATA_TARGET] == plan.target("svc_marketdata")
    finally:
        await stack.stop()


async def test_readiness_names_what_a_first_order_lacks(infra: SharedInfra, tmp_path: Path) -> None:
    """Every service serving, but the venue does not answer: not ready, and it says why."""
    plan = await _plan(infra, tmp_path)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = closed.getsockname()[1]
    plan.use_venue(f"127.0.0.1:{nowhere}")
    stack = Stack(plan)
    try:
        await stack.start(["svc_funds", "svc_marketdata", "svc_exec", "svc_orders", "gateway"])
        deadline = time.monotonic() + 30
        while "FIX session" not in (problem := await readiness.missing(plan)):
            assert time.monotonic() < deadline, f"expected the FIX session to be missing, got {problem!r}"
            await asyncio.sleep(0.5)
        with pytest.raises(readiness.NotReady, match="FIX session"):
            await readiness.wait(plan, timeout=1)
    finally:
        await stack.stop()


def _first_order(data_dir: Path) -> tuple[int, str, str]:
    gateway = json.loads((data_dir / "stack.json").read_text())["gateway_url"]
    verify = _https(data_dir)
    headers = {"Authorization": f"Bearer {_login(gateway, 'asha', 'asha-demo-pass', verify)}"}
    placed = httpx.post(
        f"{gateway}/v1/orders",
        headers={**headers, "Idempotency-Key": "first-order"},
        json={"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": 1},
        timeout=30,
        verify=verify,
    )
    if placed.status_code != 201:
        return placed.status_code, placed.text, ""
    order_id = placed.json()["orderId"]
    status, deadline = "", time.monotonic() + 90
    while time.monotonic() < deadline and status != "FILLED":
        time.sleep(0.2)
        status = httpx.get(
            f"{gateway}/v1/orders/{order_id}", headers=headers, timeout=30, verify=verify
        ).json()["status"]
    return placed.status_code, order_id, status


# Two whole stacks starting on two busy cores: minutes, not seconds.
@pytest.mark.timeout(900)
def test_two_stacks_started_at_once_each_fill_a_first_order_at_once() -> None:
    """Two `up`s on two data directories at the same moment (each would like the same
    preferred ports); as soon as each says it is up, an order is placed on each at once:
    both are accepted at the first attempt and fill."""
    scratches = [scratch_dir("brokermesh-test-race-") for _ in range(2)]
    data_dirs = [scratch / "data" for scratch in scratches]
    with ExitStack() as cleanup:
        for scratch, data_dir in zip(scratches, data_dirs, strict=True):
            cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
            cleanup.callback(EmbeddedPostgres(data_dir / "postgres").remove)
        processes = [_start(data_dir) for data_dir in data_dirs]
        for process in processes:
            cleanup.callback(lambda p=process: p.poll() is None and _ctrl_c(p))
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: _wait_until_up(p, 600), processes))
            ports = [json.loads((d / "stack.json").read_text())["ports"] for d in data_dirs]
            taken = [{p for service in stack.values() for p in service.values()} for stack in ports]
            assert not taken[0] & taken[1], "two stacks listen on one port"
            results = list(pool.map(_first_order, data_dirs))
        for code, detail, status in results:
            assert code == 201, f"the first order answered {code}: {detail}"
            assert status == "FILLED", f"the first order {detail} is {status}"
        for process in processes:
            _ctrl_c(process)
    for data_dir in data_dirs:
        assert _processes_of(data_dir) == []
