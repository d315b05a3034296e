"""Process bootstrap shared by every service's composition root."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable

from prometheus_client import start_http_server

from svc_runtime import auth, logs

log = logging.getLogger(__name__)


def run(service: str, main: Callable[[asyncio.Event], Awaitable[None]], *, metrics_port: int = 0) -> None:
    """Configure logs, start metrics, install uvloop, and run `main(stop)` until SIGTERM or
    SIGINT sets `stop`; `main` then shuts down gracefully and returns."""
    logs.configure(service)
    auth.configure_process(service)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # Objects made at start-up live for the process: keep them out of GC passes.
        gc.collect()
        gc.freeze()
        log.info("starting", extra={"service": service})
        await main(stop)
        log.info("stopped", extra={"service": service})

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop does not build on Windows
        asyncio.run(runner())
    else:
        uvloop.run(runner())
