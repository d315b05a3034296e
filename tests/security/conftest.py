"""One whole stack, shared by the security tests, with a helper to open accounts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from svc_runtime import admin
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.support.infra import SharedInfra, unique_name


@pytest.fixture(scope="session")
async def secured_stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = await new_stack(infra, tmp_path_factory.mktemp("secured"))
    # What `brokermesh up` leaves for the operator tools.
    stack.write_description(stack.plan.data_dir / "stack.json")
    yield stack
    with contextlib.suppress(Exception):
        await stack.stop()


async def open_account(stack: Stack, deposit: str = "1000000.00") -> tuple[str, str, str]:
    """A new user with an opening deposit; returns (username, password, user_id)."""
    username = unique_name("u")
    password = f"pw-{username}-long-enough"
    created = await admin.create_user(
        stack.plan.target("svc_funds"),
        username,
        password,
        username,
        deposit,
        signer=stack.plan.operator_signer(),
    )
    return username, password, str(created["account"]["user_id"])
