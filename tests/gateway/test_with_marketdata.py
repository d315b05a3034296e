"""Through the gateway to the real svc_marketdata (an exchange double on FIX behind it):
quotes, instrument search (near spellings too), watchlists with object-level
authorization, live prices from an exchange trade to an SSE `price_tick` (by symbols, by
watchlist, by portfolio), candles and L2 depth over REST and SSE."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import httpx
import pytest

from brokermesh.funds.v1 import accounts_pb2, accounts_pb2_grpc, portfolio_pb2, portfolio_pb2_grpc
from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from brokermesh.type.v1 import decimal_pb2
from svc_runtime import config
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.gateway.conftest import bearer, events, next_event
from tests.gateway.test_http_edge import assert_problem
from tests.marketdata.fix_exchange import Entry, ExchangeDouble
from tests.support.grpc import service_channel, user_channel
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
    # svc_funds: the price stream of a portfolio reads it.
    stack = await new_stack(
        infra, tmp_path_factory.mktemp("market"), ["svc_funds", "svc_marketdata", "gateway"], env
    )
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


def exact(response: httpx.Response) -> dict:
    """The JSON body with numbers as exact decimals."""
    return json.loads(response.text, parse_float=Decimal)


async def test_search_finds_a_misspelt_name(market: Market) -> None:
    async with httpx.AsyncClient(base_url=market.url, timeout=30) as client:
        found = await client.get("/v1/instruments:search", params={"q": "infsys"}, headers=market.auth())
        assert found.status_code == 200, found.text
        assert [i["symbol"] for i in found.json()["instruments"]] == ["INFY"]


async def test_candles_over_rest_and_sse(market: Market) -> None:
    auth = market.auth()
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    market.exchange.trade("TATAMOTORS", "651.05", 10, at=base + timedelta(seconds=3))
    market.exchange.trade("TATAMOTORS", "652.40", 5, at=base + timedelta(seconds=70))
    async with httpx.AsyncClient(base_url=market.url, timeout=30) as client:

        async def two() -> dict | None:
            reply = await client.get(
                "/v1/instruments/TATAMOTORS/candles", params={"interval": "1m", "pageSize": 1}, headers=auth
            )
            assert reply.status_code == 200, reply.text
            body = exact(reply)
            return body if body["candles"] and body["candles"][0]["close"] == Decimal("652.40") else None

        newest = await eventually(two)
        assert newest["candles"][0]["startTime"] == (base + timedelta(minutes=1)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        assert newest["nextPageToken"]
        older = await client.get(
            "/v1/instruments/TATAMOTORS/candles",
            params={"interval": "1m", "pageSize": 1, "pageToken": newest["nextPageToken"]},
            headers=auth,
        )
        assert older.status_code == 200, older.text
        candle = exact(older)["candles"][0]
        assert (candle["open"], candle["close"], candle["volume"], candle["interval"]) == (
            Decimal("651.05"),
            Decimal("651.05"),
            10,
            "1m",
        )
        assert b'"open":651.05' in older.content  # exact digits

        for params, status in [
            ({"interval": "2m"}, 400),
            ({}, 400),
            ({"interval": "1m", "pageToken": "x"}, 400),
        ]:
            bad = await client.get("/v1/instruments/TATAMOTORS/candles", params=params, headers=auth)
            assert_problem(bad, status)
        assert_problem(await client.get("/v1/instruments/NOSUCH/candles?interval=1m", headers=auth), 404)
        assert_problem(await client.get("/v1/instruments/TATAMOTORS/candles?interval=1m"), 401)

        async with client.stream(
            "GET", "/v1/instruments/TATAMOTORS/candles/stream", params={"interval": "1m"}, headers=auth
        ) as response:
            assert response.status_code == 200
            stream = events(response)
            assert (await next_event(stream)).event == "retry"
            # The candle before the forming one, then the forming one.
            before, forming = await next_event(stream), await next_event(stream)
            assert (before.event, before.json()["close"]) == ("candle", Decimal("651.05"))
            assert (forming.event, forming.json()["close"]) == ("candle", Decimal("652.40"))
            market.exchange.trade("TATAMOTORS", "653.00", 1, at=base + timedelta(seconds=80))
            moved = await next_event(stream)
            assert (moved.event, moved.json()["high"], moved.json()["volume"]) == (
                "candle",
                Decimal("653.00"),
                6,
            )


async def test_depth_over_rest_and_sse(market: Market) -> None:
    auth = market.auth()
    market.exchange.send_updates(
        [Entry("TATASTEEL", "0", f"{120 - n}.00", n, "0", n) for n in range(1, 6)]
        + [Entry("TATASTEEL", "1", f"{120 + n}.00", n, "0", n) for n in range(1, 6)]
    )
    async with httpx.AsyncClient(base_url=market.url, timeout=30) as client:

        async def five() -> dict | None:
            reply = await client.get("/v1/instruments/tatasteel/depth", headers=auth)
            assert reply.status_code == 200, reply.text
            return exact(reply) if len(reply.json()["bids"]) == 5 else None

        depth = await eventually(five)
        assert depth["symbol"] == "TATASTEEL"
        assert depth["bids"][0] == {"price": Decimal("119.00"), "quantity": 1}
        assert [a["price"] for a in depth["asks"]] == [Decimal(f"{120 + n}.00") for n in range(1, 6)]
        assert_problem(await client.get("/v1/instruments/NOSUCH/depth", headers=auth), 404)

        async with client.stream("GET", "/v1/instruments/TATASTEEL/depth/stream", headers=auth) as response:
            assert response.status_code == 200
            stream = events(response)
            assert (await next_event(stream)).event == "retry"
            first = await next_event(stream, skip_liveness=False)
            assert first.event == "depth" and first.json()["sequence"] == depth["sequence"]
            status = await next_event(stream, skip_liveness=False)
            assert (status.event, status.json()["status"]) == ("feed_status", "LIVE")
            market.exchange.send_updates([Entry("TATASTEEL", "1", "121.00", 99, "1", 1)])
            moved = await next_event(stream)
            assert moved.event == "depth" and moved.json()["asks"][0] == {
                "price": Decimal("121.00"),
                "quantity": 99,
            }


async def test_price_stream_of_a_portfolio(market: Market) -> None:
    user_id = f"usr_{uuid.uuid4().hex[:12]}"
    channel = service_channel(market.stack.plan, "svc_funds")
    try:
        portfolio = portfolio_pb2_grpc.PortfolioServiceStub(channel)
        accounts = accounts_pb2_grpc.AccountServiceStub(channel)
        account = await accounts.CreateAccount(
            accounts_pb2.CreateAccountRequest(username=user_id.replace("_", "-"), password="a long password"),
            timeout=30,
        )
        user_id = account.user_id
        auth = market.auth(user_id)
        async with httpx.AsyncClient(base_url=market.url, timeout=30) as client:
            empty = await client.get("/v1/marketdata/stream", params={"portfolio": "true"}, headers=auth)
            assert_problem(empty, 400)
            assert empty.json()["reason"] == "EMPTY_PORTFOLIO"
            await portfolio.DepositShares(
                portfolio_pb2.DepositSharesRequest(
                    parent=f"users/{user_id}",
                    symbol="HDFCBANK",
                    quantity=3,
                    average_price=decimal_pb2.Decimal(value="1500.00"),
                    request_id=uuid.uuid4().hex,
                ),
                timeout=30,
            )
            both = await client.get(
                "/v1/marketdata/stream", params={"portfolio": "true", "symbols": "INFY"}, headers=auth
            )
            assert_problem(both, 400)
            async with client.stream(
                "GET", "/v1/marketdata/stream", params={"portfolio": "true"}, headers=auth
            ) as response:
                assert response.status_code == 200
                stream = events(response)
                assert (await next_event(stream)).event == "retry"
                assert (await next_event(stream)).json()["symbol"] == "HDFCBANK"
        # A desktop over gRPC, as the user: its own portfolio, not someone else's.
        desktop = user_channel(market.stack.plan, "svc_marketdata", user_id)
        try:
            quotes = marketdata_pb2_grpc.MarketDataServiceStub(desktop)
            call = quotes.StreamQuotes(
                marketdata_pb2.StreamQuotesRequest(portfolio=f"users/{user_id}/portfolio")
            )
            first = await asyncio.wait_for(anext(aiter(call)), 10)
            call.cancel()
            assert [q.symbol for q in first.quotes] == ["HDFCBANK"]
            for request, code in [
                (
                    marketdata_pb2.StreamQuotesRequest(portfolio="users/usr_other/portfolio"),
                    grpc.StatusCode.NOT_FOUND,
                ),
                (
                    marketdata_pb2.StreamQuotesRequest(portfolio=f"users/{user_id}"),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (
                    marketdata_pb2.StreamQuotesRequest(
                        portfolio=f"users/{user_id}/portfolio", symbols=["INFY"]
                    ),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await anext(aiter(quotes.StreamQuotes(request, timeout=10)))
                assert caught.value.code() == code, request
        finally:
            await desktop.close()
    finally:
        await channel.close()
