"""A TCP proxy between svc_exec and the exchange that understands FIX framing, so tests can
lose one message on the wire (the receiver sees a sequence gap and asks for a resend) or
cut the connection while fills are in flight (a network failure, not a logout)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable

from svc_runtime.infra.processes import free_port

_LENGTH = re.compile(rb"^8=[^\x01]+\x019=(\d+)\x01")
_CHECKSUM_LEN = len(b"10=000\x01")

Predicate = Callable[[bytes], bool]


def split_messages(buffer: bytearray) -> list[bytes]:
    """Take every complete FIX message off the front of `buffer`."""
    out = []
    while True:
        match = _LENGTH.match(buffer)
        if match is None:
            return out
        end = match.end() + int(match.group(1)) + _CHECKSUM_LEN
        if len(buffer) < end:
            return out
        out.append(bytes(buffer[:end]))
        del buffer[:end]


class FixProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.AbstractServer | None = None
        self.connections: set[asyncio.StreamWriter] = set()
        self._drop_to_client: list[Predicate] = []
        self.dropped: list[bytes] = []
        self.refuse = False
        self.attempts = 0  # connections svc_exec opened

    async def start(self) -> FixProxy:
        self.server = await asyncio.start_server(self._serve, self.host, self.port)
        return self

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def drop_next_to_client(self, predicate: Predicate) -> None:
        """Lose the next exchange → svc_exec message matching `predicate`."""
        self._drop_to_client.append(predicate)

    def cut(self) -> None:
        """Reset every connection, as a network failure would."""
        for writer in list(self.connections):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self.connections.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        if self.refuse:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self.connections.update({client_writer, upstream_writer})
        await asyncio.gather(
            self._pump(client_reader, upstream_writer, drop=None),
            self._pump(upstream_reader, client_writer, drop=self._drop_to_client),
            return_exceptions=True,
        )
        for writer in (client_writer, upstream_writer):
            self.connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drop: list[Predicate] | None
    ) -> None:
        buffer = bytearray()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if drop is None:
                    writer.write(data)
                else:
                    buffer.extend(data)
                    for message in split_messages(buffer):
                        if drop and drop[0](message):
                            drop.pop(0)
                            self.dropped.append(message)
                            continue
                        writer.write(message)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
