"""An SSE stream keeps little in the server's write buffer, so that a client that stops
reading meets the write deadline soon after it falls behind (over TLS, each layer would
otherwise hold 64 KiB more)."""

from __future__ import annotations

import asyncio

from gateway.transport.streams import STREAM_WRITE_BUFFER, _hold_less


class Transport:
    """Like uvloop's transports: the method, but not asyncio's classes."""

    def __init__(self) -> None:
        self.limits: dict[str, int | None] = {}

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = {"high": high, "low": low}


class Cycle:
    """uvicorn's request-response cycle: its `send` is a method, its connection a transport."""

    def __init__(self, transport: object) -> None:
        self.transport = transport

    async def send(self, message: dict[str, object]) -> None:
        await asyncio.sleep(0)


def test_the_stream_lowers_its_connection_write_buffer() -> None:
    transport = Transport()
    _hold_less(Cycle(transport).send)
    assert transport.limits == {"high": STREAM_WRITE_BUFFER, "low": None}
    assert STREAM_WRITE_BUFFER <= 16 * 1024


def test_a_server_without_a_reachable_transport_keeps_its_limits() -> None:
    async def send(message: dict[str, object]) -> None:
        await asyncio.sleep(0)

    _hold_less(send)  # nothing to lower, nothing raised
    _hold_less(Cycle(object()).send)
