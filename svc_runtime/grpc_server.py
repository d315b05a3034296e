"""The gRPC server every service runs: health checks, reflection, request ids, errors with
details, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import grpc
import nats.errors
import nats.js.errors
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from svc_runtime import context
from svc_runtime.config import GRPC_REUSEPORT, env_bool
from svc_runtime.errors import ServiceError, Unavailable, to_rpc_status

log = logging.getLogger(__name__)

RPC_HANDLED = Counter("grpc_server_handled_total", "RPCs completed", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "RPC latency",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


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
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, _OUTAGES):
            return True
        if isinstance(seen, asyncpg.InterfaceError) and "connection is closed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _abort_for(error: BaseException, ctx: grpc.aio.ServicerContext, method: str) -> None:
    if not isinstance(error, ServiceError) and dependency_outage(error):
        log.warning("rpc failed: a dependency is unavailable", extra={"method": method, "error": repr(error)})
        error = Unavailable(
            "a service this call needs is unavailable; retry shortly",
            reason="DEPENDENCY_UNAVAILABLE",
            retry_after_seconds=1.0,
        )
    if isinstance(error, ServiceError):
        if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            log.warning(
                "rpc failed", extra={"method": method, "reason": error.reason, "error": error.message}
            )
        await ctx.abort_with_status(to_rpc_status(error))
    log.exception("unexpected error", extra={"method": method}, exc_info=error)
    await ctx.abort(grpc.StatusCode.INTERNAL, f"internal error; request id {context.request_id()}")


class _Handling:
    """One call of a method: its request context restored, its outcome counted, and an
    error turned into the status the caller gets. (A class: cheaper per call than a
    generator-based context manager.)"""

    __slots__ = ("ctx", "method", "name", "service")

    def __init__(self, ctx: grpc.aio.ServicerContext, method: str, service: str, name: str) -> None:
        self.ctx, self.method, self.service, self.name = ctx, method, service, name

    async def __aenter__(self) -> None:
        context.set_current(context.from_metadata(self.ctx.invocation_metadata()))

    async def __aexit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: Any
    ) -> None:
        if isinstance(error, (asyncio.CancelledError, grpc.aio.AbortError)):
            code = "ABORTED_OR_CANCELLED"
        elif isinstance(error, Exception):
            code = error.code.name if isinstance(error, ServiceError) else "INTERNAL"
        else:
            code = "OK"
        RPC_HANDLED.labels(self.service, self.name, code).inc()
        if isinstance(error, Exception) and not isinstance(error, grpc.aio.AbortError):
            await _abort_for(error, self.ctx, self.method)


def instrumented(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` for `method` (`/package.Service/Method`), wrapped to restore the request
    context, map ServiceError to a rich status, hide anything else behind INTERNAL, and
    record metrics. Done once per method at registration: a server interceptor would do
    this work, and build a new handler, on every call."""
    service, name = _split(method)
    seconds = RPC_SECONDS.labels(service, name)

    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary_unary(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                async with _Handling(ctx, method, service, name):
                    return await behavior(request, ctx)
            finally:
                seconds.observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    if handler.unary_stream is not None:
        stream_behavior = handler.unary_stream

        async def unary_stream(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with _Handling(ctx, method, service, name):
                async for response in stream_behavior(request, ctx):
                    yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class _InstrumentedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come out instrumented (once per method)."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self.inner = inner
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self.handlers.get(method)
        if handler is None:
            # Only methods that exist are remembered: a caller naming random ones grows nothing.
            inner = self.inner.service(handler_call_details)
            if inner is None:
                return None
            handler = self.handlers[method] = instrumented(method, inner)
        return handler


class _InstrumentingRegistrar:
    """What a generated `add_…Servicer_to_server` registers on: the server, with every
    method handler instrumented on the way in."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(tuple(_InstrumentedGeneric(h) for h in generic_rpc_handlers))

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.server.add_registered_method_handlers(
            service_name,
            {
                name: instrumented(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )


class GrpcServer:
    """A grpc.aio server with health and reflection for every registered service."""

    def __init__(self, listen: str, *, max_message_mb: int = 16) -> None:
        self.listen = listen
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
        self.port = 0

    def add(self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str) -> None:
        """Register `servicer` with its generated `add_…Servicer_to_server` function; its
        methods are instrumented (health and reflection are not)."""
        register(servicer, _InstrumentingRegistrar(self.server))
        self.service_names.append(full_name)

    async def start(self) -> int:
        names = [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], self.server)
        self.port = self.server.add_insecure_port(self.listen)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {self.listen}")
        await self.server.start()
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc server listening", extra={"listen": self.listen, "port": self.port})
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING first so balancers drain us, then finish in-flight calls."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
