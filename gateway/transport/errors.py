"""Every error leaves as application/problem+json (RFC 9457), never as a stack trace."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.types import Send

from gateway.adapters.backends import BackendError
from gateway.app.limits import AUTH_FAILURES_POLICY, EdgeLimits, state_item
from gateway.domain.jsonmoney import dumps
from gateway.domain.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    http_problem,
    problem_from_details,
    problem_from_error,
)
from gateway.transport.mapping import rest_details
from gateway.transport.state import current
from svc_runtime.errors import ServiceError
from svc_runtime.tokens import REFUSED_MESSAGE

log = logging.getLogger(__name__)

PROBLEMS = Counter("gateway_problems_total", "Error responses by reason", ["status", "reason"])
AUTH_FAILURES = Counter(
    "gateway_auth_failures_total", "Requests that failed authentication (not logins)", ["outcome"]
)

_REASON_OF_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def render(problem: Problem, extra_headers: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a problem response for the current request."""
    state = current()
    PROBLEMS.labels(str(problem.status), problem.reason).inc()
    headers = {**problem.headers(), **(extra_headers or {})}
    if problem.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="brokermesh"'
    body = problem.body(request_id=state.request_id, instance=state.path)
    return dumps(body), headers


async def send_problem(send: Send, problem: Problem, extra_headers: dict[str, str] | None = None) -> None:
    """A problem response written straight to ASGI (for middleware outside connexion's handlers)."""
    body, headers = render(problem, extra_headers)
    raw_headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": problem.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class ProblemResponses:
    """connexion's error handlers. A request that fails authentication (a bad, expired or
    missing token: not a login, which `LoginGuard` watches) is counted against its address;
    once the address has failed too often, such requests are 429 until it slows down.
    Valid tokens from the same address are not affected."""

    def __init__(self, limits: EdgeLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock

    def handlers(self) -> Sequence[tuple[type[Exception], Callable]]:
        return (
            (ProblemException, self.on_problem_exception),
            (HTTPException, self.on_http_exception),
            (ServiceError, self.on_service_error),
            (BackendError, self.on_backend_error),
            (Exception, self.on_unexpected),
        )

    def _response(self, problem: Problem) -> ConnexionResponse:
        extra: dict[str, str] = {}
        if problem.status == 401 and problem.reason != "INVALID_CREDENTIALS":
            problem, extra = self._count_auth_failure(problem)
        body, headers = render(problem, extra)
        return ConnexionResponse(
            status_code=problem.status,
            mimetype=PROBLEM_CONTENT_TYPE,
            content_type=PROBLEM_CONTENT_TYPE,
            body=body,
            headers=headers,
        )

    def _count_auth_failure(self, problem: Problem) -> tuple[Problem, dict[str, str]]:
        now = self.clock()
        key = f"ip:{current().client_ip}"
        wait = self.limits.auth_failures.acquire(key, now)
        if wait <= 0:
            AUTH_FAILURES.labels("refused").inc()
            return problem, {}
        AUTH_FAILURES.labels("throttled").inc()
        throttled = http_problem(
            429,
            "AUTH_THROTTLED",
            "too many requests failed authentication from this address; slow down",
            retry_after_seconds=max(1, math.ceil(wait)),
        )
        return throttled, {
            "RateLimit-Policy": self.limits.auth_failure_policy(),
            "RateLimit": state_item(AUTH_FAILURES_POLICY, 0, wait),
        }

    async def on_problem_exception(self, _request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        """connexion's own problems: validation (400), auth (401), media type (415), …"""
        assert isinstance(exc, ProblemException)
        status = int(exc.status or 500)
        reason = getattr(exc, "reason", None) or _REASON_OF_STATUS.get(status, "ERROR")
        detail = str(exc.detail or exc.title or reason)
        if status == 401:
            # A missing token is answered like any bad one.
            reason, detail = "UNAUTHENTICATED", REFUSED_MESSAGE
        violations = list(getattr(exc, "violations", []))
        return self._response(http_problem(status, reason, detail, violations=violations))

    async def on_http_exception(self, _request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        """Routing: unknown paths (404) and methods (405)."""
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        reason = _REASON_OF_STATUS.get(status, "ERROR")
        detail = {404: "no such resource", 405: "method not allowed here"}.get(status, str(exc.detail))
        return self._response(http_problem(status, reason, detail))

    async def on_service_error(self, _request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, ServiceError)
        return self._response(problem_from_error(exc, request_id=current().request_id))

    async def on_backend_error(self, _request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        assert isinstance(exc, BackendError)
        problem = problem_from_details(rest_details(exc.details), request_id=current().request_id)
        if problem.status >= 500:
            log.warning(
                "backend call failed",
                extra={
                    "code": exc.details.code.name,
                    "reason": exc.details.reason,
                    "error": exc.details.message,
                },
            )
        return self._response(problem)

    async def on_unexpected(self, _request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        log.error("unexpected error", exc_info=exc)
        state = current()
        return self._response(
            http_problem(500, "INTERNAL", f"internal error; quote request id {state.request_id}")
        )
