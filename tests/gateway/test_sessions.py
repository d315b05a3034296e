"""Sessions over REST on the in-process edge: login gives a pair of tokens, a refresh token
works once and is replaced, a spent one presented again ends the whole session, logout ends
it at once; and every kind of bad token gets the same 401 on REST and on the event streams
(bearer and ticket alike)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from gateway.domain.tickets import TICKET_AUDIENCE, TICKET_KID_PREFIX
from svc_runtime.tokens import KeySet
from tests.gateway.conftest import LocalEdge
from tests.support.tokens import KINDS, REFUSED, bad_tokens

LIMITS = "/v1/limits"  # answered by the edge itself: no service needed behind it


async def login(edge: LocalEdge, username: str = "asha") -> dict[str, Any]:
    response = await edge.client.post(
        "/v1/sessions", json={"username": username, "password": f"{username}-pass"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


async def refresh(edge: LocalEdge, refresh_token: str) -> httpx.Response:
    return await edge.client.post("/v1/sessions:refresh", json={"refreshToken": refresh_token})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def works(edge: LocalEdge, access_token: str) -> bool:
    response = await edge.client.get(LIMITS, headers=bearer(access_token))
    if response.status_code == 401:
        assert_refused(response)
        return False
    assert response.status_code == 200, response.text
    return True


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert (body["reason"], body["detail"]) == ("UNAUTHENTICATED", REFUSED)


async def test_login_gives_an_access_token_and_a_refresh_token_that_rotates(local_edge: LocalEdge) -> None:
    session = await login(local_edge)
    assert session["userId"] == "u_asha" and session["tokenType"] == "Bearer"
    assert 0 < session["expiresIn"] <= session["refreshExpiresIn"]
    assert session["refreshExpiresAt"].endswith("Z")
    assert await works(local_edge, session["accessToken"])
    # A refresh token is no access token, nor the other way round.
    assert not await works(local_edge, session["refreshToken"])
    assert_refused(await refresh(local_edge, session["accessToken"]))
    renewed = await refresh(local_edge, session["refreshToken"])
    assert renewed.status_code == 200, renewed.text
    assert renewed.headers["cache-control"] == "no-store"
    pair = renewed.json()
    assert pair["userId"] == "u_asha"
    assert pair["refreshToken"] != session["refreshToken"]
    assert pair["accessToken"] != session["accessToken"]
    # The session's end does not move with a refresh.
    assert pair["refreshExpiresAt"] == session["refreshExpiresAt"]
    assert await works(local_edge, pair["accessToken"])
    # The new refresh token works once in turn.
    assert (await refresh(local_edge, pair["refreshToken"])).status_code == 200


async def test_a_spent_refresh_token_presented_again_ends_the_whole_session(local_edge: LocalEdge) -> None:
    stolen = await login(local_edge)
    other = await login(local_edge)  # the same user on another device
    first = await refresh(local_edge, stolen["refreshToken"])
    assert first.status_code == 200
    legitimate = first.json()
    # The copy is presented after the real one was spent: refused, and the session is over
    # for everyone holding any of its tokens.
    assert_refused(await refresh(local_edge, stolen["refreshToken"]))
    assert not await works(local_edge, legitimate["accessToken"])
    assert not await works(local_edge, stolen["accessToken"])
    assert_refused(await refresh(local_edge, legitimate["refreshToken"]))
    # Another session of the same user is untouched.
    assert await works(local_edge, other["accessToken"])
    assert (await refresh(local_edge, other["refreshToken"])).status_code == 200


async def test_logout_ends_the_session_at_once(local_edge: LocalEdge) -> None:
    session = await login(local_edge, "ravi")
    other = await login(local_edge, "ravi")
    ticket = await local_edge.client.post("/v1/stream-tickets", headers=bearer(session["accessToken"]))
    assert ticket.status_code == 201
    logout = await local_edge.client.delete("/v1/sessions/current", headers=bearer(session["accessToken"]))
    assert logout.status_code == 204, logout.text
    assert not await works(local_edge, session["accessToken"])
    assert_refused(await refresh(local_edge, session["refreshToken"]))
    # A ticket from before the logout opens nothing.
    stream = await local_edge.client.get(
        "/v1/marketdata/stream", params={"symbols": "INFY", "ticket": ticket.json()["ticket"]}
    )
    assert_refused(stream)
    assert_refused(
        await local_edge.client.delete("/v1/sessions/current", headers=bearer(session["accessToken"]))
    )
    assert_refused(await local_edge.client.delete("/v1/sessions/current"))
    assert await works(local_edge, other["accessToken"])


@pytest.mark.parametrize("kind", KINDS)
async def test_every_bad_token_is_401_alike_on_rest_and_sse(local_edge: LocalEdge, kind: str) -> None:
    revoked_session = "s-revoked-" + kind.replace(" ", "-")
    local_edge.revoked.add(revoked_session, time.time() + 3600)
    token = bad_tokens(local_edge.keys, user_id="u_asha", revoked_session=revoked_session)[kind]
    ticket = bad_tokens(
        KeySet.single(local_edge.ticket_key, "1"),
        user_id="u_asha",
        revoked_session=revoked_session,
        audience=TICKET_AUDIENCE,
        kid_prefix=TICKET_KID_PREFIX,
    )[kind]
    client = local_edge.client
    assert_refused(await client.get(LIMITS, headers=bearer(token)))
    assert_refused(await client.post("/v1/stream-tickets", headers=bearer(token)))
    assert_refused(await client.delete("/v1/sessions/current", headers=bearer(token)))
    for path in ("/v1/marketdata/stream", "/v1/orders/stream"):
        assert_refused(await client.get(path, params={"symbols": "INFY"}, headers=bearer(token)))
        assert_refused(await client.get(path, params={"symbols": "INFY", "ticket": ticket}))
