"""Process bootstrap shared by every service's composition root, and the supervision of its
background tasks (crash-only: a process whose background work died stops and is restarted,
rather than serving on without it)."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import faulthandler
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

from prometheus_client import start_http_server

from svc_runtime import auth, logs, tracing

log = logging.getLogger(__name__)

# The exit code of a process stopped because a background task died (EX_SOFTWARE).
EXIT_TASK_FAILED = 70
# The exit code of a process that could not listen on an address it was given because another
# process holds it (errno EADDRINUSE): its supervisor may give it other ports and start it again.
EXIT_ADDRESS_IN_USE = 98
# Test hook: with BROKERMESH_FAULT_INJECTION=1, SIGUSR2 kills the supervised task named by
# BROKERMESH_FAULT_TASK (every supervised task when unset), as a crash inside it would.
FAULT_INJECTION = "BROKERMESH_FAULT_INJECTION"
FAULT_TASK = "BROKERMESH_FAULT_TASK"


class Supervisor:
    """The background tasks of one process. Any of them that ends while the process is not
    stopping — with an exception, by returning, or cancelled by someone else — is logged and
    sets `stop`: the process shuts down and exits non-zero, so its supervisor restarts it."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.tasks: set[asyncio.Task[Any]] = set()
        self.failed: str | None = None
        self._injected: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if self.stop.is_set() and task not in self._injected:
            return
        error = None if task.cancelled() else task.exception()
        log.error(
            "background task ended unexpectedly; stopping the process",
            extra={"task": task.get_name(), "error": repr(error) if error else "cancelled or returned"},
            exc_info=error,
        )
        self.failed = self.failed or task.get_name()
        self.stop.set()

    def inject_fault(self, name: str = "") -> None:
        for task in list(self.tasks):
            if not name or task.get_name() == name:
                self._injected.add(task)
                task.cancel()


# The supervisor of the process running under `run`; tasks and calls inherit it.
_supervisor: contextvars.ContextVar[Supervisor | None] = contextvars.ContextVar(
    "brokermesh_supervisor", default=None
)


def supervise(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Start a long-running background task of this process, supervised when the process runs
    under `run` (elsewhere, in an in-process test say, a plain task)."""
    supervisor = _supervisor.get()
    if supervisor is None:
        return asyncio.get_running_loop().create_task(coro, name=name)
    return supervisor.start(coro, name)


def run(service: str, main: Callable[[asyncio.Event], Awaitable[None]], *, metrics_port: int = 0) -> NoReturn:
    """Configure logs, tracing (when asked for), start metrics, install uvloop, and run
    `main(stop)` until SIGTERM or SIGINT sets `stop` (or a supervised task dies); `main`
    then shuts down gracefully and returns, and the process exits: 0, or EXIT_TASK_FAILED
    when a supervised task died."""
    logs.configure(service)
    # A crash in native code (quickfix, grpc, uvloop) writes every thread's Python stack to
    # the log before the process dies, and `kill -USR1 <pid>` writes them on demand: what an
    # operator needs to see where a stuck or crashed process was.
    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    auth.configure_process(service)
    tracing.configure(service)
    try:
        code = _run(service, main, metrics_port)
    except BaseException as error:
        if address_in_use(error):
            log.warning(
                "cannot listen: the address is in use", extra={"service": service, "error": str(error)}
            )
            code = EXIT_ADDRESS_IN_USE
        elif _without_finalizing.is_set():
            log.exception("stopped with an error", extra={"service": service})
            code = 1
        else:
            raise
    _leave(code)


# Set by a process whose native engine must not be shut down or finalized (quickfix: see
# svc_runtime.fix.log_out): the process leaves with os._exit once its own shutdown is done.
_without_finalizing = threading.Event()


def leave_without_finalizing() -> None:
    """Have `run` end the process with os._exit: no interpreter finalization, so no native
    destructors or threads run after the service's own shutdown. As safe as a kill -9 at that
    point, which every service recovers from."""
    _without_finalizing.set()


def _leave(code: int) -> NoReturn:
    if _without_finalizing.is_set():
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    sys.exit(code)


def address_in_use(error: BaseException | None) -> bool:
    """Whether `error` (or what it wraps) is a failed bind to an address another process holds."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
            return True
        if isinstance(error, BaseExceptionGroup):
            return any(address_in_use(inner) for inner in error.exceptions)
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _run(service: str, main: Callable[[asyncio.Event], Awaitable[None]], metrics_port: int) -> int:
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")

    stop = asyncio.Event()
    supervisor = Supervisor(stop)

    async def runner() -> None:
        _supervisor.set(supervisor)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if os.environ.get(FAULT_INJECTION) == "1":
            loop.add_signal_handler(signal.SIGUSR2, supervisor.inject_fault, os.environ.get(FAULT_TASK, ""))
        # Objects made at start-up live for the process: keep them out of GC passes.
        gc.collect()
        gc.freeze()
        log.info("starting", extra={"service": service})
        try:
            await main(stop)
        except BaseException:
            # A start-up that failed (a port taken, say) ends the background tasks it started:
            # they end because the process stops, not because they died.
            stop.set()
            raise
        log.info("stopped", extra={"service": service})

    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop does not build on Windows
            asyncio.run(runner())
        else:
            uvloop.run(runner())
    except BaseException as error:
        # A taken port says more than the background tasks its failed start-up took down.
        if not supervisor.failed or address_in_use(error):
            raise
        # The shutdown after a dead task may trip over what the task left behind; the
        # cause is logged already, and the exit code says it.
        log.exception("shutdown after a background task died was not clean")
    finally:
        tracing.shutdown()  # the last spans are written before the process ends
    return EXIT_TASK_FAILED if supervisor.failed else 0
