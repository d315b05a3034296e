"""What tracing costs while it is off (`BROKERMESH_TRACING` unset), per place that would trace.

    python -m bench.tracing_off

CPU time (`time.process_time`: waiting for a shared CPU is not counted), best of 7 runs.
"""

from __future__ import annotations

import os
import sys
import time
import timeit
from collections.abc import Callable

from brokermesh.orders.v1 import order_command_pb2
from svc_runtime import context, messaging, tracing


def best(fn: Callable[[], object], n: int) -> float:
    """Nanoseconds per call of `fn`."""
    return min(timeit.Timer(fn, timer=time.process_time).repeat(repeat=7, number=n)) / n * 1e9


def main() -> None:
    os.environ.pop(tracing.TRACING, None)
    tracing.configure("bench")
    assert not tracing.enabled()

    def nothing() -> None:
        pass

    def a_span() -> None:
        with tracing.span("x", kind="server") as span:
            span.set("a", 1)

    command = order_command_pb2.OrderCommand()
    metadata = (("x-request-id", "req_1"), ("authorization", "x" * 200))
    print(f"an empty call, for scale:            {best(nothing, 1_000_000):6.0f} ns")
    print(f"a span entered, one attribute, left: {best(a_span, 1_000_000):6.0f} ns")
    with context.bind(request_id="req_1"):
        print(
            f"NATS headers of a message:           {best(lambda: messaging.headers_for(command, 'm1'), 300_000):6.0f} ns"
        )
        print(f"gRPC metadata of a call:             {best(context.outgoing_metadata, 300_000):6.0f} ns")
        print(
            f"request context from gRPC metadata:  {best(lambda: context.from_metadata(metadata), 300_000):6.0f} ns"
        )
    print("OpenTelemetry imported:", any(name.startswith("opentelemetry") for name in sys.modules))


if __name__ == "__main__":
    main()
