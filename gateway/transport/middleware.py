"""Pure ASGI middleware of the edge.

`EdgeMiddleware` (outermost): request id (accepted from `X-Request-Id` or made), client IP,
the request context that travels to every service, the body size limit, `X-Request-Id` on
every response, metrics, an access log line (warning for 5xx, debug otherwise), and the
request's server span when tracing is on (continuing a caller's W3C `traceparent`).
`PrincipalMiddleware` (after connexion's security check): binds the verified user as the
actor and applies the per-user request rate, published on every API response in
`RateLimit-Policy` / `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

from connexion.exceptions import ProblemException
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.app.admission import Busy
from gateway.app.limits import REQUESTS_POLICY, EdgeLimits, state_item
from gateway.domain.problems import http_problem
from gateway.transport.errors import send_problem
from gateway.transport.state import RequestState, begin, current, end
from svc_runtime import context, tracing
from svc_runtime.errors import FieldViolation

log = logging.getLogger(__name__)

REQUESTS = Counter("gateway_http_requests_total", "HTTP requests", ["operation", "method", "status"])
LATENCY = Histogram(
    "gateway_http_request_seconds",
    "HTTP request latency (to the end of the response; streams excluded)",
    ["operation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by the per-user rate limit")
PLACEMENTS_SHED = Counter(
    "gateway_placements_shed_total", "Order placements refused because this process was at capacity"
)
PLACEMENTS_IN_PROGRESS = Gauge(
    "gateway_placements_in_progress", "Order placements forwarded and not yet answered"
)
PLACEMENTS_WAITING = Gauge("gateway_placements_waiting", "Order placements waiting for a slot")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# Headers the application parses as text: their values must be visible ASCII (RFC 9110 §5.5
# allows other bytes only as opaque data, and connexion decodes some of them as UTF-8).
_TEXT_HEADERS = {
    b"content-type": "Content-Type",
    b"accept": "Accept",
    b"idempotency-key": "Idempotency-Key",
    b"last-event-id": "Last-Event-ID",
}
_VISIBLE_ASCII = re.compile(rb"^[\x20-\x7e\t]*$")
STREAM_OPERATIONS = frozenset({"stream_orders", "stream_market_data", "stream_alerts"})


class BodyTooLarge(ProblemException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status=413, title="Payload too large", detail=f"request bodies are limited to {limit} bytes"
        )


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def _unreadable_header(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        name = _TEXT_HEADERS.get(key)
        if name and not _VISIBLE_ASCII.match(value):
            return name
    return ""


def _empty_segment(path: str) -> bool:
    """An API path (`/v1/…`, not the contract's browsable UI under `/v1/ui/`) with an
    empty segment: `//` inside, or a trailing `/`."""
    if not path.startswith("/v1/") or path.startswith("/v1/ui/"):
        return False
    return "//" in path or path.endswith("/")


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = _header(scope, b"x-request-id")
        request_id = offered if _SAFE_REQUEST_ID.match(offered) else context.new_request_id()
        client = scope.get("client")
        state = RequestState(
            request_id=request_id,
            client_ip=client[0] if client else "",
            path=scope.get("path", ""),
            method=scope.get("method", ""),
        )
        token = begin(state)
        started = time.perf_counter()
        status = {"code": 0}
        request_id_header = (b"x-request-id", request_id.encode())
        span = tracing.span(
            f"{state.method} {state.path}",
            kind="server",
            parent=_header(scope, b"traceparent") if tracing.enabled() else None,
        )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                span.set("http.response.status_code", message["status"])
                if state.operation:
                    span.rename(f"{state.method} {state.operation}")
                message["headers"] = [*message.get("headers", []), *state.response_headers, request_id_header]
            await send(message)

        try:
            with context.bind(request_id=request_id, client_ip=state.client_ip), span:
                unreadable = _unreadable_header(scope)
                if unreadable:
                    await send_problem(
                        send_with_id,
                        http_problem(
                            400,
                            "INVALID_HEADER",
                            f"the {unreadable} header must be visible ASCII text",
                            violations=[FieldViolation(unreadable, "must be visible ASCII text")],
                        ),
                    )
                    return
                length = _header(scope, b"content-length")
                if _header(scope, b"transfer-encoding"):
                    # Bodies are validated whole; one of unknown length is not accepted.
                    await self._problem(
                        send_with_id, 411, "LENGTH_REQUIRED", "send the body with a Content-Length"
                    )
                    return
                if length.isdigit() and int(length) > self.max_body_bytes:
                    await self._problem(
                        send_with_id, 413, "PAYLOAD_TOO_LARGE", BodyTooLarge(self.max_body_bytes).detail
                    )
                    return
                if _empty_segment(state.path):
                    # No API resource has an empty path segment; the router would answer
                    # `/v1/orders/` (or an id that decodes to "/") with a 307 to `/v1/orders`.
                    await self._problem(send_with_id, 404, "NOT_FOUND", "no such resource")
                    return
                await self.app(scope, self._limited(receive), send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"path": state.path})
            if not status["code"]:
                await self._problem(
                    send_with_id, 500, "INTERNAL", f"internal error; quote request id {request_id}"
                )
        finally:
            operation = state.operation or "unmatched"
            code = status["code"] or 500
            elapsed = time.perf_counter() - started
            REQUESTS.labels(operation, state.method, str(code)).inc()
            if operation not in STREAM_OPERATIONS:
                LATENCY.labels(operation).observe(elapsed)
            # Server-side failures always; the rest only when asked for (BROKERMESH_LOG_LEVEL=DEBUG).
            log.log(
                logging.WARNING if code >= 500 else logging.DEBUG,
                "request",
                extra={
                    "method": state.method,
                    "path": state.path,
                    "operation": operation,
                    "status": code,
                    "ms": round(elapsed * 1000, 2),
                    "user_id": state.user_id,
                    "client_ip": state.client_ip,
                    "request_id": state.request_id,
                },
            )
            end(token)

    def _limited(self, receive: Receive) -> Receive:
        """Count body bytes as they arrive (chunked bodies have no Content-Length)."""
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return limited_receive

    @staticmethod
    async def _problem(send: Send, status: int, reason: str, detail: str) -> None:
        await send_problem(send, http_problem(status, reason, detail))


class PrincipalMiddleware:
    """Runs after connexion authenticated the request (and before it validates it)."""

    def __init__(self, app: ASGIApp, *, limits: EdgeLimits, clock: Callable[[], float]) -> None:
        self.app = app
        self.limits = limits
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = current()
        extensions: dict[str, Any] = scope.get("extensions", {})
        state.operation = extensions.get("connexion_routing", {}).get("operation_id") or ""
        if not state.operation:  # not an API operation: /healthz, /metrics
            await self.app(scope, receive, send)
            return
        token_info = extensions.get("connexion_context", {}).get("token_info") or {}
        if isinstance(token_info, dict):
            state.user_id = str(token_info.get("sub", ""))
            state.session = str(token_info.get("sid", ""))
        key = self.limits.request_key(state.user_id, state.client_ip)
        now = self.clock()
        wait = await self.limits.requests.take(key, now)
        policy = self.limits.request_policy()
        if state.operation == "place_order":
            policy += ", " + self.limits.order_policy()
        if wait > 0:
            RATE_LIMITED.inc()
            problem = http_problem(
                429,
                "RATE_LIMITED",
                "too many requests; slow down",
                retry_after_seconds=max(1, math.ceil(wait)),
            )
            limit_headers = {"RateLimit-Policy": policy, "RateLimit": state_item(REQUESTS_POLICY, 0, wait)}
            await send_problem(send, problem, limit_headers)
            return
        # On the response whoever writes it: validation errors are rendered outside this
        # middleware.
        state.response_headers += [
            (b"ratelimit-policy", policy.encode()),
            (b"ratelimit", self.limits.request_state(key, now).encode()),
        ]
        if state.operation == "place_order":
            await self._admitted(scope, receive, send)
        else:
            await self._as_user(scope, receive, send)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A placement runs only in one of the process's slots; past them it is refused before
        its body is read (see app/admission.py)."""
        placements = self.limits.placements
        try:
            async with placements.admitted():
                PLACEMENTS_IN_PROGRESS.set(placements.taken)
                PLACEMENTS_WAITING.set(placements.waiting)
                await self._as_user(scope, receive, send)
        except Busy as busy:
            PLACEMENTS_SHED.inc()
            problem = http_problem(
                429,
                "SERVER_BUSY",
                "the gateway is placing as many orders as it can carry; retry shortly",
                retry_after_seconds=busy.retry_after_seconds,
            )
            await send_problem(send, problem)
        finally:
            PLACEMENTS_IN_PROGRESS.set(placements.taken)
            PLACEMENTS_WAITING.set(placements.waiting)

    async def _as_user(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = current()
        if state.user_id:
            # The audit trail's actor format (svc_orders' AuditRecord.actor).
            with context.bind(actor=f"user:{state.user_id}"):
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)
