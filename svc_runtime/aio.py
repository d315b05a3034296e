"""asyncio waits with a deadline, correct on Python 3.11.

`asyncio.wait_for` on Python 3.11 can swallow a cancellation that arrives just as the awaited
future completes (CPython gh-86296, fixed in 3.12): a loop around it then runs on after its
task was cancelled, and a process whose background task was killed, or that is told to stop,
never does. `asyncio.timeout` does not have the flaw; these two wrap it. Product code uses
them instead of `asyncio.wait_for` (a ruff rule bans it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """What `awaitable` gives, or TimeoutError (and `awaitable` cancelled) after `seconds`."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def event_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait at most `seconds` for `event`; whether it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(seconds, 0.0)):
            await event.wait()
    except TimeoutError:
        return False
    return True
