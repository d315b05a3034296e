"""Traces of one order's way through the stack: OpenTelemetry spans, off unless configured.

`BROKERMESH_TRACING` turns them on: `file:<path>` appends every finished span to `<path>` as
one JSON object per line (every process of a stack may share the file), `otlp:<endpoint>`
sends them to an OpenTelemetry collector over OTLP/gRPC (`otlp:http://127.0.0.1:4317`).
Unset (or `off`), nothing of OpenTelemetry is imported, no tracer or exporter exists, and
`span` returns one shared do-nothing context manager.

The position in a trace travels with the request context (`svc_runtime.context`), next to
the request id and in the same carriers: the W3C `traceparent` in gRPC metadata and NATS
headers. A span's parent is the context's `traceparent` unless one is given; inside the span
the context's `traceparent` names the span itself, so what is called or published from
there continues the trace. Every span carries the request id (`brokermesh.request_id`), so
an operator who has one finds the trace.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from svc_runtime import context
from svc_runtime.config import env

TRACING = "BROKERMESH_TRACING"
REQUEST_ID_ATTRIBUTE = "brokermesh.request_id"
# How long finished spans wait to be written or sent together (the SDK's default is 5 s).
_EXPORT_DELAY_MS = 500


class _Configured:
    """The tracer and its provider once configured; None while tracing is off."""

    tracer: Any = None
    provider: Any = None


_on = _Configured()


def enabled() -> bool:
    return _on.tracer is not None


class _Off:
    """What `span` returns while tracing is off: enters and leaves, does nothing."""

    __slots__ = ()
    traceparent = ""

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set(self, key: str, value: str | int | bool) -> None:
        return None

    def fail(self, description: str) -> None:
        return None

    def rename(self, name: str) -> None:
        return None


_OFF = _Off()


class _Span:
    """One span, current in the request context while it is entered."""

    __slots__ = ("_attributes", "_kind", "_name", "_parent", "_span", "_start_ns", "_token", "traceparent")

    def __init__(
        self,
        name: str,
        kind: str,
        parent: str | None,
        attributes: Mapping[str, Any] | None,
        start_ns: int | None,
    ) -> None:
        self._name, self._kind, self._parent = name, kind, parent
        self._attributes, self._start_ns = attributes, start_ns
        self._span: Any = None
        self._token: Any = None
        self.traceparent = ""

    def __enter__(self) -> _Span:
        current = context.current()
        parent = self._parent if self._parent is not None else current.traceparent
        attributes = dict(self._attributes or {})
        if current.request_id:
            attributes.setdefault(REQUEST_ID_ATTRIBUTE, current.request_id)
        self._span = _on.tracer.start_span(
            self._name,
            context=_context_of(parent),
            kind=_KINDS[self._kind],
            attributes=attributes,
            start_time=self._start_ns,
        )
        span_context = self._span.get_span_context()
        self.traceparent = (
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"
        )
        self._token = context.set_current(replace(current, traceparent=self.traceparent))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        context.reset(self._token)
        if error is not None:
            self._span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self._span.end()

    def set(self, key: str, value: str | int | bool) -> None:
        self._span.set_attribute(key, value)

    def fail(self, description: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_status(Status(StatusCode.ERROR, description))

    def rename(self, name: str) -> None:
        self._span.update_name(name)


_KINDS: dict[str, Any] = {}


def _context_of(parent: str) -> Any:
    """The OpenTelemetry context whose span is the remote `parent` (a traceparent), or an
    empty one (the span starts a trace)."""
    from opentelemetry import trace
    from opentelemetry.context import Context

    if not context.safe_traceparent(parent):
        return Context()
    # 00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>
    span_context = trace.SpanContext(
        trace_id=int(parent[3:35], 16),
        span_id=int(parent[36:52], 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(parent[53:55], 16)),
    )
    if not span_context.is_valid:
        return Context()
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def span(
    name: str,
    *,
    kind: str = "internal",
    parent: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    start_ns: int | None = None,
) -> _Span | _Off:
    """A span to enter with `with`. `kind`: internal, server, client, producer or consumer.
    `parent`: a traceparent to continue instead of the context's. `start_ns`: when the work
    began, if before now (epoch nanoseconds)."""
    if _on.tracer is None:
        return _OFF
    return _Span(name, kind, parent, attributes, start_ns)


def epoch_ns_of(monotonic: float) -> int:
    """The epoch time in nanoseconds of a `time.monotonic()` reading taken earlier."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)


def configure(service: str, setting: str | None = None) -> None:
    """Turn tracing on for this process as `BROKERMESH_TRACING` (or `setting`) says; do
    nothing at all when it is unset or `off`. A setting it cannot read stops the process:
    an operator who asked for traces must not silently get none."""
    setting = env(TRACING, "") if setting is None else setting
    if setting in ("", "off"):
        return
    scheme, _, target = setting.partition(":")
    if scheme not in ("file", "otlp") or not target:
        raise RuntimeError(f"{TRACING}={setting!r}: expected file:<path>, otlp:<endpoint> or off")

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    _KINDS.update(
        internal=SpanKind.INTERNAL,
        server=SpanKind.SERVER,
        client=SpanKind.CLIENT,
        producer=SpanKind.PRODUCER,
        consumer=SpanKind.CONSUMER,
    )
    if scheme == "file":
        exporter: Any = JsonLinesExporter(Path(target))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as missing:
            raise RuntimeError(
                f"{TRACING}=otlp:… needs the OTLP exporter: pip install 'brokermesh[otlp]'"
            ) from missing
        exporter = OTLPSpanExporter(endpoint=target, insecure=target.startswith("http://"))
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=_EXPORT_DELAY_MS))
    _on.provider = provider
    _on.tracer = provider.get_tracer("brokermesh")


def shutdown() -> None:
    """Write out what is still buffered and turn tracing off (the SDK also does this at exit)."""
    if _on.provider is not None:
        _on.provider.shutdown()
    _on.tracer = _on.provider = None


class JsonLinesExporter:
    """Appends each batch of finished spans to a file, one JSON object per line, in one
    write: with O_APPEND, several processes share the file without tearing lines."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._lock = threading.Lock()

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(span.to_json(indent=None) + "\n" for span in spans).encode()
        with self._lock:
            if self._fd < 0:
                return SpanExportResult.FAILURE
            os.write(self._fd, lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
