"""Composition root: settings → adapters → use cases → HTTP transport, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import uvicorn

from gateway.adapters.backends import Backends
from gateway.adapters.request_rate import NatsRequestRate
from gateway.adapters.sessions import NatsSessions
from gateway.adapters.spent_tickets import NatsSpentTickets
from gateway.adapters.stream_slots import NatsStreamSlots
from gateway.adapters.ticks import TickFeed
from gateway.app.limits import EdgeLimits
from gateway.app.quotes import QuoteHub
from gateway.app.sessions import Sessions
from gateway.app.tickets import StreamTickets
from gateway.domain.limits import LoginGuard, RateLimiter
from gateway.domain.tickets import ticket_authority
from gateway.settings import GatewaySettings
from gateway.transport.app import build_app
from gateway.transport.handlers import Handlers
from gateway.transport.internal import build_internal_app
from gateway.transport.streams import StreamRegistry
from gateway.workers import Workers, leave_interrupts_to_worker_zero, worker_number
from svc_runtime import aio, service, tls
from svc_runtime.messaging import Topology
from svc_runtime.revocations import RevocationFeed
from svc_runtime.tokens import (
    ACCESS_AUDIENCE,
    MAX_SESSION_SECONDS,
    REFRESH_AUDIENCE,
    RevokedSessions,
    SigningKeys,
    UserTokens,
)

log = logging.getLogger(__name__)

SERVICE = "gateway"
REVOCATIONS_WAIT_SECONDS = 5.0


# Kernel send buffer of every connection (accepted sockets inherit the listener's). Linux
# would otherwise grow it to megabytes for a client that stops reading, and the write
# deadline only starts once it is full; with this, a stalled SSE client is found (and
# dropped) a write deadline after it stops, and holds at most ~128 KiB of kernel memory.
SEND_BUFFER_BYTES = 64 * 1024


def _listen(host: str, port: int, *, shared: bool = False, with_others: bool = False) -> socket.socket:
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
    if shared and not with_others and worker_number() == 0 and _held_elsewhere(sock.getsockname()[1]):
        # SO_REUSEPORT lets any process of this user bind the port too (another stack's
        # gateway that picked the same one): the port counts as taken, as it would be
        # without the option, and the stack starts the gateway on another.
        sock.close()
        raise OSError(errno.EADDRINUSE, f"port {port} is already served by another process")
    sock.setblocking(False)
    return sock


def _held_elsewhere(port: int) -> bool:
    """Whether a process other than this one listens on `port` (this one's workers are not
    started yet). Processes of other users are not shown, and could not share it anyway."""
    return any(
        c.status == psutil.CONN_LISTEN
        and c.laddr
        and c.laddr.port == port
        and c.pid not in (None, os.getpid())
        for c in psutil.net_connections("tcp")
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: `svc_runtime.service.run` owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @classmethod
    def of(
        cls, app: Any, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, **tuning: Any
    ) -> _Server:
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


def _public_tls(settings: GatewaySettings) -> ssl.SSLContext | None:
    """The public listener's TLS (1.2 or later), or None in plain-text mode, said loudly."""
    if tls.plaintext():
        tls.warn_plaintext(f"the REST + SSE listener {settings.http_host}:{settings.http_port}")
        return None
    return tls.server_context(tls.required())


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
    if not 0 < settings.session_seconds <= MAX_SESSION_SECONDS:
        raise ValueError(
            f"a session lasts 1 to {MAX_SESSION_SECONDS} seconds, not {settings.session_seconds}"
        )
    # One key set and one revoked-sessions set for every kind of user token this process
    # issues or checks; revocations arrive through NATS from whichever process made them.
    keys = SigningKeys.from_env(settings.jwt_secret)
    revoked = RevokedSessions(clock)
    revocations = RevocationFeed(settings.nats_url, Topology(settings.namespace), revoked)
    tokens = UserTokens(
        keys, audience=ACCESS_AUDIENCE, ttl_seconds=settings.jwt_ttl_seconds, revoked=revoked, clock=clock
    )
    refresh_tokens = UserTokens(
        keys, audience=REFRESH_AUDIENCE, ttl_seconds=settings.session_seconds, revoked=revoked, clock=clock
    )
    abuse = settings.abuse
    stream_slots = NatsStreamSlots(
        settings.nats_url, Topology(settings.namespace), settings.streams.streams_per_user
    )
    request_rate = NatsRequestRate(
        settings.nats_url, Topology(settings.namespace), settings.rate_per_second, settings.rate_burst
    )
    limits = EdgeLimits(
        # Counted across every gateway process, as open streams are.
        requests=request_rate,
        auth_failures=RateLimiter(abuse.auth_failures_per_second, abuse.auth_failure_burst),
        logins=LoginGuard(
            free_failures=abuse.login_free_failures,
            address_failures=abuse.login_address_failures,
            user_failures=abuse.login_user_failures,
        ),
        # Counted across every gateway process (workers and replicas) through NATS KV.
        slots=stream_slots,
        streams=settings.streams,
        orders=settings.orders,
        max_body_bytes=settings.max_body_bytes,
    )
    session_records = NatsSessions(settings.nats_url, Topology(settings.namespace), revocations)
    sessions = Sessions(
        backends,
        tokens,
        refresh_tokens,
        session_records,
        guard=limits.logins,
        clock=clock,
        session_seconds=settings.session_seconds,
    )
    spent_tickets = NatsSpentTickets(settings.nats_url, Topology(settings.namespace))
    tickets = StreamTickets(
        ticket_authority(
            settings.jwt_secret, ttl_seconds=settings.stream_ticket_seconds, clock=clock, revoked=revoked
        ),
        spent_tickets,
    )
    hub = QuoteHub(backends, pushes_per_second=settings.streams.pushes_per_second)
    feed = TickFeed(settings.nats_url, Topology(settings.namespace), hub.publish, hub.on_status)
    hub.feed_generation = feed.generation
    registry = StreamRegistry(revoked)
    handlers = Handlers(
        backends=backends,
        sessions=sessions,
        hub=hub,
        registry=registry,
        limits=limits,
        clock=time.monotonic,
    )
    draining = False

    def health() -> tuple[bool, dict[str, Any]]:
        details = {
            "status": "draining" if draining else "serving",
            "tickFeed": "subscribed" if feed.ready.is_set() else "connecting",
            "streamTickets": "ready" if spent_tickets.ready else "connecting",
            "sessions": "ready" if session_records.ready and revoked.ready else "connecting",
            "requestRate": "shared" if request_rate.record.ready else "connecting",
            "streams": len(registry),
            "backends": backends.channel_states(),
        }
        return not draining, details

    def liveness() -> tuple[bool, dict[str, Any]]:
        """All the public port tells: serving or draining."""
        return not draining, {"status": "draining" if draining else "serving"}

    app = build_app(
        handlers=handlers,
        tokens=tokens,
        limits=limits,
        clock=time.monotonic,
        health=liveness,
        tickets=tickets,
        cors_origins=settings.cors_origins,
    )
    server = _Server.of(
        app,
        settings.http_host,
        settings.http_port,
        ssl_context=_public_tls(settings),
        proxy_headers=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
    )
    first = worker_number() == 0
    if not first:
        leave_interrupts_to_worker_zero()
    internal = _internal_server(settings, health) if first else None
    # Both ports bound here, before anything starts (uvicorn binding the internal one itself
    # would exit from inside its task): a taken port fails the start-up at once.
    listener = _listen(
        settings.http_host,
        settings.http_port,
        shared=settings.workers > 1 or settings.shared_port,
        with_others=settings.shared_port,
    )
    internal_listener = _listen(settings.metrics_host, settings.metrics_port) if internal else None
    revocations.start()
    session_records.start()
    feed.start()
    spent_tickets.start()
    stream_slots.start()
    request_rate.start()
    # Tokens cannot be told from revoked ones until the revocations are loaded: wait a
    # little for them before serving (users' requests answer 503 until then).
    try:
        await aio.within(revocations.loaded.wait(), REVOCATIONS_WAIT_SECONDS)
    except TimeoutError:
        log.warning("revoked sessions not loaded yet; serving, users' requests wait for them")
    pushing = service.supervise(hub.run(), name="quote-hub")
    serving = service.supervise(server.serve(sockets=[listener]), name="http")
    workers = Workers(settings.workers - 1 if first else 0)
    await workers.start()
    service.supervise(workers.watch(), name="workers")
    internal_serving = (
        service.supervise(internal.serve(sockets=[internal_listener]), name="internal-http")
        if internal
        else None
    )
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    # Drain: report unhealthy, end the streams (clients reconnect elsewhere), then let
    # in-flight requests finish.
    draining = True
    workers.tell_stop()
    registry.close_all()
    hub.close()
    server.should_exit = True
    with contextlib.suppress(Exception):
        await serving
    stopping.cancel()
    pushing.cancel()
    await feed.stop()
    await spent_tickets.stop()
    await stream_slots.stop()
    await request_rate.stop()
    await session_records.stop()
    await revocations.stop()
    if internal and internal_serving:
        internal.should_exit = True
        with contextlib.suppress(Exception):
            await internal_serving
    await backends.close()
    await workers.stopped()


def _internal_server(
    settings: GatewaySettings, health: Callable[[], tuple[bool, dict[str, Any]]]
) -> _Server | None:
    """Metrics and detailed health on their own port (none without BROKERMESH_METRICS_PORT).
    Plain HTTP: it listens on loopback unless an operator opens it, for a scraper on the
    same host, and carries no credentials."""
    if not settings.metrics_port:
        return None
    return _Server.of(build_internal_app(health), settings.metrics_host, settings.metrics_port)


def main() -> None:
    settings = GatewaySettings.from_env()

    async def run(stop: asyncio.Event) -> None:
        await serve(settings, stop)

    # The internal listener serves the metrics (with health details), not svc_runtime's.
    service.run(SERVICE, run)
