"""svc_runtime.aio: waits with a deadline that never swallow a cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from svc_runtime import aio

Wait = Callable[[asyncio.Event, float], Awaitable[object]]


async def _cancelled_as_the_event_is_set(wait: Wait) -> bool:
    """Whether a loop waiting on an event stops when its task is cancelled in the same loop
    iteration as the event is set (asyncio.wait_for on Python 3.11 may return normally then,
    and the loop runs on)."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait(event, 5)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    try:
        await asyncio.wait_for(asyncio.shield(task), 0.5)
    except asyncio.CancelledError:
        return True
    except TimeoutError:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return False


async def test_a_cancellation_that_arrives_as_the_event_is_set_is_not_lost() -> None:
    for _ in range(50):
        assert await _cancelled_as_the_event_is_set(aio.event_within)
        assert await _cancelled_as_the_event_is_set(lambda e, s: aio.within(e.wait(), s))


async def test_within_gives_the_result_or_times_out() -> None:
    assert await aio.within(asyncio.sleep(0, "done"), 1) == "done"
    with pytest.raises(TimeoutError):
        await aio.within(asyncio.sleep(1), 0.01)
    event = asyncio.Event()
    assert not await aio.event_within(event, 0.01)
    event.set()
    assert await aio.event_within(event, 0)


async def test_every_runs_rounds_until_stopped_and_outlives_a_failing_round() -> None:
    import logging

    stop = asyncio.Event()
    rounds: list[int] = []
    errors: list[bool] = []

    async def round_() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise ConnectionError("the database is away")
        if len(rounds) == 4:
            stop.set()

    await aio.within(
        aio.every(
            0.001,
            stop,
            round_,
            what="test round",
            log=logging.getLogger("t"),
            on_error=lambda: errors.append(True),
        ),
        2,
    )
    assert rounds == [0, 1, 2, 3] and errors == [True]
