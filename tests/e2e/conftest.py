"""One full stack (every service as its own process) shared by the end-to-end tests, and the
invariant audit after every one of them."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from svc_runtime import admin, audit
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.support.infra import SharedInfra, unique_name


@pytest.fixture(scope="session")
async def e2e_stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = await new_stack(infra, tmp_path_factory.mktemp("e2e"))
    yield stack
    with contextlib.suppress(Exception):
        await stack.stop()


@pytest.fixture(autouse=True)
async def invariants_hold_after_test(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """The invariants (docs/architecture.md §5) hold after every end-to-end test."""
    yield
    if "e2e_stack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("e2e_stack")
    report = await audit.run(
        stack.plan.describe(), signer=stack.plan.operator_signer("auditor"), settle_seconds=20
    )
    assert report.complete, report.render()


async def open_account(stack: Stack, deposit: str = "1000000.00") -> tuple[str, str, str]:
    """A new user with an opening deposit; returns (username, password, user_id)."""
    username = unique_name("u")
    password = "pw-" + unique_name("")
    created = await admin.create_user(
        stack.plan.target("svc_funds"),
        username,
        password,
        username,
        deposit,
        signer=stack.plan.operator_signer(),
    )
    return username, password, created["account"]["user_id"]


def exact_json(response: httpx.Response) -> Any:
    """The body with every JSON number that has a fraction parsed as an exact Decimal."""
    return json.loads(response.text, parse_float=Decimal)


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await client.post("/v1/sessions", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}
