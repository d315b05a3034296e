"""Every error leaves as application/problem+json (RFC 9457), never as a stack trace."""

from __future__ import annotations

import logging

from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from prometheus_client import Counter
from starlette.exceptions import HTTPException

from gateway.adapters.backends import BackendError
from gateway.domain.jsonmoney import dumps
from gateway.domain.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    http_problem,
    problem_from_details,
    problem_from_error,
)
from gateway.transport.state import current
from svc_runtime.errors import ServiceError

log = logging.getLogger(__name__)

PROBLEMS = Counter("gateway_problems_total", "Error responses by reason", ["status", "reason"])

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


def render(problem: Problem) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a problem response for the current request."""
    state = current()
    PROBLEMS.labels(str(problem.status), problem.reason).inc()
    headers = problem.headers()
    if problem.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="brokermesh"'
    body = problem.body(request_id=state.request_id, instance=state.path)
    return dumps(body), headers


def _response(problem: Problem) -> ConnexionResponse:
    body, headers = render(problem)
    return ConnexionResponse(
        status_code=problem.status,
        mimetype=PROBLEM_CONTENT_TYPE,
        content_type=PROBLEM_CONTENT_TYPE,
        body=body,
        headers=headers,
    )


async def on_problem_exception(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """connexion's own problems: validation (400), auth (401), media type (415), …"""
    assert isinstance(exc, ProblemException)
    status = int(exc.status or 500)
    reason = getattr(exc, "reason", None) or _REASON_OF_STATUS.get(status, "ERROR")
    detail = str(exc.detail or exc.title or reason)
    if status == 401:
        detail = "missing or invalid access token; log in with POST /v1/sessions"
    violations = list(getattr(exc, "violations", []))
    return _response(http_problem(status, reason, detail, violations=violations))


async def on_http_exception(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """Routing: unknown paths (404) and methods (405)."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    reason = _REASON_OF_STATUS.get(status, "ERROR")
    detail = {404: "no such resource", 405: "method not allowed here"}.get(status, str(exc.detail))
    return _response(http_problem(status, reason, detail))


async def on_service_error(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, ServiceError)
    return _response(problem_from_error(exc, request_id=current().request_id))


async def on_backend_error(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, BackendError)
    problem = problem_from_details(exc.details, request_id=current().request_id)
    if problem.status >= 500:
        log.warning(
            "backend call failed",
            extra={"code": exc.details.code.name, "reason": exc.details.reason, "error": exc.details.message},
        )
    return _response(problem)


async def on_unexpected(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.error("unexpected error", exc_info=exc)
    state = current()
    return _response(http_problem(500, "INTERNAL", f"internal error; quote request id {state.request_id}"))


ERROR_HANDLERS = (
    (ProblemException, on_problem_exception),
    (HTTPException, on_http_exception),
    (ServiceError, on_service_error),
    (BackendError, on_backend_error),
    (Exception, on_unexpected),
)
