"""The edge as a browser on another origin sees it: CORS for the configured origins only.

The gateway runs as its own process with BROKERMESH_CORS_ORIGINS set; requests carry
`Origin` (and preflights `Access-Control-Request-*`) exactly as a browser sends them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.domain.cors import parse_origins
from tests.gateway.conftest import Edge, start_edge
from tests.gateway.test_http_edge import assert_problem
from tests.support.infra import SharedInfra

pytestmark = pytest.mark.e2e

ALLOWED = "http://app.brokermesh.test:5173"
ALSO_ALLOWED = "https://trade.brokermesh.test"
FORBIDDEN = "http://evil.brokermesh.test"
CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-max-age",
)


@pytest.fixture(scope="module")
async def cors_edge(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    started, teardown = await start_edge(
        infra, tmp_path_factory.mktemp("cors"), BROKERMESH_CORS_ORIGINS=f" {ALLOWED},{ALSO_ALLOWED} "
    )
    yield started
    await teardown()


def preflight(
    origin: str, method: str = "POST", headers: str = "authorization,content-type,idempotency-key"
) -> dict:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def vary(response: httpx.Response) -> set[str]:
    return {v.strip().lower() for h in response.headers.get_list("vary") for v in h.split(",")}


async def test_an_allowed_origins_preflight_is_answered(cors_edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=cors_edge.url) as client:
        for origin in (ALLOWED, ALSO_ALLOWED):
            response = await client.options("/v1/orders", headers=preflight(origin))
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == origin
            methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
            assert {"GET", "POST", "DELETE"} <= methods
            allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
            assert {"authorization", "idempotency-key", "content-type"} <= allowed
            assert int(response.headers["access-control-max-age"]) > 0
            # Bearer tokens, not cookies: credentials are never allowed, and never with a wildcard.
            assert "access-control-allow-credentials" not in response.headers
            assert "origin" in vary(response)


async def test_an_allowed_origin_can_read_answers_and_their_headers(cors_edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=cors_edge.url) as client:
        ok = await client.get("/v1/openapi.json", headers={"Origin": ALLOWED})
        refused = await client.get("/v1/orders", headers={"Origin": ALLOWED})
        login = await client.post("/v1/sessions", json={"username": "nobody"}, headers={"Origin": ALLOWED})
    for response in (ok, refused, login):
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert "access-control-allow-credentials" not in response.headers
        assert "origin" in vary(response)
        exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
        assert {"x-request-id", "idempotency-key", "location", "retry-after"} <= exposed
    assert ok.status_code == 200
    assert_problem(refused, 401)
    assert_problem(login, 400)


async def test_a_forbidden_origin_gets_no_cors_headers(cors_edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=cors_edge.url) as client:
        refused_preflight = await client.options("/v1/orders", headers=preflight(FORBIDDEN))
        simple = await client.get("/v1/openapi.json", headers={"Origin": FORBIDDEN})
        # An allowed origin's preflight asking for a header the API does not take.
        odd_header = await client.options("/v1/orders", headers=preflight(ALLOWED, headers="x-secret"))
    assert_problem(refused_preflight, 403, "CORS_ORIGIN_FORBIDDEN")
    for response in (refused_preflight, simple):
        assert not [h for h in CORS_HEADERS if h in response.headers], response.headers
        assert "origin" in vary(response)
    # Served as without CORS (the browser hides it from the page); same-origin use is unaffected.
    assert simple.status_code == 200
    body = assert_problem(odd_header, 400, "CORS_PREFLIGHT_REFUSED")
    assert "headers" in body["detail"]
    assert odd_header.headers["access-control-allow-origin"] == ALLOWED


async def test_no_origin_is_allowed_unless_configured(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        response = await client.options("/v1/orders", headers=preflight(ALLOWED))
        simple = await client.get("/v1/openapi.json", headers={"Origin": ALLOWED})
    assert_problem(response, 403, "CORS_ORIGIN_FORBIDDEN")
    assert "access-control-allow-origin" not in simple.headers


def test_origins_are_listed_exactly() -> None:
    assert parse_origins("") == ()
    assert parse_origins(f" {ALLOWED}, {ALSO_ALLOWED},{ALLOWED}") == (ALLOWED, ALSO_ALLOWED)
    assert parse_origins("http://127.0.0.1:8000,http://[::1]:3000") == (
        "http://127.0.0.1:8000",
        "http://[::1]:3000",
    )
    for bad in ("*", "null", "app.brokermesh.test", f"{ALLOWED}/", "https://App.test", "ftp://x.test"):
        with pytest.raises(ValueError, match="CORS origin"):
            parse_origins(f"{ALLOWED},{bad}")
