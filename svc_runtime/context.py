"""The request context that travels with every unit of work: request id and audit facts.

It rides in gRPC metadata (`x-request-id`, `x-client-ip`, `x-actor`) and NATS headers
(`X-Request-Id`), is restored into a contextvar on arrival, and is stamped on every log
line and audit row. When tracing is on (`svc_runtime.tracing`), the current span's W3C
`traceparent` rides with it, in the same carriers. The actor is not read from metadata here: the gRPC server sets it from
the caller's verified credential (`svc_runtime.grpc_server.Guard`).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from svc_runtime.ids import new_id

REQUEST_ID_METADATA = "x-request-id"
CLIENT_IP_METADATA = "x-client-ip"
ACTOR_METADATA = "x-actor"
REQUEST_ID_HEADER = "X-Request-Id"
# W3C Trace Context: the same name in gRPC metadata and NATS headers. Empty unless tracing is on.
TRACEPARENT = "traceparent"


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    client_ip: str = ""
    actor: str = ""
    traceparent: str = ""


_current: contextvars.ContextVar[RequestContext] = contextvars.ContextVar(
    "brokermesh_request_context", default=RequestContext()
)


def current() -> RequestContext:
    return _current.get()


def request_id() -> str:
    return _current.get().request_id


def new_request_id() -> str:
    return new_id("req")


@contextmanager
def bind(**changes: str) -> Iterator[RequestContext]:
    """Bind context fields for the duration of a block (restored afterwards)."""
    ctx = replace(_current.get(), **{k: v for k, v in changes.items() if v is not None})
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def set_current(ctx: RequestContext) -> contextvars.Token[RequestContext]:
    return _current.set(ctx)


def reset(token: contextvars.Token[RequestContext]) -> None:
    _current.reset(token)


def outgoing_metadata() -> list[tuple[str, str]]:
    ctx = _current.get()
    metadata = [(REQUEST_ID_METADATA, ctx.request_id or new_request_id())]
    if ctx.client_ip:
        metadata.append((CLIENT_IP_METADATA, ctx.client_ip))
    if ctx.actor:
        metadata.append((ACTOR_METADATA, ctx.actor))
    if ctx.traceparent:
        metadata.append((TRACEPARENT, ctx.traceparent))
    return metadata


# What a request id may be once inside (logs, ledger rows, NATS headers): 1–128
# printable characters, no spaces. Anything else offered by a caller is replaced.
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def _safe_request_id(offered: str) -> str:
    return offered if _REQUEST_ID.match(offered) else new_request_id()


# A W3C traceparent of version 00 (what this project writes); anything else is dropped.
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def safe_traceparent(offered: str) -> str:
    return offered if offered and _TRACEPARENT.match(offered) else ""


def from_metadata(metadata: tuple[tuple[str, str | bytes], ...] | None) -> RequestContext:
    values = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (metadata or ())}
    return RequestContext(
        request_id=_safe_request_id(values.get(REQUEST_ID_METADATA, "")),
        client_ip=values.get(CLIENT_IP_METADATA, ""),
        traceparent=safe_traceparent(values[TRACEPARENT]) if TRACEPARENT in values else "",
    )
