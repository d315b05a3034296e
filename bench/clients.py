"""HTTP and SSE clients for load: aiohttp sessions sized for a concurrency, and a reader of
`text/event-stream` (WHATWG HTML §9.2) that yields events as they arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from svc_runtime import tls


def session(
    base_url: str, *, connections: int, token: str = "", timeout: float = 30.0
) -> aiohttp.ClientSession:
    """A keep-alive session with at most `connections` sockets to `base_url` (over TLS
    trusting the stack's CA, BROKERMESH_TLS_CA, for an https URL)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ssl = tls.client_context() if base_url.startswith("https:") else False
    return aiohttp.ClientSession(
        base_url,
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections, ssl=ssl),
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


class HttpError(Exception):
    """A response with an unexpected status; `error_kind` reports it as `HTTP <status>`."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


async def expect(response: aiohttp.ClientResponse, *statuses: int) -> bytes:
    """The body of a response whose status is one of `statuses`; HttpError otherwise."""
    body = await response.read()
    if response.status not in statuses:
        raise HttpError(response.status, body.decode("utf-8", "replace"))
    return body


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None


async def expect_stream(response: aiohttp.ClientResponse) -> None:
    """Raise HttpError unless `response` opened an event stream."""
    if response.status != 200 or not response.content_type.startswith("text/event-stream"):
        body = await response.read()
        raise HttpError(response.status, body.decode("utf-8", "replace"))


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """The events of an open `text/event-stream` response, until it ends. Comments
    (heartbeats) are skipped; `retry:` is ignored (the caller decides about reconnecting)."""
    event, data, last_id = "", [], None
    async for raw in response.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield Event(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value
