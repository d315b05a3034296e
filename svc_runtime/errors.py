"""Errors that cross a service boundary, and how they map to gRPC and HTTP.

Domain and application code raise these; the gRPC server turns them into a status with
AIP-193 details (`google.rpc.ErrorInfo`, `BadRequest`, `RetryInfo`), and the gateway turns
that status into an RFC 9457 problem+json body. Anything else becomes INTERNAL with a
generic message: stack traces never reach a client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from brokermesh.type.v1 import status_pb2

ERROR_DOMAIN = "brokermesh.io"


@dataclass
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """An error with a gRPC status code, a machine-readable reason and optional details."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field: str | None = None,
        metadata: dict[str, str] | None = None,
        violations: list[FieldViolation] | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations or [])
        if field is not None:
            self.violations.append(FieldViolation(field, message))
        self.retry_after_seconds = retry_after_seconds


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(ServiceError):
    """A concurrency conflict: the caller may retry the whole operation."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RATE_LIMITED"


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


@dataclass
class ErrorDetails:
    """What a caller learns from a failed RPC (decoded from the status details)."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)
    retry_after_seconds: float | None = None


def to_rpc_status(error: ServiceError):  # -> grpc.Status
    """A grpc.Status carrying google.rpc details, for `context.abort_with_status`."""
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    details = []
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    details.append(info)
    if error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=packed)
    return rpc_status.to_status(status)


def details_of(error: grpc.aio.AioRpcError | grpc.RpcError) -> ErrorDetails:
    """Decode the google.rpc details of a failed call (empty fields when there are none)."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    code = error.code()
    result = ErrorDetails(code=code, message=error.details() or "")
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except Exception:
        status = None
    if status is None:
        return result
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.reason, result.domain, result.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            result.retry_after_seconds = retry.retry_delay.ToNanoseconds() / 1e9
    return result


_CODE_TO_ERROR = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
    )
}


def reraise_remote(error: grpc.aio.AioRpcError) -> ServiceError:
    """Turn a downstream service's error into the same ServiceError, to pass it upstream
    with its reason and details intact (e.g. INSUFFICIENT_FUNDS from svc_funds)."""
    return _service_error(details_of(error))


def _service_error(details: ErrorDetails) -> ServiceError:
    cls = _CODE_TO_ERROR.get(details.code, Unavailable)
    return cls(
        details.message,
        reason=details.reason or None,
        metadata=details.metadata,
        violations=details.violations,
        retry_after_seconds=details.retry_after_seconds,
    )


_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def to_item_status(error: ServiceError, prefix: str = "") -> status_pb2.Status:
    """One batch item's error as a `brokermesh.type.v1.Status`. A field it names goes to
    the `field` metadata, prefixed with the item's place (`requests[3].`)."""
    metadata = dict(error.metadata)
    if error.violations:
        metadata.setdefault("field", prefix + error.violations[0].field)
    return status_pb2.Status(
        code=error.code.value[0], message=error.message, reason=error.reason, metadata=metadata
    )


def from_item_status(status: status_pb2.Status) -> ServiceError:
    """The ServiceError a single call would have raised, from one batch item's status."""
    metadata = dict(status.metadata)
    field = metadata.pop("field", None)
    return _service_error(
        ErrorDetails(
            code=_CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN),
            message=status.message,
            reason=status.reason,
            metadata=metadata,
            violations=[FieldViolation(field, status.message)] if field else [],
        )
    )
