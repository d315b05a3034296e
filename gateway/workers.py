"""Several gateway processes on one port, so that fan-out and JSON work use every core.

The process the stack starts is worker 0: it serves like any worker and also starts the
others (`python -m gateway` with `BROKERMESH_GATEWAY_WORKER` set), each binding its own
listening socket with SO_REUSEPORT, so the kernel spreads new connections over them.
Worker 0 alone serves the internal listener (metrics and health details: its own process's).

Crash-only, as every service: a worker that exits while the gateway is not stopping stops
worker 0, and the supervisor restarts the whole gateway. On stop, every worker is told at
once (SIGTERM) and drains its own streams and requests; worker 0 waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from svc_runtime import aio, config
from svc_runtime.infra.processes import die_with_parent

log = logging.getLogger(__name__)

# Set in the environment of the workers worker 0 starts: their number (1, 2, …).
WORKER = "BROKERMESH_GATEWAY_WORKER"
# A worker that has not drained this long after SIGTERM is killed.
DRAIN_SECONDS = 20.0


def worker_number() -> int:
    return config.env_int(WORKER, 0)


def leave_interrupts_to_worker_zero() -> None:
    """In workers 1…n: Ctrl-C in a terminal reaches the whole process group, but only
    worker 0 acts on it (it tells the others with SIGTERM), so a worker never seems to have
    died on its own while the gateway is being stopped."""
    asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Workers:
    """The workers beyond worker 0, owned by worker 0."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[asyncio.subprocess.Process] = []
        self.stopping = False

    async def start(self) -> None:
        for number in range(1, self.count + 1):
            env = {**os.environ, WORKER: str(number), config.METRICS_PORT: "0"}
            process = await asyncio.create_subprocess_exec(
                *die_with_parent([sys.executable, "-m", "gateway"], signal.SIGTERM),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
            )
            self.processes.append(process)
        if self.processes:
            log.info("gateway workers started", extra={"workers": self.count + 1})

    async def watch(self) -> None:
        """Return when a worker exits (a supervised task: ending stops the gateway)."""
        if not self.processes:
            await asyncio.Event().wait()
        waits = [asyncio.create_task(p.wait()) for p in self.processes]
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if not self.stopping:
            codes = [task.result() for task in done]
            log.error("a gateway worker exited; stopping the gateway", extra={"exit_codes": codes})

    def tell_stop(self) -> None:
        self.stopping = True
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)

    async def stopped(self) -> None:
        self.tell_stop()
        for process in self.processes:
            try:
                await aio.within(process.wait(), DRAIN_SECONDS)
            except TimeoutError:
                log.warning("a gateway worker did not drain in time; killing it", extra={"pid": process.pid})
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
