"""Live prices over SSE from the gateway process: the `PriceTick` shape of openapi.yaml,
snapshot first, conflation, heartbeats, stream limits, and a slow client dropped without
holding up anyone."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import SYMBOLS, Edge, events, make_quote, next_event, start_edge
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
        assert tick.data.startswith('{"symbol":"INFY","ltp":1542.35,"change":542.35,"changePct":54.24,"ts":"')
        data = tick.json()
        assert list(data) == ["symbol", "ltp", "change", "changePct", "ts"]
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


async def test_idle_streams_get_heartbeats(edge: Edge) -> None:
    async with (
        httpx.AsyncClient(base_url=edge.url, timeout=30) as client,
        client.stream("GET", STREAM, params={"symbols": "SYM001"}, headers=edge.auth()) as response,
    ):
        stream = events(response)
        await next_event(stream)  # retry
        await next_event(stream)  # snapshot
        beat = await next_event(stream, skip_comments=False, timeout=10)
        assert beat.event == "comment" and beat.comments == ["hb"]


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
    host, port = edge.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
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
