"""Stream tickets, as a browser's EventSource uses them: `POST /v1/stream-tickets` with the
bearer token, then `?ticket=` on an event stream — once, in time, for its own user only."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx
import pytest

from gateway.domain.tickets import ticket_authority
from tests.gateway.conftest import Edge, events, next_event, twin_gateway
from tests.gateway.test_http_edge import assert_problem

pytestmark = pytest.mark.e2e

STREAM = "/v1/marketdata/stream"


async def new_ticket(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    response = await client.post("/v1/stream-tickets", headers=auth)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body.keys() == {"ticket", "expiresIn", "expiresAt"}
    assert 0 < body["expiresIn"] <= 30 and body["expiresAt"].endswith("Z")
    return body["ticket"]


async def open_with(client: httpx.AsyncClient, ticket: str) -> httpx.Response:
    """The stream's first answer (status and, on 200, the first event), then closed."""
    async with client.stream("GET", STREAM, params={"symbols": "INFY", "ticket": ticket}) as response:
        if response.status_code == 200:
            first = await next_event(events(response))
            assert first.event == "retry"
        else:
            await response.aread()
        return response


REUSED = 'gateway_stream_tickets_total{outcome="reused"}'


async def test_a_ticket_opens_one_stream_once(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        reused_before = await edge.metric(client, REUSED)
        ticket = await new_ticket(client, edge.auth())
        async with client.stream("GET", STREAM, params={"symbols": "INFY", "ticket": ticket}) as response:
            assert response.status_code == 200
            stream = events(response)
            assert (await next_event(stream)).event == "retry"
            assert (await next_event(stream)).event == "price_tick"
        again = await open_with(client, ticket)
        assert_problem(again, 401, "TICKET_ALREADY_USED")
        # A replayed ticket is counted (and logged), not just refused.
        assert await edge.metric(client, REUSED) == reused_before + 1
        # A fresh ticket works again.
        assert (await open_with(client, await new_ticket(client, edge.auth()))).status_code == 200


async def test_expired_forged_and_misused_tickets_are_401(edge: Edge) -> None:
    user = "u_ticket_owner"
    secret = edge.stack.plan.jwt_secret
    expired = (
        ticket_authority(secret, ttl_seconds=30, clock=lambda: time.time() - 120).issue(user, "s1").token
    )
    wrong_key = ticket_authority(secret + "-not-it", ttl_seconds=30, clock=time.time).issue(user, "s1").token
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        good = await new_ticket(client, edge.auth(user))
        header, payload, signature = good.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["sub"] = "u_someone_else"
        other_user = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        cases = {
            "expired": (expired, "UNAUTHENTICATED"),
            "another key": (wrong_key, "UNAUTHENTICATED"),
            "sub changed": (f"{header}.{other_user}.{signature}", "UNAUTHENTICATED"),
            "access token as ticket": (edge.token(user), "UNAUTHENTICATED"),
            "garbage": ("abc.def.ghi", "UNAUTHENTICATED"),
        }
        for name, (ticket, reason) in cases.items():
            response = await open_with(client, ticket)
            assert response.status_code == 401, name
            assert_problem(response, 401, reason)
        # A ticket is no bearer token, and opens nothing but the streams.
        as_bearer = await client.get("/v1/funds", headers={"Authorization": f"Bearer {good}"})
        assert_problem(as_bearer, 401)
        elsewhere = await client.get("/v1/funds", params={"ticket": good})
        assert_problem(elsewhere, 401)
        # Tickets are handed out only to a verified user.
        assert_problem(await client.post("/v1/stream-tickets"), 401)
        assert_problem(await client.post("/v1/stream-tickets", params={"ticket": good}), 401)
        # The good ticket, untouched by all of that, still works once.
        assert (await open_with(client, good)).status_code == 200


async def test_a_ticket_is_single_use_across_gateway_processes(edge: Edge, tmp_path: Path) -> None:
    """A second gateway process beside the first: the ticket still opens one stream."""
    async with (
        twin_gateway(edge, tmp_path) as twin,
        httpx.AsyncClient(base_url=edge.url, timeout=30) as first,
        httpx.AsyncClient(base_url=twin.url, timeout=30) as second,
    ):
        # One after the other: spent at one process, refused at the other.
        ticket = await new_ticket(first, edge.auth())
        assert (await open_with(second, ticket)).status_code == 200
        assert_problem(await open_with(first, ticket), 401, "TICKET_ALREADY_USED")
        # At the same moment: exactly one of the two wins.
        for _ in range(3):
            ticket = await new_ticket(second, edge.auth())
            answers = await asyncio.gather(open_with(first, ticket), open_with(second, ticket))
            assert sorted(a.status_code for a in answers) == [200, 401]
