"""The example trading desktop signs in over REST, then streams and trades over gRPC with
its own token."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from svc_runtime.stack import Stack
from tests.security.conftest import open_account

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "desktop_client.py"


async def test_the_example_desktop_streams_quotes_and_its_order_and_places_an_order(
    secured_stack: Stack, tmp_path: Path
) -> None:
    username, password, user_id = await open_account(secured_stack)
    plan = secured_stack.plan
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--gateway",
        plan.gateway_url,
        "--orders",
        plan.target("svc_orders"),
        "--marketdata",
        plan.target("svc_marketdata"),
        "--username",
        username,
        "--password",
        password,
        "--buy",
        "1",
        "--seconds",
        "6",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    output = out.decode()
    assert process.returncode == 0, output + err.decode()
    assert f"signed in as {user_id}" in output
    placed = next(line for line in output.splitlines() if line.startswith("placed "))
    order_id = placed.split()[1].rstrip(":")
    assert any(line.startswith(f"order  {order_id} ") for line in output.splitlines()), output
    assert any(line.startswith("quote  INFY") for line in output.splitlines()), output
    assert "logged out" in output.splitlines(), output
