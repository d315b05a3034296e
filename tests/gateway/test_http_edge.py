"""The HTTP edge as a process: contract, request ids, authentication, validation and
abuse limits. Every error must be problem+json and none may reach a service."""

from __future__ import annotations

import base64
import json
import math
import re
import time
from pathlib import Path

import httpx
import psutil
import pytest

from svc_runtime.reasons import CATALOGUE
from tests.gateway.conftest import Edge, twin_gateway
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
ORDER = {"symbol": "INFY", "side": "BUY", "type": "LIMIT", "quantity": 10, "limitPrice": "1542.35"}


def assert_problem(response: httpx.Response, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert {"type", "title", "status", "detail", "instance", "requestId", "reason"} <= body.keys()
    assert body["status"] == status
    assert body["requestId"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    assert body["reason"] in CATALOGUE and CATALOGUE[body["reason"]].http == status, body["reason"]
    if reason is not None:
        assert body["reason"] == reason
    return body


async def test_health_contract_docs_and_metrics_are_served(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        health = await client.get("/healthz")
        # The public port tells a load balancer only whether to send traffic.
        assert health.status_code == 200 and health.json() == {"status": "serving"}
        spec = (await client.get("/v1/openapi.json")).json()
        assert {"/orders", "/orders/{orderId}:cancel", "/marketdata/stream", "/sessions"} <= spec[
            "paths"
        ].keys()
        assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        ui = await client.get("/v1/ui/")
        assert ui.status_code == 200 and "swagger" in ui.text.lower()
        assert_problem(await client.get("/metrics"), 404)
        # Metrics and health details are on the internal listener, on loopback only.
        metrics = await client.get(f"{edge.internal_url}/metrics")
        assert "gateway_http_requests_total" in metrics.text
        details = (await client.get(f"{edge.internal_url}/healthz")).json()
        assert details["status"] == "serving" and details["tickFeed"] == "subscribed"
        assert {"streams", "backends", "streamTickets"} <= details.keys()
    gateway = psutil.Process(edge.stack.processes["gateway"].pid)
    internal_port = edge.stack.plan.ports["gateway"]["metrics"]
    listening = [c.laddr for c in gateway.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert [a.ip for a in listening if a.port == internal_port] == ["127.0.0.1"]


async def test_request_ids_are_echoed_or_made(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        mine = await client.get("/healthz", headers={"X-Request-Id": "req-from-the-app-42"})
        assert mine.headers["x-request-id"] == "req-from-the-app-42"
        made = await client.get("/v1/orders")
        assert made.headers["x-request-id"].startswith("req_")
        # An unsafe id (it would end up in logs and metadata) is replaced, not echoed.
        unsafe = await client.get("/healthz", headers={"X-Request-Id": "x\tinjected: yes"})
        assert unsafe.headers["x-request-id"].startswith("req_")


async def test_missing_expired_tampered_and_unsigned_tokens_are_401(edge: Edge) -> None:
    valid = edge.token("u_victim")
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "u_attacker"

    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    bad = {
        "none": None,
        "expired": edge.token(
            "u_victim", iat=int(time.time()) - 3600, nbf=int(time.time()) - 3600, ttl=-1800
        ),
        "tampered": f"{header}.{b64(claims)}.{signature}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "garbage": "abc.def.ghi",
    }
    async with httpx.AsyncClient(base_url=edge.url) as client:
        for name, token in bad.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = await client.get("/v1/orders", headers=headers)
            body = assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer"), name
            # Whatever is wrong, the same answer: nothing for a prober to learn.
            assert (body["reason"], body["detail"]) == ("UNAUTHENTICATED", "authentication required"), name
        basic = await client.get("/v1/funds", headers={"Authorization": "Basic dTpw"})
        assert_problem(basic, 401)


async def test_invalid_orders_are_400_with_every_field_violation(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.post(
            "/v1/orders",
            json={
                "symbol": "IN FY",
                "side": "HOLD",
                "quantity": 1.5,
                "userId": "u_other",
                "status": "FILLED",
            },
            headers=edge.auth(),
        )
        body = assert_problem(response, 400, "INVALID_ARGUMENT")
        fields = {v["field"] for v in body["fieldViolations"]}
        assert fields == {"symbol", "side", "type", "quantity", "userId", "status"}


async def test_prices_must_be_exact_rupees(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        for price in ("1542.355", 1542.355, "1.5e3", -5, "NaN"):
            response = await client.post(
                "/v1/orders", json={**ORDER, "limitPrice": price}, headers=edge.auth()
            )
            body = assert_problem(response, 400)
            assert body["fieldViolations"][0]["field"] == "limitPrice", price
        not_json = await client.post(
            "/v1/orders",
            content=b'{"symbol": "INFY", "limitPrice": NaN}',
            headers={**edge.auth(), "Content-Type": "application/json"},
        )
        assert_problem(not_json, 400)


async def test_client_id_cannot_name_another_user(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.post(
            "/v1/orders", json={**ORDER, "clientId": "u_someone"}, headers=edge.auth("u_me")
        )
        body = assert_problem(response, 400, "CLIENT_ID_MISMATCH")
        assert body["fieldViolations"][0]["field"] == "clientId"
        mismatch = await client.post(
            "/v1/orders",
            json={**ORDER, "clientOrderId": "key-a"},
            headers={**edge.auth("u_me"), "Idempotency-Key": "key-b"},
        )
        assert_problem(mismatch, 400, "IDEMPOTENCY_KEY_MISMATCH")


async def test_parameters_are_validated_and_unknown_ones_refused(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.get(
            "/v1/orders?pageSize=1000&status=OPEN,SHIPPED&admin=1", headers=edge.auth()
        )
        body = assert_problem(response, 400)
        assert {v["field"] for v in body["fieldViolations"]} == {"pageSize", "status", "admin"}
        sneaky_id = await client.get("/v1/orders/..%2F..%2Fusers%2Fu_x", headers=edge.auth())
        assert sneaky_id.status_code in (400, 404)
        assert sneaky_id.headers["content-type"].startswith(PROBLEM)


async def test_body_size_media_type_routes_and_methods_are_problems(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        big = await client.post(
            "/v1/orders",
            content=b"{" + b" " * 20_000 + b"}",
            headers={**edge.auth(), "Content-Type": "application/json"},
        )
        assert_problem(big, 413, "PAYLOAD_TOO_LARGE")

        async def chunks():
            for _ in range(40):
                yield b" " * 1000

        chunked = await client.post(
            "/v1/orders", content=chunks(), headers={**edge.auth(), "Content-Type": "application/json"}
        )
        assert_problem(chunked, 411, "LENGTH_REQUIRED")
        text = await client.post(
            "/v1/orders", content=b"symbol=INFY", headers={**edge.auth(), "Content-Type": "text/plain"}
        )
        assert_problem(text, 415)
        assert_problem(await client.get("/v1/nowhere", headers=edge.auth()), 404)
        assert_problem(await client.delete("/v1/orders", headers=edge.auth()), 405)


async def test_per_user_rate_limit_is_429_with_retry_after(edge: Edge) -> None:
    greedy, other = edge.auth(), edge.auth()
    async with httpx.AsyncClient(base_url=edge.url) as client:
        statuses = []
        for _ in range(25):
            response = await client.get("/v1/orders?pageSize=1000", headers=greedy)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert statuses[-1] == 429, statuses
        assert_problem(response, 429, "RATE_LIMITED")
        assert int(response.headers["retry-after"]) >= 1
        # The quota as numbers (EDGE_LIMITS: 5/s, bursts of 10), and none of it left.
        assert response.headers["ratelimit-policy"] == '"requests";q=10;w=2'
        assert re.fullmatch(r'"requests";r=0;t=[1-9]\d*', response.headers["ratelimit"])
        # Another user is not affected.
        assert (await client.get("/v1/orders?pageSize=1000", headers=other)).status_code == 400


async def test_a_users_request_rate_is_one_budget_across_gateway_processes(
    edge: Edge, tmp_path: Path
) -> None:
    """Requests alternating between two gateway processes draw on one bucket (EDGE_LIMITS:
    5/s, bursts of 10): far fewer pass than the two bursts two separate counts would allow."""
    async with (
        twin_gateway(edge, tmp_path) as twin,
        httpx.AsyncClient(timeout=30) as client,
    ):
        for internal in (edge.internal_url, twin.internal_url):
            await eventually(lambda internal=internal: _request_rate_shared(client, internal))
        auth = edge.auth()
        statuses: dict[str, list[int]] = {edge.url: [], twin.url: []}
        refused: list[httpx.Response] = []
        began = time.monotonic()
        # Until both have refused (faster than the 5/s refill, however slow the machine).
        for i in range(60):
            url = (edge.url, twin.url)[i % 2]
            response = await client.get(f"{url}/v1/limits", headers=auth)
            statuses[url].append(response.status_code)
            if response.status_code == 429:
                refused.append(response)
                if all(429 in s for s in statuses.values()):
                    break
        elapsed = time.monotonic() - began
    passed = sum(s.count(200) for s in statuses.values())
    # The burst, plus what refilled meanwhile (and one for a token refilled at the edge).
    assert passed <= 10 + math.floor(5 * elapsed) + 1, (passed, elapsed, statuses)
    assert all(429 in s for s in statuses.values()), statuses
    for response in refused:
        assert_problem(response, 429, "RATE_LIMITED")
        assert int(response.headers["retry-after"]) >= 1


async def _request_rate_shared(client: httpx.AsyncClient, internal_url: str) -> bool:
    return (await client.get(f"{internal_url}/healthz")).json().get("requestRate") == "shared"


async def test_limits_are_published_as_numbers(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        auth = edge.auth()
        response = await client.get("/v1/limits", headers=auth)
        assert response.status_code == 200, response.text
        limits = response.json()
        assert limits["requests"] == {
            "perSecond": 5.0,
            "burst": 10,
            "remaining": 9,
            "resetSeconds": 1,
            "scope": "user",
        }
        assert limits["streams"]["concurrent"] == 2 and limits["streams"]["symbolsPerStream"] == 200
        assert limits["orders"]["perSecond"] == 10 and limits["orders"]["burst"] == 20
        assert limits["bodies"]["maxBytes"] == 16384 and limits["bodies"]["maxDepth"] == 8
        assert response.headers["ratelimit-policy"] == '"requests";q=10;w=2'
        assert response.headers["ratelimit"] == '"requests";r=9;t=1'
        # Every operation's answer carries them, errors included; placing also names the
        # order quota.
        refused = await client.post("/v1/orders", json={"symbol": "IN FY"}, headers=auth)
        assert refused.status_code == 400
        assert refused.headers["ratelimit-policy"] == '"requests";q=10;w=2, "orders";q=20;w=2'
        assert refused.headers["ratelimit"].startswith('"requests";r=')
        # The served contract states the limit this process was configured with.
        spec = (await client.get("/v1/openapi.json")).json()
        (symbols,) = (
            p for p in spec["paths"]["/marketdata/stream"]["get"]["parameters"] if p.get("name") == "symbols"
        )
        assert symbols["schema"]["maxItems"] == 200


async def test_backend_down_is_503_with_retry_after(edge: Edge) -> None:
    # This stack runs no svc_orders: the call fails fast as UNAVAILABLE.
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        response = await client.get("/v1/orders", headers=edge.auth())
        body = assert_problem(response, 503, "UNAVAILABLE")
        assert response.headers["retry-after"] == "1"
        assert "127.0.0.1" not in body["detail"]


# Last in this module: it spends the address's budget of failed authentications.
async def test_failed_authentication_is_throttled_per_address_not_for_valid_tokens(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        statuses = []
        for n in range(60):
            bad = {"Authorization": f"Bearer not.a.token{n}"} if n % 2 else {}
            response = await client.get("/v1/funds", headers=bad)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
        assert_problem(response, 429, "AUTH_THROTTLED")
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["ratelimit-policy"] == '"failed-authentication";q=20;w=20'
        assert response.headers["ratelimit"].startswith('"failed-authentication";r=0;t=')
        # Someone else at the same address with a valid token is served as usual.
        valid = await client.get("/v1/orders?pageSize=1000", headers=edge.auth())
        assert_problem(valid, 400)
