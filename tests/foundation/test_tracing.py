"""svc_runtime.tracing: nothing at all while off; spans, carriers and parent links when on."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from brokermesh.orders.v1 import order_command_pb2
from svc_runtime import context, messaging, tracing


@pytest.fixture
def spans_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "spans.jsonl"
    tracing.configure("test_service", f"file:{path}")
    try:
        yield path
    finally:
        tracing.shutdown()


def _read(path: Path) -> list[dict[str, Any]]:
    tracing.shutdown()  # writes out what the batch processor holds
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tracing_off_installs_nothing_and_carries_nothing() -> None:
    """In a fresh interpreter (this one may have imported OpenTelemetry for other tests): a
    process configured without BROKERMESH_TRACING imports none of it, makes no tracer or
    exporter, and its gRPC metadata and NATS headers carry no traceparent."""
    script = textwrap.dedent(
        """
        import os, sys
        os.environ.pop("BROKERMESH_TRACING", None)
        from brokermesh.orders.v1 import order_command_pb2
        from svc_runtime import context, grpc_server, messaging, outbox, service, tracing
        tracing.configure("svc_orders")
        with context.bind(request_id="req_1"), tracing.span("work") as span:
            headers = messaging.headers_for(order_command_pb2.OrderCommand(), "m1", "bm.x")
            metadata = dict(context.outgoing_metadata())
            inside = context.current().traceparent
        assert not tracing.enabled()
        assert span is tracing.span("other"), "one shared do-nothing span"
        assert span.traceparent == "" and inside == ""
        assert "traceparent" not in headers and "traceparent" not in metadata, (headers, metadata)
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_setting_it_cannot_read_stops_the_process() -> None:
    for setting in ("jaeger:localhost", "file:", "otlp", "yes"):
        with pytest.raises(RuntimeError, match="BROKERMESH_TRACING"):
            tracing.configure("svc_orders", setting)
        assert not tracing.enabled()


def test_spans_nest_through_the_request_context_and_carry_the_request_id(spans_file: Path) -> None:
    with context.bind(request_id="req_trace"), tracing.span("outer", kind="server") as outer:
        assert context.current().traceparent == outer.traceparent
        with tracing.span("inner") as inner:
            assert dict(context.outgoing_metadata())["traceparent"] == inner.traceparent
        assert context.current().traceparent == outer.traceparent
    assert context.current().traceparent == ""
    spans = {s["name"]: s for s in _read(spans_file)}
    assert spans["inner"]["parent_id"] == spans["outer"]["context"]["span_id"]
    assert spans["inner"]["context"]["trace_id"] == spans["outer"]["context"]["trace_id"]
    assert spans["outer"]["parent_id"] is None
    assert spans["outer"]["kind"] == "SpanKind.SERVER"
    assert spans["outer"]["attributes"]["brokermesh.request_id"] == "req_trace"
    assert spans["outer"]["resource"]["attributes"]["service.name"] == "test_service"


def test_a_remote_parent_from_grpc_metadata_is_continued(spans_file: Path) -> None:
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    restored = context.from_metadata((("x-request-id", "req_1"), ("traceparent", caller)))
    assert restored.traceparent == caller
    token = context.set_current(restored)
    try:
        with tracing.span("served", kind="server"):
            pass
    finally:
        context.reset(token)
    (served,) = _read(spans_file)
    assert served["context"]["trace_id"] == "0x0af7651916cd43dd8448eb211c80319c"
    assert served["parent_id"] == "0xb7ad6b7169203331"


@pytest.mark.parametrize(
    "offered",
    ["", "garbage", "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-XYZ-b7ad6b7169203331-01"],
)
def test_a_traceparent_that_is_not_w3c_is_dropped(offered: str) -> None:
    assert context.from_metadata((("traceparent", offered),)).traceparent == ""


def test_a_message_carries_its_producer_span_and_is_consumed_in_a_child(spans_file: Path) -> None:
    command = order_command_pb2.OrderCommand()
    with context.bind(request_id="req_nats"), tracing.span("place order", kind="server"):
        headers = messaging.headers_for(command, "m1", "bm.orders.command.new")
    msg = Msg(_client=None, subject="bm.orders.command.new", headers=dict(headers))  # type: ignore[arg-type]
    with messaging.consumer_spans([msg], "svc_exec_order_commands"):
        assert context.current().traceparent == "", "the batch belongs to no one trace"
        with context.bind(**vars(messaging.request_context_of(msg))), tracing.span("send"):
            pass
    spans = {s["name"]: s for s in _read(spans_file)}
    published = spans["publish bm.orders.command.new"]
    processed = spans["process bm.orders.command.new"]
    assert published["parent_id"] == spans["place order"]["context"]["span_id"]
    assert published["kind"] == "SpanKind.PRODUCER"
    assert headers["traceparent"].split("-")[2] == published["context"]["span_id"][2:]
    assert processed["parent_id"] == published["context"]["span_id"]
    assert processed["kind"] == "SpanKind.CONSUMER"
    assert processed["attributes"]["brokermesh.request_id"] == "req_nats"
    assert spans["send"]["parent_id"] == processed["context"]["span_id"]


def test_a_message_outside_any_trace_gets_no_traceparent(spans_file: Path) -> None:
    headers = messaging.headers_for(order_command_pb2.OrderCommand(), "m1", "bm.orders.command.new")
    assert "traceparent" not in headers
    assert _read(spans_file) == []


def test_spans_reach_a_collector_over_otlp() -> None:
    """`otlp:<endpoint>`: the spans arrive at an OTLP/gRPC collector (here, one of the test's
    own that keeps what it is sent), with the service's name and the trace's ids."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[Any] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        tracing.configure("svc_orders", f"otlp:http://127.0.0.1:{port}")
        with context.bind(request_id="req_otlp"), tracing.span("place order", kind="server") as placed:
            pass
        tracing.shutdown()
    finally:
        server.stop(grace=None)
    spans = [
        (resource.resource, span)
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert len(spans) == 1, received
    resource, span = spans[0]
    assert span.name == "place order"
    assert span.trace_id.hex() == placed.traceparent.split("-")[1]
    assert span.span_id.hex() == placed.traceparent.split("-")[2]
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "svc_orders"
    attributes = {a.key: a.value.string_value for a in span.attributes}
    assert attributes["brokermesh.request_id"] == "req_otlp"
