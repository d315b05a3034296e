"""One whole stack, shared by the security tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.e2e.conftest import open_account
from tests.support.infra import SharedInfra

__all__ = ["open_account", "secured_stack"]


@pytest.fixture(scope="session")
async def secured_stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = await new_stack(infra, tmp_path_factory.mktemp("secured"))
    # What `brokermesh up` leaves for the operator tools.
    stack.write_description(stack.plan.data_dir / "stack.json")
    yield stack
    with contextlib.suppress(Exception):
        await stack.stop()
