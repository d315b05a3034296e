"""Composition root: settings → adapters → use cases → HTTP transport, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from gateway.adapters.backends import Backends
from gateway.adapters.ticks import TickFeed
from gateway.app.quotes import QuoteHub
from gateway.app.sessions import Login
from gateway.domain.limits import LoginThrottle, RateLimiter, StreamSlots
from gateway.domain.tokens import TokenAuthority
from gateway.settings import GatewaySettings
from gateway.transport.app import build_app
from gateway.transport.handlers import Handlers
from gateway.transport.streams import StreamRegistry
from svc_runtime import service
from svc_runtime.messaging import Topology

log = logging.getLogger(__name__)

SERVICE = "gateway"


# Kernel send buffer of every connection (accepted sockets inherit the listener's). Linux
# would otherwise grow it to megabytes for a client that stops reading, and the write
# deadline only starts once it is full; with this, a stalled SSE client is found (and
# dropped) a write deadline after it stops, and holds at most ~128 KiB of kernel memory.
SEND_BUFFER_BYTES = 64 * 1024


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `svc_runtime.service.run` owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: GatewaySettings, stop: asyncio.Event) -> None:
    clock = time.time
    if len(settings.jwt_secret.encode()) < 32:
        log.warning("the JWT secret is shorter than 32 bytes; use a longer random one (RFC 7518 §3.2)")
    backends = Backends(
        orders_target=settings.orders_target,
        funds_target=settings.funds_target,
        marketdata_target=settings.marketdata_target,
        timeout=settings.backend_timeout,
    )
    tokens = TokenAuthority(settings.jwt_secret, ttl_seconds=settings.jwt_ttl_seconds, clock=clock)
    login = Login(backends, tokens, LoginThrottle(free_failures=settings.login_free_failures), clock)
    hub = QuoteHub(backends, pushes_per_second=settings.streams.pushes_per_second)
    feed = TickFeed(settings.nats_url, Topology(settings.namespace), hub.publish, hub.on_status)
    hub.feed_generation = feed.generation
    registry = StreamRegistry()
    handlers = Handlers(
        backends=backends,
        login=login,
        hub=hub,
        slots=StreamSlots(settings.streams.streams_per_user),
        registry=registry,
        streams=settings.streams,
    )
    draining = False

    def health() -> tuple[bool, dict[str, Any]]:
        details = {
            "status": "draining" if draining else "serving",
            "tickFeed": "subscribed" if feed.ready.is_set() else "connecting",
            "streams": len(registry),
            "backends": backends.channel_states(),
        }
        return not draining, details

    app = build_app(
        handlers=handlers,
        tokens=tokens,
        limiter=RateLimiter(settings.rate_per_second, settings.rate_burst),
        clock=time.monotonic,
        max_body_bytes=settings.max_body_bytes,
        health=health,
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=10,
        )
    )
    feed.start()
    pushing = asyncio.create_task(hub.run(), name="quote-hub")
    listener = _listen(settings.http_host, settings.http_port)
    serving = asyncio.create_task(server.serve(sockets=[listener]), name="http")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    # Drain: report unhealthy, end the streams (clients reconnect elsewhere), then let
    # in-flight requests finish.
    draining = True
    registry.close_all()
    hub.close()
    server.should_exit = True
    with contextlib.suppress(Exception):
        await serving
    stopping.cancel()
    pushing.cancel()
    await feed.stop()
    await backends.close()


def main() -> None:
    settings = GatewaySettings.from_env()

    async def run(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    service.run(SERVICE, run, metrics_port=settings.metrics_port)
