"""Client-side coalescing of concurrent single calls into batch calls.

As TigerBeetle's clients do with transfers: a call goes out at once when fewer than
`max_in_flight` batches are out; otherwise it waits in a queue, and when a batch returns,
everything queued meanwhile leaves as the next one (up to `max_batch`). A light load thus
sees no added wait, and a heavy one pays the per-call cost of the transport once per batch
instead of once per item.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# Sends one batch and returns each item's outcome (a value or the exception to raise for
# it), in item order. Raising fails every item of the batch with that exception.
SendBatch = Callable[[list[Item]], Awaitable[Sequence[Outcome | BaseException]]]


class Coalescer(Generic[Item, Outcome]):
    def __init__(
        self, send: SendBatch[Item, Outcome], *, max_batch: int = 1000, max_in_flight: int = 2
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._send = send
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: deque[tuple[Item, asyncio.Future[Outcome]]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Outcome:
        """The item's outcome, once the batch it went in has returned."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._pump()
        return await future

    async def close(self) -> None:
        """Wait for the batches already sent."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _pump(self) -> None:
        while self._queue and len(self._in_flight) < self.max_in_flight:
            batch: list[tuple[Item, asyncio.Future[Outcome]]] = []
            while self._queue and len(batch) < self.max_batch:
                entry = self._queue.popleft()
                if not entry[1].done():  # a caller that gave up before sending is dropped
                    batch.append(entry)
            if not batch:
                return
            task = asyncio.create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._pump()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Outcome]]]) -> None:
        try:
            outcomes = await self._send([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} came back with {len(outcomes)} outcomes")
        except Exception as error:  # every waiting caller learns of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:  # cancelled: so are the callers waiting on this batch
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
