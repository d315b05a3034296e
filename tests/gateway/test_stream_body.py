"""An event stream's request passes the edge once; its body is written from the outermost
layer, after every middleware returned, in the request's context."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.adapters.backends import Backends
from gateway.app.quotes import QuoteHub
from gateway.transport.middleware import REQUESTS
from svc_runtime import context
from tests.gateway.conftest import quick_limits, serve_local
from tests.gateway.test_app_units import FakeQuotes, quote

STREAM = "/v1/marketdata/stream"


def awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The qualified names of the coroutines `task` is suspended in, outermost first."""
    names: list[str] = []
    coroutine: Any = task.get_coro()
    while coroutine is not None and hasattr(coroutine, "cr_code"):
        names.append(coroutine.cr_code.co_qualname)
        coroutine = coroutine.cr_await
    return names


def answered() -> float:
    return REQUESTS.labels("stream_market_data", "GET", "200")._value.get()


async def test_a_streams_body_is_written_after_the_middleware_returned_in_the_requests_context() -> None:
    nowhere = "127.0.0.1:9"
    backends = Backends(orders_target=nowhere, funds_target=nowhere, marketdata_target=nowhere, timeout=2.0)
    hub = QuoteHub(FakeQuotes({"INFY": quote("INFY", "1530.25", 10, 1)}))
    async with serve_local(backends, quick_limits(), hub=hub) as edge:
        headers = [(b"host", b"edge.test"), (b"x-request-id", b"req_stream_body_test")] + [
            (k.lower().encode(), v.encode()) for k, v in edge.auth().items()
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "https",
            "path": STREAM,
            "raw_path": STREAM.encode(),
            "query_string": b"symbols=INFY",
            "root_path": "",
            "headers": headers,
            "client": ("192.0.2.10", 40000),
            "server": ("edge.test", 443),
        }
        started: list[dict[str, Any]] = []
        seen: dict[str, Any] = {}
        ticked = asyncio.Event()
        gone = asyncio.Event()
        before = answered()

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.append(message)
            elif b"price_tick" in message.get("body", b"") and not ticked.is_set():
                task = asyncio.current_task()
                assert task is not None
                seen.update(awaiting=awaiting(task), request_id=context.request_id(), answered=answered())
                ticked.set()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        request = asyncio.create_task(edge.app(scope, receive, send))
        await asyncio.wait_for(ticked.wait(), 10)
        gone.set()
        await asyncio.wait_for(request, 10)

    assert started and started[0]["status"] == 200
    # While it streams, the request holds no middleware frame: the edge has counted it as
    # answered (with its status) and the rest of its stack is released.
    assert seen["answered"] == before + 1
    held = seen["awaiting"]
    assert not [name for name in held if "Middleware" in name or "Router" in name], held
    assert len(held) <= 4, held
    # The stream's writes (and log lines) still carry the request's id.
    assert seen["request_id"] == "req_stream_body_test"
