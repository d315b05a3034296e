"""Composition root: settings → adapters → use cases → HTTP transport, served by uvicorn on
the service host (which drains it on SIGTERM)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.adapters.backends import Backends
from gateway.adapters.request_rate import NatsRequestRate
from gateway.adapters.sessions import NatsSessions
from gateway.adapters.spent_tickets import NatsSpentTickets
from gateway.adapters.stream_slots import NatsStreamSlots
from gateway.adapters.ticks import TickFeed
from gateway.app.admission import Admission
from gateway.app.limits import EdgeLimits
from gateway.app.quotes import QuoteHub
from gateway.app.sessions import Sessions
from gateway.app.tickets import StreamTickets
from gateway.domain.limits import LoginGuard, RateLimiter
from gateway.domain.tickets import ticket_authority
from gateway.settings import GatewaySettings
from gateway.transport.app import build_app
from gateway.transport.handlers import Handlers
from gateway.transport.http_server import HttpServer, internal_server, listen, public_tls, stop_serving
from gateway.transport.streams import StreamRegistry
from gateway.workers import DRAIN_SECONDS, Workers, leave_interrupts_to_worker_zero, worker_number
from svc_runtime import aio, service
from svc_runtime.host import Host
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
        placements=Admission(
            in_flight=settings.placements.in_flight,
            queue=settings.placements.queue,
            queue_seconds=settings.placements.queue_seconds,
        ),
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
    hub = QuoteHub(
        backends,
        pushes_per_second=settings.streams.pushes_per_second,
        gather_seconds=settings.streams.push_gather_ms / 1000,
    )
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
    server = HttpServer.of(
        app,
        settings.http_host,
        settings.http_port,
        ssl_context=public_tls(settings),
        proxy_headers=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
    )
    first = worker_number() == 0
    if not first:
        leave_interrupts_to_worker_zero()
    internal = internal_server(settings, health) if first else None
    # Both ports bound here, before anything starts (uvicorn binding the internal one itself
    # would exit from inside its task): a taken port fails the start-up at once.
    listener = listen(
        settings.http_host,
        settings.http_port,
        shared=settings.workers > 1 or settings.shared_port,
        with_others=settings.shared_port,
    )
    internal_listener = listen(settings.metrics_host, settings.metrics_port) if internal else None
    async with Host(SERVICE, stop) as host:
        workers = Workers(settings.workers - 1 if first else 0)
        host.at_close(workers.stopped, what="gateway workers", seconds=DRAIN_SECONDS + 5)
        host.hold(backends, what="backend channels")
        for part, what in (
            (revocations, "revocation feed"),
            (session_records, "session records"),
            (feed, "tick feed"),
            (spent_tickets, "spent tickets"),
            (stream_slots, "stream slots"),
            (request_rate, "request rate"),
        ):
            part.start()
            host.hold(part, part.stop, what=what)
        # Tokens cannot be told from revoked ones until the revocations are loaded: wait a
        # little for them before serving (users' requests answer 503 until then).
        try:
            await aio.within(revocations.loaded.wait(), REVOCATIONS_WAIT_SECONDS)
        except TimeoutError:
            log.warning("revoked sessions not loaded yet; serving, users' requests wait for them")
        host.task(hub.run(), "quote-hub", cancel=True)
        if internal and internal_listener:
            internal_serving = host.task(internal.serve(sockets=[internal_listener]), "internal-http")
            host.serving(lambda: stop_serving(internal, internal_serving), what="internal http")
        serving = host.task(server.serve(sockets=[listener]), "http")

        def drain() -> None:
            nonlocal draining
            draining = True

        # Drain: report unhealthy, end the streams (clients reconnect elsewhere), then let
        # in-flight requests finish.
        host.serving(lambda: stop_serving(server, serving), what="http", readiness=drain, seconds=15)
        host.on_drain(workers.tell_stop, what="gateway workers")
        host.on_drain(registry.close_all, what="event streams")
        host.on_drain(hub.close, what="quote hub")
        await workers.start()
        host.task(workers.watch(), "workers", cancel=True)
        await host.until_stopped()


def main() -> None:
    settings = GatewaySettings.from_env()
    # The internal listener serves the metrics (with health details), not svc_runtime's.
    service.run(SERVICE, lambda stop: serve(settings, stop))
