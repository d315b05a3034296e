"""gRPC channels between services: TLS, the caller's identity and request id on every call,
round-robin over replicas, transparent retry of calls that never reached a server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svc_runtime import auth, context, tls

# Retry only UNAVAILABLE: the call did not reach a server, or the server is going away.
# Every mutating RPC carries an idempotency key, so even a retried call that did arrive
# has a single effect.
_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}

# svc_exec's service: only its active replica (the FIX session's holder) reports it SERVING.
EXEC_SERVICE = "brokermesh.exec.v1.ExecutionService"
# svc_marketdata's exchange feed: only the replica holding it reports it SERVING (it alone
# keeps depth and forming candles).
MARKETDATA_FEED = "brokermesh.marketdata.v1.MarketDataService/feed"


def service_config(health_service: str = "") -> str:
    """Round robin over the target's addresses, skipping those whose health service does not
    say SERVING for `health_service` ("" = the server as a whole; a draining server says
    NOT_SERVING), and the retry policy above."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": health_service},
            "methodConfig": [{"name": [{}], "retryPolicy": _RETRY_POLICY}],
        }
    )


class _ContextMetadata:
    def __init__(self, signer: auth.Signer | None) -> None:
        self.signer = signer

    def _with_context(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in context.outgoing_metadata():
            if key not in metadata:
                metadata[key] = value
        if self.signer is not None and auth.AUTHORIZATION_METADATA not in metadata:
            method = details.method.decode() if isinstance(details.method, bytes) else details.method
            authorization = self.signer.authorization(method)
            if authorization:
                metadata[auth.AUTHORIZATION_METADATA] = authorization
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_ContextMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_context(details), request)


class _UnaryStream(_ContextMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_context(details), request)


def signing_interceptors(signer: auth.Signer | None) -> list[Any]:
    """The interceptors that add the request context and `signer`'s credential to each call."""
    return [_UnaryUnary(signer), _UnaryStream(signer)]


def _server_name(target: str) -> str:
    """The name to check the server's certificate against for a list of replicas
    (`ipv4:h1:p1,h2:p2`: the first host), or "" where gRPC takes it from the target."""
    scheme, _, addresses = target.partition(":")
    if scheme not in ("ipv4", "ipv6") or not addresses:
        return ""
    first = addresses.split(",", 1)[0]
    return first.rsplit(":", 1)[0].strip("[]") if first.count(":") == 1 or first.startswith("[") else first


def raw_channel(
    target: str, *, options: Sequence[tuple[str, Any]] = (), interceptors: Sequence[Any] = ()
) -> grpc.aio.Channel:
    """A channel to `target` over TLS trusting the stack's CA (plain text only in plain-text
    mode), with nothing else added: no credential, no retry policy."""
    credentials = tls.channel_credentials()
    options = list(options)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=list(interceptors) or None)
    if name := _server_name(target):
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.aio.secure_channel(
        target, credentials, options=options, interceptors=list(interceptors) or None
    )


def sync_channel(target: str) -> grpc.Channel:
    """`raw_channel` for blocking code."""
    credentials = tls.channel_credentials()
    if credentials is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, credentials)


def channel(target: str, *, signer: auth.Signer | None = None, health_service: str = "") -> grpc.aio.Channel:
    """A channel to `target`: `host:port`, or `ipv4:h1:p1,h2:p2` for several replicas, calls
    going only to replicas healthy for `health_service` (see `service_config`). Calls carry
    `signer`'s credential; by default this process's service identity (see
    `svc_runtime.auth.configure_process`)."""
    signer = signer or auth.process_signer()
    return raw_channel(
        target,
        options=[
            ("grpc.service_config", service_config(health_service)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ],
        interceptors=signing_interceptors(signer),
    )


async def wait_healthy(target: str, *, service: str = "", timeout: float = 30.0) -> None:
    """Wait until `target` reports SERVING on the standard health service."""
    deadline = time.monotonic() + timeout
    async with raw_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} not healthy after {timeout}s")
            await asyncio.sleep(0.1)
