"""An SSE stream keeps little in the server's write buffer, so that a client that stops
reading meets the write deadline soon after it falls behind (over TLS, each layer would
otherwise hold 64 KiB more)."""

from __future__ import annotations

import asyncio
import socket

from gateway.transport.streams import STREAM_SEND_BUFFER, STREAM_WRITE_BUFFER, _hold_less


class Transport:
    """Like uvloop's transports: the method, but not asyncio's classes."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.limits: dict[str, int | None] = {}
        self.sock = sock

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.sock if name == "socket" else default

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


def test_the_stream_bounds_its_socket_send_buffer() -> None:
    """The kernel's autotuned send buffer would otherwise hold seconds of a stream that a
    client has stopped reading before any write waits."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        before = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        _hold_less(Cycle(Transport(sock)).send)
        after = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert after != before
    assert after <= 2 * STREAM_SEND_BUFFER  # Linux doubles what it is given
