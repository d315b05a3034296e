"""The call coalescer: concurrent single calls leave as batches, each caller gets its own
outcome. Pure asyncio, no I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from svc_runtime.batching import Coalescer


class Refused(Exception):
    pass


class FakeTransport:
    """Answers each batch when told to, so tests decide what is in flight."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gates: list[asyncio.Event] = []

    async def send(self, items: list[int]) -> Sequence[int | BaseException]:
        self.batches.append(items)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return [Refused(str(i)) if i < 0 else i * 10 for i in items]

    def answer(self, index: int) -> None:
        self.gates[index].set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_call_goes_at_once_and_queued_calls_share_the_next_batch() -> None:
    transport = FakeTransport()
    coalescer: Coalescer[int, int] = Coalescer(transport.send, max_in_flight=1)
    first = asyncio.create_task(coalescer.submit(1))
    await settle()
    assert transport.batches == [[1]]  # nothing else was waiting: no delay
    rest = [asyncio.create_task(coalescer.submit(i)) for i in range(2, 7)]
    await settle()
    assert transport.batches == [[1]]  # the one batch allowed is out
    transport.answer(0)
    assert await first == 10
    await settle()
    assert transport.batches == [[1], [2, 3, 4, 5, 6]]
    transport.answer(1)
    assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]


async def test_batches_respect_their_size_and_the_in_flight_limit() -> None:
    transport = FakeTransport()
    coalescer: Coalescer[int, int] = Coalescer(transport.send, max_batch=3, max_in_flight=2)
    calls = [asyncio.create_task(coalescer.submit(i)) for i in range(1, 11)]
    await settle()
    assert transport.batches == [[1], [2]]  # each went alone; 3 … 10 wait
    transport.answer(1)
    await settle()
    assert transport.batches[2] == [3, 4, 5]
    transport.answer(0)
    await settle()
    assert transport.batches[3] == [6, 7, 8]
    transport.answer(2)
    await settle()
    assert transport.batches[4:] == [[9, 10]]
    transport.answer(3)
    transport.answer(4)
    assert await asyncio.gather(*calls) == [i * 10 for i in range(1, 11)]


async def test_each_caller_gets_its_own_error() -> None:
    transport = FakeTransport()
    coalescer: Coalescer[int, int] = Coalescer(transport.send, max_in_flight=1)
    blocker = asyncio.create_task(coalescer.submit(0))
    await settle()
    good, bad = asyncio.create_task(coalescer.submit(2)), asyncio.create_task(coalescer.submit(-3))
    await settle()
    transport.answer(0)
    await settle()
    transport.answer(1)
    assert await blocker == 0 and await good == 20
    with pytest.raises(Refused, match="-3"):
        await bad


async def test_a_failed_batch_fails_every_caller_in_it_and_the_next_batch_still_goes() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> Sequence[int]:
        sent.append(items)
        await asyncio.sleep(0)
        if 1 in items:
            raise ConnectionError("the service went away")
        return items

    coalescer: Coalescer[int, int] = Coalescer(send, max_in_flight=1)
    calls = [asyncio.create_task(coalescer.submit(i)) for i in (0, 1, 2)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sent == [[0], [1, 2]]
    assert results[0] == 0
    assert all(isinstance(r, ConnectionError) for r in results[1:])
    assert await coalescer.submit(3) == 3


async def test_a_short_answer_is_an_error_not_a_silent_loss() -> None:
    async def send(items: list[int]) -> Sequence[int]:
        return items[:-1]

    coalescer: Coalescer[int, int] = Coalescer(send)
    with pytest.raises(RuntimeError, match="came back with"):
        await coalescer.submit(1)


async def test_a_caller_that_gave_up_before_sending_is_left_out() -> None:
    transport = FakeTransport()
    coalescer: Coalescer[int, int] = Coalescer(transport.send, max_in_flight=1)
    blocker = asyncio.create_task(coalescer.submit(1))
    await settle()
    gave_up, stays = asyncio.create_task(coalescer.submit(2)), asyncio.create_task(coalescer.submit(3))
    await settle()
    gave_up.cancel()
    transport.answer(0)
    await settle()
    assert transport.batches[1] == [3]
    transport.answer(1)
    assert await blocker == 10 and await stays == 30
    await coalescer.close()
