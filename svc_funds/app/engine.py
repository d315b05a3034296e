"""The ledger engine: every change to money or shares goes through it, in batches.

Callers (gRPC handlers, the execution-report consumer) submit commands and await their
results. Writer tasks take whatever is queued, up to `max_batch` commands, and run it as one
database transaction: lock the rows the batch needs (blocks, then cash, then shares, each
in key order, so concurrent batches and replicas never deadlock on each other), apply the
commands one by one to the locked state in pure domain code, lock the house accounts the
batch moves money through (last, in key order), write the changes in one statement and
commit. A command's result is released only
after the commit. This is group commit in the manner of TigerBeetle: the cost of a
transaction (round trips, fsync, lock hand-over on a hot account) is paid once per batch
instead of once per command, and concurrent commands on one balance are applied in sequence
against locked rows, so they can never overspend it.

Failures: a command the domain refuses fails alone with nothing written. A conflict with a
concurrent transaction (a raced unique key, a deadlock) re-runs the whole batch on fresh
state, which is safe because every command is idempotent by its key. Any other error re-runs
the batch's submissions one by one, so one bad command cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from prometheus_client import Counter, Histogram

from svc_funds.app.ports import Clock, LedgerStore
from svc_funds.domain.charges import ChargesSchedule
from svc_funds.domain.ledger import Book
from svc_funds.domain.operations import (
    BlockCash,
    BlockPreview,
    BlockShares,
    Command,
    Needs,
    Result,
    execute,
    preview_block,
)
from svc_runtime import context, service
from svc_runtime.errors import ServiceError, Unavailable

log = logging.getLogger(__name__)

BATCH_SIZE = Histogram(
    "funds_engine_batch_commands",
    "Commands per ledger transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
)
BATCH_SECONDS = Histogram(
    "funds_engine_batch_seconds",
    "Time to run and commit one ledger transaction",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
COMMANDS = Counter(
    "funds_engine_commands_total", "Ledger commands by type and outcome", ["command", "outcome"]
)
RETRIES = Counter("funds_engine_retries_total", "Ledger transactions re-run after a conflict", ["error"])
SHORTFALLS = Counter(
    "funds_fill_shortfalls_total", "Fills that cost more than their block and the free balance (dues created)"
)

MAX_ATTEMPTS = 8

_COUNTERS: dict[tuple[str, str], Counter] = {}


def _count(command: str, outcome: str) -> None:
    # Looking up a labelled child costs more than the increment: keep them.
    child = _COUNTERS.get((command, outcome))
    if child is None:
        child = _COUNTERS[(command, outcome)] = COMMANDS.labels(command, outcome)
    child.inc()


def utc_now() -> datetime:
    return datetime.now(UTC)


class _ReadBlocks(Exception):
    """An optimistic batch must run again, reading the blocks it names."""


@dataclass
class _Submission:
    commands: Sequence[Command]
    future: asyncio.Future[list[Result | ServiceError]]
    request_id: str


class LedgerEngine:
    def __init__(
        self,
        store: LedgerStore,
        schedule: ChargesSchedule,
        *,
        clock: Clock = utc_now,
        writers: int = 2,
        max_batch: int = 1000,
        linger: float = 0.001,
    ) -> None:
        self.store = store
        self.schedule = schedule
        self.clock = clock
        self.writers = writers
        self.max_batch = max_batch
        self.linger = linger
        self._last_batch = (0, 0.0)  # commands and seconds of the latest transaction
        self._running: list[bool] = []  # per writer: inside a transaction
        self._queue: deque[_Submission] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._running = [False] * self.writers
        self._tasks = [
            service.supervise(self._writer(i), name=f"ledger-writer-{i}") for i in range(self.writers)
        ]

    async def stop(self) -> None:
        """Finish what is queued, then stop the writers."""
        self._stopping = True
        self._wake.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- submitting ----------------------------------------------------------------------
    async def execute(self, command: Command) -> Result:
        """Run one command; raise its ServiceError if it was refused."""
        (result,) = await self.execute_all([command])
        if isinstance(result, ServiceError):
            raise result
        return result

    async def execute_all(self, commands: Sequence[Command]) -> list[Result | ServiceError]:
        """Run commands in order, in one transaction, and return each one's result or error.
        Raises if the transaction itself could not be committed."""
        if self._stopping:
            raise Unavailable("the ledger is shutting down; retry", retry_after_seconds=1.0)
        future: asyncio.Future[list[Result | ServiceError]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Submission(list(commands), future, context.request_id()))
        self._wake.set()
        # The batch may commit after a caller gave up; the command is idempotent by its key.
        return await asyncio.shield(future)

    async def preview(
        self, command: BlockCash | BlockShares, sale_price: Decimal | None = None
    ) -> BlockPreview:
        """The block `command` would make now, computed on the real balances in a
        transaction that is rolled back: nothing is written, not even the empty balance
        rows a first use creates."""
        try:
            async with self.store.unit_of_work() as uow:
                state = await uow.load(command.needs(self.schedule))
                raise _Discarded(preview_block(Book(state, self.clock()), self.schedule, command, sale_price))
        except _Discarded as discarded:
            return discarded.preview

    # --- writing -------------------------------------------------------------------------
    async def _writer(self, index: int) -> None:
        """Writer `index` takes work only while every lower writer is inside a transaction:
        one writer serves a light load with whole bursts, and each further writer joins only
        when the ones before it are busy, instead of idle writers splitting a burst."""
        while True:
            if not self._queue or not all(self._running[:index]):
                if self._stopping and not self._queue:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # Under load, callers answered by the last commit send their next commands
            # within a moment of each other: wait for them (Kafka's linger.ms, adaptive like
            # PostgreSQL's commit_delay), so that a burst becomes one transaction. Idle, go
            # at once.
            # A caller's own batch (BatchBlockFunds, BatchBlockHoldings) was formed by
            # coalescing already.
            size, seconds = self._last_batch
            if size > 1 and len(self._queue) < self.max_batch and len(self._queue[0].commands) == 1:
                await asyncio.sleep(min(self.linger, seconds / 2))
            if not self._queue:
                continue
            batch = [self._queue.popleft()]
            size = len(batch[0].commands)
            while self._queue and size + len(self._queue[0].commands) <= self.max_batch:
                submission = self._queue.popleft()
                batch.append(submission)
                size += len(submission.commands)
            self._running[index] = True
            self._wake.set()  # the next writer may now take what is left or arrives
            try:
                await self._run(batch)
            except Exception as error:  # never let a writer die: fail the batch instead
                log.exception("ledger batch failed unexpectedly")
                for submission in batch:
                    if not submission.future.done():
                        submission.future.set_exception(error)
            finally:
                self._running[index] = False

    async def _run(self, batch: list[_Submission]) -> None:
        commands = [command for submission in batch for command in submission.commands]
        # A batch that only makes new blocks skips reading blocks: the primary key on the
        # order id refuses one that exists (a caller's retry), and the batch then runs again
        # reading them, to answer the retry with the block it made before. A refusal is only
        # trusted from a run that read them (the order may exist with other terms).
        optimistic = all(isinstance(c, BlockCash | BlockShares) for c in commands)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            started = time.perf_counter()
            try:
                results, book = await self._attempt(commands, read_blocks=not optimistic)
            except Exception as error:
                if optimistic and (isinstance(error, _ReadBlocks) or self.store.is_retryable(error)):
                    optimistic = False
                    continue
                if self.store.is_retryable(error) and attempt < MAX_ATTEMPTS:
                    RETRIES.labels(type(error).__name__).inc()
                    log.info(
                        "ledger batch conflicted; running it again",
                        extra={"attempt": attempt, "error": repr(error), "commands": len(commands)},
                    )
                    await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
                    continue
                if len(batch) > 1:
                    # Isolate the submission that fails from the others.
                    for submission in batch:
                        await self._run([submission])
                    return
                if self.store.is_retryable(error):
                    error = Unavailable("the ledger is busy; retry", retry_after_seconds=0.5)
                else:
                    log.exception(
                        "ledger command failed",
                        extra={
                            "commands": [type(c).__name__ for c in commands],
                            "request": batch[0].request_id,
                        },
                    )
                if not batch[0].future.done():
                    batch[0].future.set_exception(error)
                return
            elapsed = time.perf_counter() - started
            self._last_batch = (len(commands), elapsed)
            BATCH_SIZE.observe(len(commands))
            BATCH_SECONDS.observe(elapsed)
            for command, result in zip(commands, results, strict=True):
                _count(type(command).__name__, result.reason if isinstance(result, ServiceError) else "OK")
            for shortfall in book.shortfalls:
                SHORTFALLS.inc()
                log.error("a fill cost more than its block and the free balance", extra=vars(shortfall))
            i = 0
            for submission in batch:
                n = len(submission.commands)
                if not submission.future.done():
                    submission.future.set_result(results[i : i + n])
                i += n
            return

    async def _attempt(
        self, commands: list[Command], *, read_blocks: bool = True
    ) -> tuple[list[Result | ServiceError], Book]:
        needs = Needs()
        for command in commands:
            needs.merge(command.needs(self.schedule))
        async with self.store.unit_of_work() as uow:
            state = await uow.load(needs, read_blocks=read_blocks)
            book = Book(state, self.clock())
            results = [execute(book, self.schedule, command) for command in commands]
            if not read_blocks and any(isinstance(r, ServiceError) for r in results):
                raise _ReadBlocks
            changes = book.changes()
            if changes:
                await uow.save(changes)
        return results, book


class _Discarded(Exception):
    """Carries a preview out of the unit of work, rolling its transaction back."""

    def __init__(self, preview: BlockPreview) -> None:
        super().__init__("preview")
        self.preview = preview
