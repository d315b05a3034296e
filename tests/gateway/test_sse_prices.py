"""Live prices over SSE from the gateway process: the `PriceTick` shape of openapi.yaml,
snapshot first, conflation, heartbeats, stream limits, and a slow client dropped without
holding up anyone."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from brokermesh.marketdata.v1.marketdata_pb2 import FeedStatus
from svc_runtime import tls
from tests.gateway.conftest import (
    SYMBOLS,
    Edge,
    Event,
    events,
    make_quote,
    next_event,
    start_edge,
    twin_gateway,
)
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

STREAM = "/v1/marketdata/stream"


async def test_stream_sends_current_quotes_then_each_change_in_the_seed_shape(edge: Edge) -> None:
    edge.tracker.quotes["INFY"] = make_quote("INFY", "1530.25", 10)
    auth = edge.auth()
    async with (
        httpx.AsyncClient(base_url=edge.url, timeout=30) as client,
        client.stream("GET", STREAM, params={"symbols": "INFY,TCS"}, headers=auth) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"].startswith("no-cache")
        stream = events(response)
        first = await next_event(stream)
        assert first.event == "retry"
        snapshot = [await next_event(stream), await next_event(stream)]
        assert {e.event for e in snapshot} == {"price_tick"}
        by_symbol = {e.json()["symbol"]: e.json() for e in snapshot}
        assert by_symbol.keys() == {"INFY", "TCS"}
        assert by_symbol["INFY"]["ltp"] == Decimal("1530.25")

        await edge.publish([make_quote("INFY", "1542.35", 11)])
        tick = await next_event(stream)
        assert tick.event == "price_tick"
        # openapi.yaml's PriceTick: {"symbol":"INFY","ltp":1542.35,"change":12.10,"changePct":0.79,"ts":"…"}
        assert tick.data.startswith('{"symbol":"INFY","ltp":1542.35,"change":542.35,"changePct":54.24,')
        data = tick.json()
        assert list(data) == [
            "symbol",
            "ltp",
            "change",
            "changePct",
            "bid",
            "bidQty",
            "ask",
            "askQty",
            "volume",
            "sequence",
            "ts",
        ]
        assert data["sequence"] == 11
        assert data["ts"].endswith("Z")
        # Ticks of symbols the client did not ask for never reach it.
        await edge.publish([make_quote("RELIANCE", "2500.00", 12), make_quote("TCS", "3456.70", 12)])
        other = await next_event(stream)
        assert other.json()["symbol"] == "TCS" and other.json()["ltp"] == Decimal("3456.70")


async def test_fast_ticks_are_conflated_to_the_latest_price(edge: Edge) -> None:
    async with (
        httpx.AsyncClient(base_url=edge.url, timeout=30) as client,
        client.stream("GET", STREAM, params={"symbols": "HDFCBANK"}, headers=edge.auth()) as response,
    ):
        stream = events(response)
        assert (await next_event(stream)).event == "retry"
        await next_event(stream)  # the snapshot
        ticks = 300
        for n in range(ticks):
            await edge.publish([make_quote("HDFCBANK", f"{1600 + n * Decimal('0.05'):.2f}", 100 + n)])
        last = f"{1600 + (ticks - 1) * Decimal('0.05'):.2f}"
        received = []
        while True:
            event = await next_event(stream)
            received.append(event.json()["ltp"])
            if event.json()["ltp"] == Decimal(last):
                break
        # At most 50 pushes/s: far fewer frames than ticks, and never out of order.
        assert len(received) < ticks / 3
        assert received == sorted(received)


async def test_idle_streams_get_heartbeats_with_server_time_and_sequence(edge: Edge) -> None:
    async with (
        httpx.AsyncClient(base_url=edge.url, timeout=30) as client,
        client.stream("GET", STREAM, params={"symbols": "SYM001"}, headers=edge.auth()) as response,
    ):
        stream = events(response)
        await next_event(stream)  # retry
        await next_event(stream)  # snapshot
        await edge.publish([make_quote("SYM002", "1001.00", 777_000_001)])  # another symbol's tick
        while (beat := await next_event(stream, skip_liveness=False, timeout=10)).event != "heartbeat":
            pass
        data = beat.json()
        assert list(data) == ["serverTime", "sequence", "status"]
        assert data["serverTime"].endswith("Z")
        server_time = datetime.fromisoformat(data["serverTime"].replace("Z", "+00:00"))
        assert abs((server_time - datetime.now(UTC)).total_seconds()) < 5
        # The feed's sequence, not only this stream's: the client knows how current it is.
        assert data["sequence"] >= 777_000_001


async def test_streams_per_user_are_capped_across_gateway_processes(edge: Edge, tmp_path: Path) -> None:
    """Workers and replicas of the gateway count a user's streams together: one open on each
    of two processes is the cap of two, whichever process the third asks."""
    auth = edge.auth()
    async with (
        twin_gateway(edge, tmp_path) as twin,
        httpx.AsyncClient(base_url=edge.url, timeout=30) as here,
        httpx.AsyncClient(base_url=twin.url, timeout=30) as there,
        contextlib.AsyncExitStack() as open_streams,
    ):
        for client in (here, there):
            response = await open_streams.enter_async_context(
                client.stream("GET", STREAM, params={"symbols": "INFY"}, headers=auth)
            )
            assert response.status_code == 200
        for client in (here, there):
            third = await client.get(STREAM, params={"symbols": "INFY"}, headers=auth)
            assert third.status_code == 429 and third.json()["reason"] == "TOO_MANY_STREAMS"
        await open_streams.aclose()

        # A stream closed on one process frees its slot for the other.
        async def can_open() -> bool:
            async with here.stream("GET", STREAM, params={"symbols": "INFY"}, headers=auth) as response:
                return response.status_code == 200

        await eventually(can_open)


async def test_stream_requests_are_checked_before_streaming(edge: Edge) -> None:
    auth = edge.auth()
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        unknown = await client.get(STREAM, params={"symbols": "INFY,NOSUCH"}, headers=auth)
        assert unknown.status_code == 400 and unknown.json()["reason"] == "UNKNOWN_SYMBOL"
        too_many = await client.get(STREAM, params={"symbols": ",".join(SYMBOLS[:201])}, headers=auth)
        assert too_many.status_code == 400  # the served contract's maxItems is the configured 200
        assert too_many.json()["fieldViolations"][0]["field"] == "symbols"
        neither = await client.get(STREAM, headers=auth)
        assert neither.status_code == 400
        anonymous = await client.get(STREAM, params={"symbols": "INFY"})
        assert anonymous.status_code == 401


async def test_concurrent_streams_per_user_are_capped(edge: Edge) -> None:
    auth = edge.auth()
    async with (
        httpx.AsyncClient(base_url=edge.url, timeout=30) as client,
        contextlib.AsyncExitStack() as open_streams,
    ):
        for _ in range(2):
            response = await open_streams.enter_async_context(
                client.stream("GET", STREAM, params={"symbols": "INFY"}, headers=auth)
            )
            assert response.status_code == 200
        third = await client.get(STREAM, params={"symbols": "INFY"}, headers=auth)
        assert third.status_code == 429 and third.json()["reason"] == "TOO_MANY_STREAMS"
        assert int(third.headers["retry-after"]) >= 1
        # Someone else still gets a stream.
        async with client.stream("GET", STREAM, params={"symbols": "INFY"}, headers=edge.auth()) as response:
            assert response.status_code == 200
    # Closing a stream gives its slot back.
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:

        async def can_open() -> bool:
            async with client.stream("GET", STREAM, params={"symbols": "INFY"}, headers=auth) as response:
                return response.status_code == 200

        await eventually(can_open)


def _open_unread_stream(edge: Edge, token: str, symbols: list[str]) -> socket.socket:
    """A client that asks for a stream and then never reads: a tiny receive window."""
    scheme, _, address = edge.url.partition("://")
    host, port = address.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    if scheme == "https":
        sock = tls.client_context().wrap_socket(sock, server_hostname=host)
    request = (
        f"GET {STREAM}?symbols={','.join(symbols)} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


async def test_a_client_that_stops_reading_is_dropped_and_others_keep_their_ticks(edge: Edge) -> None:
    symbols = [s for s in SYMBOLS if s.startswith("SYM")]
    dropped_metric = 'gateway_sse_dropped_total{kind="marketdata",reason="slow_consumer"}'
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        dropped_before = await edge.metric(client, dropped_metric)
        slow = _open_unread_stream(edge, edge.token(), symbols)
        try:
            async with client.stream(
                "GET", STREAM, params={"symbols": "SYM000"}, headers=edge.auth()
            ) as healthy:
                seen: list[Decimal] = []

                async def read_healthy() -> None:
                    async for event in events(healthy):
                        if event.event == "price_tick":
                            seen.append(event.json()["ltp"])

                reader = asyncio.create_task(read_healthy())
                sequence, price = 1000, Decimal("1000.00")

                async def flood_until_dropped() -> bool:
                    nonlocal sequence, price
                    for _ in range(5):
                        sequence += 1
                        price += Decimal("0.05")
                        await edge.publish([make_quote(s, str(price), sequence) for s in symbols])
                        await asyncio.sleep(0.02)
                    return await edge.metric(client, dropped_metric) > dropped_before

                await eventually(flood_until_dropped, timeout=60, interval=0)
                # The healthy client was served all along and has the latest price.
                await eventually(lambda: _has(seen, price))
                assert not reader.done()
                reader.cancel()
        finally:
            slow.close()


async def test_a_client_that_reads_too_slowly_is_told_why_before_it_is_dropped(edge: Edge) -> None:
    symbols = [s for s in SYMBOLS if s.startswith("SYM")]
    dropped_metric = 'gateway_sse_dropped_total{kind="marketdata",reason="slow_consumer"}'
    received: list[bytes] = []
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        dropped_before = await edge.metric(client, dropped_metric)
        slow = _open_unread_stream(edge, edge.token(), symbols)
        slow.settimeout(30)
        try:
            sequence, price = 20_000, Decimal("1000.00")

            async def dropped() -> bool:
                nonlocal sequence, price
                for _ in range(5):  # far more than the 2.5 KB/s this client reads
                    sequence += 1
                    price += Decimal("0.05")
                    await edge.publish([make_quote(s, str(price), sequence) for s in symbols])
                    received.append(await asyncio.to_thread(slow.recv, 256))
                    await asyncio.sleep(0.1)
                return await edge.metric(client, dropped_metric) > dropped_before

            await eventually(dropped, timeout=60, interval=0)
            while chunk := await asyncio.to_thread(slow.recv, 65536):
                received.append(chunk)
        finally:
            slow.close()
    text = b"".join(received).decode(errors="replace")
    last = text[text.rfind("event: ") :]  # the last event (chunk framing follows it)
    assert last.startswith("event: error\n")
    assert '"reason":"SLOW_CONSUMER"' in last.replace(" ", "")


async def test_with_default_limits_a_client_that_stops_reading_is_dropped_within_15_s(
    infra: SharedInfra, tmp_path: Path
) -> None:
    # The production write deadline (10 s), not the tests' short one.
    own, teardown = await start_edge(infra, tmp_path, BROKERMESH_GATEWAY_WRITE_TIMEOUT_SECONDS="10")
    symbols = [s for s in SYMBOLS if s.startswith("SYM")]
    dropped_metric = 'gateway_sse_dropped_total{kind="marketdata",reason="slow_consumer"}'
    try:
        async with httpx.AsyncClient(base_url=own.url, timeout=30) as client:
            slow = _open_unread_stream(own, own.token(), symbols)
            try:
                flooding_since = time.monotonic()
                sequence, price = 10_000, Decimal("1000.00")

                async def dropped() -> bool:
                    nonlocal sequence, price
                    for _ in range(5):  # ~60 KB of frames each time, faster than anyone reads
                        sequence += 1
                        price += Decimal("0.05")
                        await own.publish([make_quote(s, str(price), sequence) for s in symbols])
                        await asyncio.sleep(0.02)
                    return await own.metric(client, dropped_metric) > 0

                await eventually(dropped, timeout=30, interval=0)
                assert time.monotonic() - flooding_since <= 15.0
            finally:
                slow.close()
    finally:
        await teardown()


async def _has(seen: list[Decimal], price: Decimal) -> bool:
    return bool(seen) and seen[-1] == price


async def test_shutdown_ends_open_streams_and_exits_cleanly(infra: SharedInfra, tmp_path: Path) -> None:
    own, teardown = await start_edge(infra, tmp_path)
    try:
        async with (
            httpx.AsyncClient(base_url=own.url, timeout=30) as client,
            client.stream("GET", STREAM, params={"symbols": "INFY"}, headers=own.auth()) as response,
        ):
            stream = events(response)
            await next_event(stream)  # retry
            await next_event(stream)  # snapshot
            code = await own.stack.stop_service("gateway")
            assert code == 0  # exited on SIGTERM by itself, not killed after the grace period
            with pytest.raises(StopAsyncIteration):
                await next_event(stream, timeout=5)
    finally:
        await teardown()


class Heartbeats:
    """Plays the price tracker's status heartbeat (four a second) until stopped."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.last_sent_ns = 0
        self.task: asyncio.Task[None] | None = None

    def start(self, state: int = FeedStatus.STATE_LIVE, stale_since_ns: int = 0) -> None:
        self.stop()

        async def beat() -> None:
            while True:
                await self.edge.publish_status(state, last_sequence=5000, stale_since_ns=stale_since_ns)
                self.last_sent_ns = time.time_ns()
                await asyncio.sleep(0.25)

        self.task = asyncio.create_task(beat())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


async def _next_status(stream: AsyncIterator[Event], timeout: float) -> tuple[float, dict[str, Any]]:
    while True:
        event = await next_event(stream, skip_liveness=False, timeout=timeout)
        if event.event == "feed_status":
            return time.monotonic(), event.json()


async def test_streams_say_when_the_feed_stops_and_when_it_is_back(edge: Edge) -> None:
    heartbeats = Heartbeats(edge)
    heartbeats.start()
    try:
        async with (
            httpx.AsyncClient(base_url=edge.url, timeout=30) as client,
            client.stream("GET", STREAM, params={"symbols": "SYM010,SYM011"}, headers=edge.auth()) as one,
            client.stream("GET", STREAM, params={"symbols": "SYM012"}, headers=edge.auth()) as two,
        ):
            streams = [events(one), events(two)]
            for stream in streams:
                while (await _next_status(stream, 10))[1]["status"] != "LIVE":
                    pass
            # The tracker falls silent (crashed, cut off): every stream says STALE within 2 s
            # of its last heartbeat, with the moment quotes stopped being current.
            heartbeats.stop()
            stopped, last_beat_ns = time.monotonic(), heartbeats.last_sent_ns
            for stream in streams:
                told, status = await _next_status(stream, 5)
                assert status["status"] == "STALE"
                assert told - stopped <= 2.0
                since = datetime.fromisoformat(status["staleSince"].replace("Z", "+00:00"))
                assert abs(since.timestamp() - last_beat_ns / 1e9) < 0.5
                assert status["sequence"] >= 5000
            # A client connecting now gets the snapshot, then the word that it is stale.
            async with client.stream(
                "GET", STREAM, params={"symbols": "SYM013"}, headers=edge.auth()
            ) as late:
                stream = events(late)
                assert (await next_event(stream)).event == "retry"
                assert (await next_event(stream)).event == "price_tick"
                status = await next_event(stream, skip_liveness=False)
                assert status.event == "feed_status" and status.json()["status"] == "STALE"
            # Back: every stream says LIVE.
            heartbeats.start()
            for stream in streams:
                _, status = await _next_status(stream, 5)
                assert status == {**status, "status": "LIVE", "staleSince": None}
            # The tracker's own word that the exchange is silent travels as it is.
            exchange_silent_since = time.time_ns() - 3 * 10**9
            heartbeats.start(FeedStatus.STATE_STALE, exchange_silent_since)
            for stream in streams:
                _, status = await _next_status(stream, 5)
                assert status["status"] == "STALE"
                since = datetime.fromisoformat(status["staleSince"].replace("Z", "+00:00"))
                assert abs(since.timestamp() - exchange_silent_since / 1e9) < 0.001
    finally:
        heartbeats.stop()
