"""gRPC status → HTTP problem (RFC 9457), in one table.

The status table and every reason a problem can carry are in the error catalogue,
`svc_runtime/reasons.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from svc_runtime.errors import ErrorDetails, FieldViolation, ServiceError
from svc_runtime.reasons import HTTP_STATUS_OF_CODE

PROBLEM_TYPE_BASE = "https://brokermesh.io/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

# One table for every service and the edge: the catalogue's (FAILED_PRECONDITION is 422).
HTTP_STATUS = HTTP_STATUS_OF_CODE

# What a client may read of a server-side failure: never a backend's own words.
_HIDDEN_DETAIL = {
    500: "internal error",
    501: "not implemented",
    503: "the service is temporarily unavailable; retry shortly",
    504: "the service did not answer in time",
}

# Gateway-made server-side problems whose detail is meant for the client.
_TOLD_REASONS = frozenset({"OUTCOME_UNKNOWN", "SHUTTING_DOWN"})

# Without a RetryInfo, a client should still back off from these.
_DEFAULT_RETRY_AFTER = {429: 1, 503: 1}


@dataclass
class Problem:
    status: int
    reason: str
    detail: str
    violations: list[FieldViolation] = field(default_factory=list)
    retry_after_seconds: int | None = None
    # A risk limit's refusal: the rule, who set the limit, the limit and what the order
    # would have made of it (from the ErrorInfo metadata), for clients to explain it.
    risk_check: dict[str, str] | None = None

    @property
    def title(self) -> str:
        return self.reason.replace("_", " ").capitalize()

    @property
    def type(self) -> str:
        return PROBLEM_TYPE_BASE + self.reason.lower().replace("_", "-")

    def body(self, *, request_id: str, instance: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            "requestId": request_id,
            "reason": self.reason,
        }
        if self.risk_check is not None:
            body["riskCheck"] = self.risk_check
        if self.violations:
            body["fieldViolations"] = [
                {"field": v.field, "description": v.description} for v in self.violations
            ]
        return body

    def headers(self) -> dict[str, str]:
        if self.retry_after_seconds is None:
            return {}
        return {"Retry-After": str(self.retry_after_seconds)}


def problem_from_details(details: ErrorDetails, *, request_id: str = "", own: bool = False) -> Problem:
    """The problem a client sees for a failed call (a backend's, or our own if `own`)."""
    status = HTTP_STATUS.get(details.code, 500)
    reason = details.reason or details.code.name
    detail = details.message or reason.replace("_", " ").lower()
    if status in _HIDDEN_DETAIL and not (own and reason in _TOLD_REASONS):
        detail = _HIDDEN_DETAIL[status]
        if status == 500 and request_id:
            detail += f"; quote request id {request_id}"
    retry_after = None
    if details.retry_after_seconds is not None:
        retry_after = max(1, math.ceil(details.retry_after_seconds))
    elif status in _DEFAULT_RETRY_AFTER:
        retry_after = _DEFAULT_RETRY_AFTER[status]
    return Problem(
        status, reason, detail, list(details.violations), retry_after, risk_check_of(details.metadata)
    )


_RISK_CHECK_KEYS = ("rule", "scope", "limit", "observed")


def risk_check_of(metadata: dict[str, str]) -> dict[str, str] | None:
    """The figures of a risk limit's refusal, when the metadata carries them all."""
    if not all(key in metadata for key in _RISK_CHECK_KEYS):
        return None
    return {key: metadata[key] for key in _RISK_CHECK_KEYS}


def problem_from_error(error: ServiceError, *, request_id: str = "") -> Problem:
    return problem_from_details(details_of_service_error(error), request_id=request_id, own=True)


def details_of_service_error(error: ServiceError) -> ErrorDetails:
    return ErrorDetails(
        code=error.code,
        message=error.message,
        reason=error.reason,
        metadata=dict(error.metadata),
        violations=list(error.violations),
        retry_after_seconds=error.retry_after_seconds,
    )


def http_problem(status: int, reason: str, detail: str, **kwargs: Any) -> Problem:
    """A problem raised by the HTTP layer itself (routing, media types, body size)."""
    return Problem(status, reason, detail, **kwargs)
