"""The shape every service process shares, so that its composition root only composes.

A service opens its resources (database pools, the NATS connection, gRPC channels, a FIX
session) onto the host, starts its background tasks and periodic loops through it, hands it
its servers, and waits for `stop`. The host then drains, always in the same order:

1. readiness: every gRPC server's health reports NOT_SERVING (and any other readiness the
   service registered says "draining"), so balancers and clients look elsewhere;
2. the `on_drain` steps (ending open streams, say), so that no server waits its whole grace
   on a stream that never ends;
3. servers: each stops accepting and finishes its in-flight calls within its grace;
4. background tasks: `stop` is set, their stop hooks called (a consumer stops pulling and
   finishes the message in hand), and each is awaited for a bounded time, then cancelled;
5. resources: closed in the reverse order of opening, on one `contextlib.AsyncExitStack`.

Every step is bounded in time and logged; one that fails or overruns is logged and the
drain goes on, so a stuck close cannot keep a stopping process alive. Supervision is
`svc_runtime.service`'s: a task that ends while the process is not stopping stops it with
a non-zero exit code, and the host drains as for SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

from svc_runtime import aio, service

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long one close, one drain step or the background tasks may take by default.
CLOSE_SECONDS = 10.0
TASKS_SECONDS = 10.0
GRPC_GRACE_SECONDS = 5.0

Step = Callable[[], Awaitable[object] | object]


class _Stoppable(Protocol):
    """The gRPC server of svc_runtime.grpc_server, as far as the host drives it."""

    @property
    def health(self) -> Any: ...

    @property
    def server(self) -> Any: ...

    async def start(self) -> int: ...


@dataclass
class _Task:
    task: asyncio.Task[Any]
    stop: Step | None
    cancel: bool


@dataclass
class _Server:
    what: str
    readiness: Step | None
    stop: Step
    seconds: float


def _close_of(resource: object) -> Step:
    close = getattr(resource, "close", None)
    if not callable(close):
        raise TypeError(f"{type(resource).__name__} has no close(): say how to close it")
    return close


async def _call(step: Step) -> None:
    result = step()
    if inspect.isawaitable(result):
        await result


class Host:
    """One service process: its resources, background tasks, servers and drain.

    Used as `async with Host(SERVICE, stop) as host:`; leaving the block (when `stop` is set
    and the service is done waiting, or because start-up failed) drains it."""

    def __init__(
        self,
        service_name: str,
        stop: asyncio.Event,
        *,
        close_seconds: float = CLOSE_SECONDS,
        tasks_seconds: float = TASKS_SECONDS,
    ) -> None:
        self.service = service_name
        self.stop = stop
        self.close_seconds = close_seconds
        self.tasks_seconds = tasks_seconds
        self._resources = contextlib.AsyncExitStack()
        self._tasks: list[_Task] = []
        self._servers: list[_Server] = []
        self._on_drain: list[tuple[str, Step]] = []
        self.draining = False

    async def __aenter__(self) -> Host:
        await self._resources.__aenter__()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A failed start-up drains too: what it opened is closed, what it started stops.
        await self.drain()

    # Resources -----------------------------------------------------------------------------

    def hold(self, resource: T, close: Step | None = None, *, what: str, seconds: float | None = None) -> T:
        """Keep `resource` until the end: `close` (by default its `close()`) runs when the host
        closes its resources, after the servers and the background tasks have stopped."""
        self.at_close(close if close is not None else _close_of(resource), what=what, seconds=seconds)
        return resource

    def at_close(self, step: Step, *, what: str, seconds: float | None = None) -> None:
        """Run `step` when the resources close, in their order (before those opened earlier)."""
        self._resources.push_async_callback(self._bounded, what, step, seconds or self.close_seconds)

    # Background work -----------------------------------------------------------------------

    def task(
        self,
        coro: Coroutine[Any, Any, Any],
        name: str,
        *,
        stop: Step | None = None,
        cancel: bool = False,
    ) -> asyncio.Task[Any]:
        """Start a supervised background task (its unexpected end stops the process). At
        the drain, `stop` is called (a consumer stops pulling) and the task is awaited; a task
        with `cancel` has nothing in hand worth finishing and is cancelled at once."""
        task = service.supervise(coro, name)
        self._tasks.append(_Task(task, stop, cancel))
        return task

    def every(
        self,
        seconds: float,
        round_: Callable[[], Awaitable[object]],
        name: str,
        *,
        log: logging.Logger = log,
        on_error: Callable[[], None] | None = None,
    ) -> asyncio.Task[Any]:
        """Run `round_` every `seconds` until the host stops, as a supervised task."""
        return self.task(aio.every(seconds, self.stop, round_, what=name, log=log, on_error=on_error), name)

    # Servers -------------------------------------------------------------------------------

    async def serve_grpc(
        self, server: _Stoppable, *, grace: float = GRPC_GRACE_SECONDS, what: str = "grpc"
    ) -> int:
        """Start `server`; at the drain its health says NOT_SERVING first, then it stops
        accepting and finishes in-flight calls within `grace`. The port it listens on."""
        port = await server.start()

        async def stop() -> None:
            await server.server.stop(grace)

        self._servers.append(
            _Server(what, server.health.enter_graceful_shutdown, stop, grace + self.close_seconds)
        )
        return port

    def serving(
        self, stop: Step, *, what: str, readiness: Step | None = None, seconds: float | None = None
    ) -> None:
        """A server the service started itself (HTTP): `readiness` runs with the drain's first
        step, `stop` when the servers stop."""
        self._servers.append(_Server(what, readiness, stop, seconds or self.close_seconds))

    def on_drain(self, step: Step, *, what: str) -> None:
        """Run `step` once readiness says draining, before the servers stop."""
        self._on_drain.append((what, step))

    # Running and draining ------------------------------------------------------------------

    async def until_stopped(self) -> None:
        """Wait for SIGTERM or SIGINT, or for a background task's unexpected end."""
        await self.stop.wait()

    async def drain(self) -> None:
        """Stop in the order of the module's docstring; safe to call twice."""
        if self.draining:
            return
        self.draining = True
        self.stop.set()
        started = time.monotonic()
        log.info("draining", extra={"service": self.service})
        for server in self._servers:
            if server.readiness is not None:
                await self._bounded(f"{server.what} readiness", server.readiness, self.close_seconds)
        for what, step in self._on_drain:
            await self._bounded(what, step, self.close_seconds)
        for server in reversed(self._servers):
            await self._bounded(f"{server.what} server", server.stop, server.seconds)
        await self._stop_tasks()
        await self._resources.aclose()
        log.info("drained", extra={"service": self.service, "seconds": round(time.monotonic() - started, 3)})

    async def _stop_tasks(self) -> None:
        for entry in self._tasks:
            if entry.cancel:
                entry.task.cancel()
            elif entry.stop is not None:
                await self._bounded(f"{entry.task.get_name()} stop", entry.stop, self.close_seconds)
        tasks = [entry.task for entry in self._tasks]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.tasks_seconds)
        for task in pending:
            log.warning(
                "background task did not stop in time; cancelled",
                extra={"task": task.get_name(), "seconds": self.tasks_seconds},
            )
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self.close_seconds)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning(
                    "background task ended with an error while stopping",
                    extra={"task": task.get_name()},
                    exc_info=task.exception(),
                )

    async def _bounded(self, what: str, step: Step, seconds: float) -> None:
        started = time.monotonic()
        try:
            await aio.within(_call(step), seconds)
        except TimeoutError:
            log.warning("close timed out", extra={"what": what, "seconds": seconds})
            return
        except Exception:
            log.warning("close failed", extra={"what": what}, exc_info=True)
            return
        log.info("closed", extra={"what": what, "seconds": round(time.monotonic() - started, 3)})
