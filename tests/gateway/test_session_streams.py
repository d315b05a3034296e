"""A revoked session's open event streams end within 5 s, on the gateway as its own process
(revocations travel through real NATS): the stream opened with the bearer token and the one
opened with a stream ticket alike, each told why in a last detail-free `error` event."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.gateway.conftest import Edge, Event, events, next_event, twin_gateway
from tests.gateway.test_stream_tickets import new_ticket
from tests.support.infra import unique_name
from tests.support.polling import eventually
from tests.support.tokens import REFUSED

STREAM = "/v1/marketdata/stream"
REVOCATION_DEADLINE_SECONDS = 5.0


async def last_event(stream: AsyncIterator[Event]) -> Event | None:
    """Read a stream to its end; the last event it sent (liveness events included)."""
    last = None
    async for event in stream:
        last = event
    return last


async def test_logout_ends_the_sessions_open_streams_within_5_seconds(edge: Edge) -> None:
    user = unique_name("u_")
    auth = edge.auth(user)
    bystander_auth = edge.auth()  # another session (of another user: two streams per user here)
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        internal = httpx.AsyncClient(base_url=edge.internal_url)
        async with internal:
            await eventually(lambda: _sessions_ready(internal), timeout=30)
        ticket = await new_ticket(client, auth)
        async with (
            client.stream("GET", STREAM, params={"symbols": "INFY"}, headers=auth) as by_bearer,
            client.stream("GET", STREAM, params={"symbols": "TCS", "ticket": ticket}) as by_ticket,
            client.stream("GET", STREAM, params={"symbols": "INFY"}, headers=bystander_auth) as bystander,
        ):
            assert (by_bearer.status_code, by_ticket.status_code, bystander.status_code) == (200, 200, 200)
            streams = [events(by_bearer), events(by_ticket)]
            others = events(bystander)
            for stream in [*streams, others]:
                assert (await next_event(stream)).event == "retry"
                assert (await next_event(stream)).event == "price_tick"
            started = time.monotonic()
            logout = await client.delete("/v1/sessions/current", headers=auth)
            assert logout.status_code == 204, logout.text
            for stream in streams:
                last = await last_event(stream)
                elapsed = time.monotonic() - started
                print(f"SSE stream of a revoked session ended {elapsed * 1000:.0f} ms after the logout")
                assert elapsed < REVOCATION_DEADLINE_SECONDS
                assert last is not None and last.event == "error"
                assert last.json() == {"reason": "UNAUTHENTICATED", "detail": REFUSED}
            # The other session's stream goes on.
            assert (await next_event(others, skip_liveness=False)).event in {
                "heartbeat",
                "feed_status",
                "price_tick",
            }
        # And the session's token opens nothing any more.
        again = await client.get(STREAM, params={"symbols": "INFY"}, headers=auth)
        assert again.status_code == 401
        assert again.json()["detail"] == REFUSED


async def test_a_logout_at_one_gateway_process_ends_streams_at_another_within_5_seconds(
    edge: Edge, tmp_path: Path
) -> None:
    """The revocation travels through NATS to every gateway process holding streams."""
    auth = edge.auth()
    async with (
        twin_gateway(edge, tmp_path) as twin,
        httpx.AsyncClient(base_url=edge.url, timeout=30) as first,
        httpx.AsyncClient(base_url=twin.url, timeout=30) as second,
    ):
        async with second.stream("GET", STREAM, params={"symbols": "INFY"}, headers=auth) as response:
            assert response.status_code == 200
            stream = events(response)
            assert (await next_event(stream)).event == "retry"
            assert (await next_event(stream)).event == "price_tick"
            started = time.monotonic()
            logout = await first.delete("/v1/sessions/current", headers=auth)
            assert logout.status_code == 204, logout.text
            last = await last_event(stream)
            elapsed = time.monotonic() - started
            print(f"SSE stream at another gateway process ended {elapsed * 1000:.0f} ms after the logout")
            assert elapsed < REVOCATION_DEADLINE_SECONDS
            assert last is not None and last.event == "error"
            assert last.json() == {"reason": "UNAUTHENTICATED", "detail": REFUSED}
        refused = await second.get(STREAM, params={"symbols": "INFY"}, headers=auth)
        assert refused.status_code == 401


async def _sessions_ready(internal: httpx.AsyncClient) -> bool:
    return (await internal.get("/healthz")).json().get("sessions") == "ready"
