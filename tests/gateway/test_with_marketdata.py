"""Through the gateway to the real svc_marketdata (an exchange double on FIX behind it):
quotes, instrument search, watchlists with object-level authorization, and live prices
from an exchange trade to an SSE `price_tick`."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from svc_runtime import config
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.gateway.conftest import bearer, events, next_event
from tests.gateway.test_http_edge import assert_problem
from tests.marketdata.fix_exchange import ExchangeDouble
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


class Market:
    def __init__(self, stack: Stack, exchange: ExchangeDouble) -> None:
        self.stack = stack
        self.exchange = exchange

    @property
    def url(self) -> str:
        return self.stack.plan.gateway_url

    def auth(self, user_id: str | None = None) -> dict[str, str]:
        return bearer(self.stack, user_id)


@pytest.fixture(scope="module")
async def market(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Market]:
    exchange = ExchangeDouble(tmp_path_factory.mktemp("exchange")).start()
    env = {config.FIX_PORT: str(exchange.port), "BROKERMESH_MARKETDATA_INSTRUMENT_WAIT_SECONDS": "2"}
    stack = await new_stack(infra, tmp_path_factory.mktemp("market"), ["svc_marketdata", "gateway"], env)
    await exchange.wait_subscribed()
    yield Market(stack, exchange)
    with contextlib.suppress(Exception):
        await stack.stop()
    exchange.stop()


async def test_quotes_and_instrument_search(market: Market) -> None:
    auth = market.auth()
    async with httpx.AsyncClient(base_url=market.url, timeout=30) as client:
        quotes = await client.get("/v1/quotes", params={"symbols": "INFY,tcs,NOSUCH"}, headers=auth)
        assert quotes.status_code == 200, quotes.text
        body = quotes.json()
        assert [q["symbol"] for q in body["quotes"]] == ["INFY", "TCS"]
        assert body["unknownSymbols"] == ["NOSUCH"]
        assert body["quotes"][0]["previousClose"] == 1500
        assert b'"previousClose":1500.00' in quotes.content  # exact digits, not a float's
        found = await client.get("/v1/instruments:search", params={"q": "tata"}, headers=auth)
        assert found.status_code == 200, found.text
        assert {"TATAMOTORS", "TATASTEEL"} <= {i["symbol"] for i in found.json()["instruments"]}


async def test_watchlists_belong_to_their_owner(market: Market) -> None:
    owner, stranger = market.auth(), market.auth()
    async with httpx.AsyncClient(base_url=market.url, timeout=30) as client:
        created = await client.post(
            "/v1/watchlists",
            json={"name": "MyWatchlist"},
            headers={**owner, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert created.status_code == 201, created.text
        watchlist_id = created.json()["watchlistId"]
        assert created.json()["name"] == "MyWatchlist"
        assert created.headers["location"] == f"/v1/watchlists/{watchlist_id}"

        added = await client.post(
            f"/v1/watchlists/{watchlist_id}/symbol:add",
            json={"symbols": ["INFY", "HDFCBANK", "NOSUCH"]},
            headers=owner,
        )
        assert added.status_code == 200, added.text
        assert added.json()["symbolsAdded"] == ["INFY", "HDFCBANK"]
        assert added.json()["symbolsIgnored"] == ["NOSUCH"]
        assert added.json()["status"] == "success"

        removed = await client.post(
            f"/v1/watchlists/{watchlist_id}/symbol:remove",
            json={"symbols": ["HDFCBANK", "TCS"]},
            headers=owner,
        )
        assert removed.status_code == 200, removed.text
        assert removed.json()["symbolsRemoved"] == ["HDFCBANK"]
        assert removed.json()["symbolsIgnored"] == ["TCS"]

        fetched = (await client.get(f"/v1/watchlists/{watchlist_id}", headers=owner)).json()
        assert fetched["watchlistName"] == "MyWatchlist" and fetched["symbols"] == ["INFY"]
        listed = (await client.get("/v1/watchlists", headers=owner)).json()
        assert [w["watchlistId"] for w in listed["watchlists"]] == [watchlist_id]

        # API1: the id alone grants nothing to someone else, and tells them nothing.
        for response in (
            await client.get(f"/v1/watchlists/{watchlist_id}", headers=stranger),
            await client.post(
                f"/v1/watchlists/{watchlist_id}/symbol:add", json={"symbols": ["TCS"]}, headers=stranger
            ),
            await client.delete(f"/v1/watchlists/{watchlist_id}", headers=stranger),
            await client.get("/v1/marketdata/stream", params={"watchlistId": watchlist_id}, headers=stranger),
        ):
            assert_problem(response, 404)
        assert (await client.get("/v1/watchlists", headers=stranger)).json()["watchlists"] == []
        assert (await client.get(f"/v1/watchlists/{watchlist_id}", headers=owner)).json()["symbols"] == [
            "INFY"
        ]

        deleted = await client.delete(f"/v1/watchlists/{watchlist_id}", headers=owner)
        assert deleted.status_code == 204
        assert_problem(await client.get(f"/v1/watchlists/{watchlist_id}", headers=owner), 404)


async def test_an_exchange_trade_reaches_the_watchlist_stream(market: Market) -> None:
    auth = market.auth()
    async with httpx.AsyncClient(base_url=market.url, timeout=30) as client:
        created = await client.post(
            "/v1/watchlists", json={"name": "live", "symbols": ["RELIANCE", "M&M"]}, headers=auth
        )
        assert created.status_code == 201, created.text
        watchlist_id = created.json()["watchlistId"]
        async with client.stream(
            "GET", "/v1/marketdata/stream", params={"watchlistId": watchlist_id}, headers=auth
        ) as response:
            assert response.status_code == 200
            stream = events(response)
            assert (await next_event(stream)).event == "retry"
            first = [await next_event(stream), await next_event(stream)]
            assert {e.json()["symbol"] for e in first} == {"RELIANCE", "M&M"}

            market.exchange.trade("RELIANCE", "2412.35")

            async def traded() -> dict | None:
                data = (await next_event(stream)).json()
                return data if data["symbol"] == "RELIANCE" and data["ltp"] == Decimal("2412.35") else None

            tick = await eventually(traded)
            assert tick["change"] == Decimal("12.35")
            assert tick["changePct"] == Decimal("0.51")
