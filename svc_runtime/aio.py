"""asyncio waits with a deadline, correct on Python 3.11, and the periodic loop of every
background worker.

`asyncio.wait_for` on Python 3.11 can swallow a cancellation that arrives just as the awaited
future completes (CPython gh-86296, fixed in 3.12): a loop around it then runs on after its
task was cancelled, and a process whose background task was killed, or that is told to stop,
never does. `asyncio.timeout` does not have the flaw; these two wrap it. Product code uses
them instead of `asyncio.wait_for` (a ruff rule bans it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
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


async def every(
    seconds: float,
    stop: asyncio.Event,
    round_: Callable[[], Awaitable[object]],
    *,
    what: str,
    log: logging.Logger,
    on_error: Callable[[], None] | None = None,
) -> None:
    """Run `round_` every `seconds` until `stop` is set. A round that fails is logged (and
    `on_error` called) and the next one tries again: a worker outlives a database or peer
    that is away for a while; only a cancellation or `stop` ends it."""
    while not stop.is_set():
        try:
            await round_()
        except Exception:
            log.warning("%s failed; will retry", what, exc_info=True)
            if on_error is not None:
                on_error()
        await event_within(stop, seconds)
