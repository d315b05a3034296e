"""The gateway's HTTP servers: uvicorn on sockets bound before it starts, its public
listener's TLS, and the internal listener for metrics and detailed health."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import uvicorn

from gateway.settings import GatewaySettings
from gateway.transport.internal import build_internal_app
from gateway.workers import worker_number
from svc_runtime import tls

# Kernel send buffer of every connection (accepted sockets inherit the listener's). Linux
# would otherwise grow it to megabytes for a client that stops reading, and the write
# deadline only starts once it is full; with this, a stalled SSE client is found (and
# dropped) a write deadline after it stops, and holds at most ~128 KiB of kernel memory.
SEND_BUFFER_BYTES = 64 * 1024


def listen(host: str, port: int, *, shared: bool = False, with_others: bool = False) -> socket.socket:
    """A listening socket; `shared`: with SO_REUSEPORT, for this gateway's workers, and with
    `with_others` also for the other gateway processes of the stack (replicas)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:  # every worker binds the port; the kernel spreads connections over them
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    sock.bind((host, port))
    sock.listen(2048)
    if shared and not with_others and worker_number() == 0 and held_elsewhere(sock.getsockname()[1]):
        # SO_REUSEPORT lets any process of this user bind the port too (another stack's
        # gateway that picked the same one): the port counts as taken, as it would be
        # without the option, and the stack starts the gateway on another.
        sock.close()
        raise OSError(errno.EADDRINUSE, f"port {port} is already served by another process")
    sock.setblocking(False)
    return sock


def held_elsewhere(port: int) -> bool:
    """Whether a process other than this one listens on `port` (this one's workers are not
    started yet). Processes of other users are not shown, and could not share it anyway."""
    return any(
        c.status == psutil.CONN_LISTEN
        and c.laddr
        and c.laddr.port == port
        and c.pid not in (None, os.getpid())
        for c in psutil.net_connections("tcp")
    )


class HttpServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `svc_runtime.service.run` owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @classmethod
    def of(
        cls, app: Any, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, **tuning: Any
    ) -> HttpServer:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            **tuning,
        )
        # uvicorn's own TLS settings cannot set a minimum version; the context made here does.
        config.load()
        config.ssl = ssl_context
        return cls(config)


def public_tls(settings: GatewaySettings) -> ssl.SSLContext | None:
    """The public listener's TLS (1.2 or later), or None in plain-text mode, said loudly."""
    if tls.plaintext():
        tls.warn_plaintext(f"the REST + SSE listener {settings.http_host}:{settings.http_port}")
        return None
    return tls.server_context(tls.required())


def internal_server(
    settings: GatewaySettings, health: Callable[[], tuple[bool, dict[str, Any]]]
) -> HttpServer | None:
    """Metrics and detailed health on their own port (none without BROKERMESH_METRICS_PORT).
    Plain HTTP: it listens on loopback unless an operator opens it, for a scraper on the
    same host, and carries no credentials."""
    if not settings.metrics_port:
        return None
    return HttpServer.of(build_internal_app(health), settings.metrics_host, settings.metrics_port)


async def stop_serving(server: HttpServer, serving: asyncio.Task[Any]) -> None:
    """Stop accepting; in-flight requests finish within uvicorn's graceful-shutdown timeout."""
    server.should_exit = True
    with contextlib.suppress(Exception):
        await serving
