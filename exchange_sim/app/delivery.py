"""Report delivery with an optional delay (the "delay fills" test scenario).

Reports keep their order: while a delay is armed every report waits its turn in one queue,
and disarming it lets the queue drain before new reports go straight out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from exchange_sim.app import messages as m
from exchange_sim.app.order_entry import ReportSink
from svc_runtime import aio


class DelayedDelivery:
    """A ReportSink in front of the real one."""

    def __init__(self, inner: ReportSink) -> None:
        self.inner = inner
        self.delay_seconds = 0.0
        self._queue: deque[tuple[float, m.ExecutionReport | m.CancelReject]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def set_delay(self, milliseconds: int) -> None:
        self.delay_seconds = max(0, milliseconds) / 1000.0
        self._wake.set()

    def send_execution_report(self, report: m.ExecutionReport) -> None:
        self._enqueue(report)

    def send_cancel_reject(self, reject: m.CancelReject) -> None:
        self._enqueue(reject)

    def _enqueue(self, item: m.ExecutionReport | m.CancelReject) -> None:
        if not self.delay_seconds and not self._queue:
            self._deliver(item)
            return
        self._queue.append((time.monotonic() + self.delay_seconds, item))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        self._wake.set()

    def _deliver(self, item: m.ExecutionReport | m.CancelReject) -> None:
        if isinstance(item, m.ExecutionReport):
            self.inner.send_execution_report(item)
        else:
            self.inner.send_cancel_reject(item)

    async def _drain(self) -> None:
        while self._queue:
            due, item = self._queue[0]
            wait = due - time.monotonic() if self.delay_seconds else 0.0
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await aio.within(self._wake.wait(), wait)
                continue
            self._queue.popleft()
            self._deliver(item)

    async def close(self) -> None:
        """Deliver what is queued, now."""
        self.delay_seconds = 0.0
        self._wake.set()
        if self._task is not None:
            await self._task
