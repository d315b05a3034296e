"""Waiting for an eventually consistent system: poll a check until it holds."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], *, timeout: float = 60.0, interval: float = 0.05
) -> Any:
    """Call `check` (plain or async) until it returns something truthy and return that.

    An AssertionError from `check` counts as "not yet"; after `timeout` seconds the last one
    is raised, or an AssertionError naming the last value."""
    deadline = time.monotonic() + timeout
    while True:
        failure: AssertionError | None = None
        last: Any = None
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
        except AssertionError as error:
            failure = error
        if time.monotonic() > deadline:
            if failure is not None:
                raise failure
            raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")
        await asyncio.sleep(interval)
