"""The gRPC server every service runs: TLS, authentication and authorization of every call,
health checks, reflection, request ids, errors with details, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import asyncpg
import grpc
import nats.errors
import nats.js.errors
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import Counter, Histogram

from svc_runtime import aio, auth, config, context, messaging, tls, tracing
from svc_runtime.access import ANY_USER, Rule, owns, rule_for
from svc_runtime.config import GRPC_REUSEPORT, env_bool
from svc_runtime.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
    to_rpc_status,
)
from svc_runtime.revocations import RevocationFeed
from svc_runtime.tokens import REFUSED_MESSAGE, RevokedSessions

log = logging.getLogger(__name__)

RPC_HANDLED = Counter("grpc_server_handled_total", "RPCs completed", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "RPC latency",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
AUTH_REFUSED = Counter(
    "grpc_server_auth_refused_total", "Calls refused by authentication", ["service", "method", "reason"]
)
STREAMS_REVOKED = Counter(
    "grpc_server_streams_revoked_total", "Open streams ended because their session was revoked", ["method"]
)
# A relayed actor is at most this long and printable (it lands in audit rows and logs).
_MAX_ACTOR = 128
# How long a starting server waits to learn the revoked sessions before serving anyway
# (users' calls are answered UNAVAILABLE until it has).
_REVOCATIONS_WAIT_SECONDS = 5.0


def _split(method: str) -> tuple[str, str]:
    _, service, name = method.split("/", 2)
    return service.rsplit(".", 1)[-1], name


# What a lost PostgreSQL or NATS connection raises, directly or as the cause of a wrapper
# (SQLAlchemy's): the caller should retry shortly rather than see an internal error.
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # the server is shutting down or starting
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)


def dependency_outage(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says PostgreSQL or NATS cannot be reached now."""
    return _in_chain(
        error,
        lambda seen: (
            isinstance(seen, _OUTAGES)
            or (isinstance(seen, asyncpg.InterfaceError) and "connection is closed" in str(seen))
        ),
    )


def _in_chain(error: BaseException, matches: Callable[[BaseException], bool]) -> bool:
    """Whether `error` or one of its causes (at most 8 deep) `matches`."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return False
        if matches(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# What PostgreSQL says of text it cannot store (a NUL byte, a character outside the
# database's encoding): the client's input, refused before anything was written.
_UNSTORABLE_TEXT: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)


def _meaning(error: Exception, method: str) -> Exception:
    """The ServiceError a known kind of failure stands for (logged as such); any other
    error unchanged. Applied before the outcome is counted, so that the metric and the
    caller see the same status."""
    if isinstance(error, ServiceError):
        return error
    if _in_chain(error, lambda seen: isinstance(seen, _UNSTORABLE_TEXT)):
        log.warning("rpc refused: unstorable text", extra={"method": method, "error": repr(error)})
        return InvalidArgument(
            "a text field holds a character that cannot be stored (such as U+0000)", reason="INVALID_ARGUMENT"
        )
    if dependency_outage(error):
        log.warning("rpc failed: a dependency is unavailable", extra={"method": method, "error": repr(error)})
        return Unavailable(
            "a service this call needs is unavailable; retry shortly",
            reason="DEPENDENCY_UNAVAILABLE",
            retry_after_seconds=1.0,
        )
    return error


async def _abort_for(error: Exception, ctx: grpc.aio.ServicerContext, method: str) -> None:
    """`error` as the caller's status (after `_meaning`): a rich status for a ServiceError,
    INTERNAL with the request id for anything else."""
    if isinstance(error, ServiceError):
        if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            log.warning(
                "rpc failed", extra={"method": method, "reason": error.reason, "error": error.message}
            )
        await ctx.abort_with_status(to_rpc_status(error))
    log.exception("unexpected error", extra={"method": method}, exc_info=error)
    await ctx.abort(grpc.StatusCode.INTERNAL, f"internal error; request id {context.request_id()}")


@dataclass(frozen=True, slots=True)
class GuardedMethod:
    """What the guard needs to know of one method, fixed at registration."""

    rule: Rule
    service: str
    name: str
    parse: Callable[[bytes], Any]


class Guard:
    """Admits a call of one method: who the caller is (the verified token), whether the
    method's rule accepts them, and, for a user, whether the request names their own
    resources. Sets the request context's actor from the credential, never from what the
    caller claims; only a service may relay the actor it serves (`x-actor`)."""

    def __init__(self, verifier: auth.Verifier, feed: RevocationFeed | None = None) -> None:
        self.verifier = verifier
        self.feed = feed

    @classmethod
    def for_process(cls) -> Guard:
        name = auth.process_name()
        if not name:
            raise RuntimeError("a gRPC server needs the process's service name (svc_runtime.service.run)")
        nats_url = config.env(config.NATS_URL, "")
        if not nats_url:
            return cls(auth.Verifier.from_env(name))
        revoked = RevokedSessions()
        topology = messaging.Topology(config.env(config.NAMESPACE, config.DEFAULT_NAMESPACE))
        return cls(auth.Verifier.from_env(name, revoked), RevocationFeed(nats_url, topology, revoked))

    @property
    def revoked(self) -> RevokedSessions | None:
        return self.verifier.revoked

    async def start(self) -> None:
        if self.feed is None:
            return
        self.feed.start()
        try:
            await aio.within(self.feed.loaded.wait(), _REVOCATIONS_WAIT_SECONDS)
        except TimeoutError:
            log.warning("revoked sessions not loaded yet; users' calls wait for them")

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.stop()

    def admit(self, method: GuardedMethod, metadata: Any, payload: bytes, peer: Callable[[], str]) -> Any:
        """The request parsed from `payload`, once the caller is admitted. The caller is
        checked before the payload is parsed: an unauthenticated call is refused as such
        whatever bytes it sent, and costs no parsing."""
        return self.admit_principal(method, metadata, payload, peer)[0]

    def admit_principal(
        self, method: GuardedMethod, metadata: Any, payload: bytes, peer: Callable[[], str]
    ) -> tuple[Any, auth.Principal | None]:
        """`admit`, and who was admitted (None for an open method)."""
        rule, service, name, parse = method.rule, method.service, method.name, method.parse
        if rule.open:
            return parse(payload), None
        authorization = relayed = ""
        for key, value in metadata or ():
            if key == auth.AUTHORIZATION_METADATA:
                authorization = value
            elif key == context.ACTOR_METADATA:
                relayed = value
        if not authorization:
            self._refuse(service, name, "missing")
        try:
            principal = self.verifier.verify(authorization)
        except auth.Refused as refused:
            self._refuse(service, name, refused.why)
        if not rule.admits(principal):
            AUTH_REFUSED.labels(service, name, "not allowed").inc()
            raise PermissionDenied("not allowed", reason="PERMISSION_DENIED")
        try:
            request = parse(payload)
        except DecodeError:
            raise InvalidArgument("the request is not a valid message", reason="MALFORMED_REQUEST") from None
        actor, user = principal.actor, principal.name
        if principal.kind is not auth.Kind.USER:
            actor = principal.actor if principal.kind is auth.Kind.OPERATOR else ""
            if principal.kind is auth.Kind.SERVICE and relayed.isprintable() and len(relayed) <= _MAX_ACTOR:
                actor = relayed
            user = actor[5:] if actor.startswith("user:") else ""
        if user and rule.user is not None and rule.user != ANY_USER:
            resource = getattr(request, rule.user)
            if not owns(user, resource):
                raise NotFound(f"{resource or 'resource'} not found", reason="NOT_FOUND")
        if principal.kind is not auth.Kind.SERVICE:
            # Who called from where is what the connection says; only a service relays the
            # address of the client it serves (`x-client-ip`).
            context.set_current(replace(context.current(), actor=actor, client_ip=_address_of(peer())))
        elif actor:
            context.set_current(replace(context.current(), actor=actor))
        if principal.kind is auth.Kind.OPERATOR:
            # Services without an audit table of their own (funds, exec, the exchange) still
            # leave a line naming who did what.
            log.info(
                "operator call",
                extra={"actor": actor, "method": f"{service}/{name}", "request_id": context.request_id()},
            )
        return request, principal

    @staticmethod
    def _refuse(service: str, name: str, reason: str) -> NoReturn:
        AUTH_REFUSED.labels(service, name, reason).inc()
        log.info("call not authenticated", extra={"method": f"{service}/{name}", "reason": reason})
        # The same answer whatever the cause: nothing for a prober to learn.
        raise Unauthenticated(REFUSED_MESSAGE, reason="UNAUTHENTICATED")


def _address_of(peer: str) -> str:
    """`ipv4:10.0.0.7:50412` → `10.0.0.7`; `ipv6:[::1]:50412` → `::1`."""
    _, _, address = peer.partition(":")
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]")


class _Handling:
    """One call of a method: its request context restored, its outcome counted, and an
    error turned into the status the caller gets; a server span when tracing is on. (A
    class: cheaper per call than a generator-based context manager.)"""

    __slots__ = ("ctx", "metadata", "method", "name", "service", "span")

    def __init__(self, ctx: grpc.aio.ServicerContext, method: str, service: str, name: str) -> None:
        self.ctx, self.method, self.service, self.name = ctx, method, service, name
        self.metadata: Any = ()
        # No span object at all while tracing is off: this runs on every call.
        self.span = tracing.span(method[1:], kind="server") if tracing.enabled() else None

    async def __aenter__(self) -> _Handling:
        self.metadata = self.ctx.invocation_metadata()
        context.set_current(context.from_metadata(self.metadata))
        if self.span is not None:
            self.span.__enter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: Any
    ) -> None:
        if isinstance(error, (asyncio.CancelledError, grpc.aio.AbortError)):
            code = "ABORTED_OR_CANCELLED"
        elif isinstance(error, Exception):
            error = _meaning(error, self.method)
            code = error.code.name if isinstance(error, ServiceError) else "INTERNAL"
        else:
            code = "OK"
        RPC_HANDLED.labels(self.service, self.name, code).inc()
        if self.span is not None:
            self.span.set("rpc.grpc.status_code", code)
            if code != "OK":
                self.span.fail(code)
            self.span.__exit__(None, None, None)
        if isinstance(error, Exception) and not isinstance(error, grpc.aio.AbortError):
            await _abort_for(error, self.ctx, self.method)


def _unparsed(payload: bytes) -> bytes:
    return payload


def instrumented(method: str, handler: grpc.RpcMethodHandler, guard: Guard) -> grpc.RpcMethodHandler:
    """`handler` for `method` (`/package.Service/Method`), wrapped to admit the caller by
    the access table (`svc_runtime.access`), restore the request context, map ServiceError
    to a rich status, hide anything else behind INTERNAL, and record metrics. This wrapper
    is the servers' one interceptor, applied once per method at registration: a grpc.aio
    server interceptor would do this work, and build a new handler, on every call."""
    service, name = _split(method)
    seconds = RPC_SECONDS.labels(service, name)
    admit = guard.admit
    # The server hands the wrapper the raw bytes; the guard parses them once it has
    # admitted the caller.
    guarded = GuardedMethod(rule_for(method), service, name, handler.request_deserializer or _unparsed)

    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary_unary(payload: bytes, ctx: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                async with _Handling(ctx, method, service, name) as handling:
                    request = admit(guarded, handling.metadata, payload, ctx.peer)
                    return await behavior(request, ctx)
            finally:
                seconds.observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )

    if handler.unary_stream is not None:
        stream_behavior = handler.unary_stream
        admit_principal = guard.admit_principal

        async def unary_stream(payload: bytes, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with _Handling(ctx, method, service, name) as handling:
                request, principal = admit_principal(guarded, handling.metadata, payload, ctx.peer)
                revoked = guard.revoked
                if principal is None or not principal.session or revoked is None:
                    async for response in stream_behavior(request, ctx):
                        yield response
                    return
                # A user's own stream ends as soon as the session is revoked: the call's task
                # is cancelled, and the cancellation answered UNAUTHENTICATED.
                task = asyncio.current_task()
                ended: list[bool] = []

                def on_revoked() -> None:
                    ended.append(True)
                    if task is not None:
                        task.cancel()

                forget = revoked.on_revoked(principal.session, on_revoked)
                try:
                    async for response in stream_behavior(request, ctx):
                        yield response
                except asyncio.CancelledError:
                    if not ended or task is None:
                        raise
                    task.uncancel()
                    STREAMS_REVOKED.labels(name).inc()
                    log.info("stream of a revoked session ended", extra={"method": f"{service}/{name}"})
                    raise Unauthenticated(REFUSED_MESSAGE, reason="UNAUTHENTICATED") from None
                finally:
                    forget()

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )
    raise TypeError(f"{method}: only unary and server-streaming methods are served")


class _InstrumentedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come out instrumented (once per method)."""

    def __init__(self, inner: grpc.GenericRpcHandler, guard: Guard) -> None:
        self.inner = inner
        self.guard = guard
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self.handlers.get(method)
        if handler is None:
            # Only methods that exist are remembered: a caller naming random ones grows nothing.
            inner = self.inner.service(handler_call_details)
            if inner is None:
                return None
            handler = self.handlers[method] = instrumented(method, inner, self.guard)
        return handler


class _InstrumentingRegistrar:
    """What a generated `add_…Servicer_to_server` registers on: the server, with every
    method handler instrumented on the way in."""

    def __init__(self, server: grpc.aio.Server, guard: Guard) -> None:
        self.server = server
        self.guard = guard

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(
            tuple(_InstrumentedGeneric(h, self.guard) for h in generic_rpc_handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.server.add_registered_method_handlers(
            service_name,
            {
                name: instrumented(f"/{service_name}/{name}", handler, self.guard)
                for name, handler in method_handlers.items()
            },
        )


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _enable_reflection(service_names: list[str], server: grpc.aio.Server) -> None:
    """Reflection as `grpc.reflection.v1` (what current grpcurl and grpcui ask first) and as
    `v1alpha` (older clients). grpcio-reflection ships only v1alpha; v1's messages are the
    same, field for field, so one servicer answers both names."""
    servicer = reflection.aio.ReflectionServicer(service_names)
    reflection.enable_server_reflection(service_names, server)
    server.add_registered_method_handlers(
        REFLECTION_V1,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )


class GrpcServer:
    """A grpc.aio server with health and reflection for every registered service, and every
    other method behind `guard` (by default the process's own, from its environment)."""

    def __init__(self, listen: str, *, max_message_mb: int = 16, guard: Guard | None = None) -> None:
        self.listen = listen
        self.guard = guard or Guard.for_process()
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_mb * 1024 * 1024),
                ("grpc.max_send_message_length", max_message_mb * 1024 * 1024),
                # Off unless asked for: with SO_REUSEPORT a second process that picked the
                # same port binds silently and takes half the connections. Turn it on
                # (BROKERMESH_GRPC_REUSEPORT=1) to run one server process per core on one port.
                ("grpc.so_reuseport", 1 if env_bool(GRPC_REUSEPORT, False) else 0),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names: list[str] = []
        # Bound now, before the service starts its background work: a taken port fails the
        # process before anything else has started (see svc_runtime.service, EXIT_ADDRESS_IN_USE).
        try:
            self.port = tls.add_port(self.server, self.listen)
        except RuntimeError:  # grpc says only "failed to bind"; a fixed port taken is the cause
            self.port = 0
        if self.port == 0:
            raise OSError(errno.EADDRINUSE, f"cannot listen on {self.listen}")

    def add(self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str) -> None:
        """Register `servicer` with its generated `add_…Servicer_to_server` function; its
        methods are instrumented (health and reflection are not)."""
        register(servicer, _InstrumentingRegistrar(self.server, self.guard))
        self.service_names.append(full_name)

    async def start(self) -> int:
        names = [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        _enable_reflection([*names, reflection.SERVICE_NAME, REFLECTION_V1], self.server)
        await self.guard.start()
        await self.server.start()
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc server listening", extra={"listen": self.listen, "port": self.port})
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING first so balancers drain us, then finish in-flight calls."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.guard.stop()
