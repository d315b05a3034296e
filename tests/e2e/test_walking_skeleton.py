"""The walking skeleton, through the public REST surface and every hop:
gateway → svc_orders → svc_funds → JetStream → svc_exec → FIX → exchange → JetStream →
svc_orders and svc_funds."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx

from svc_runtime.stack import Stack
from tests.e2e.conftest import exact_json, login, open_account
from tests.support.polling import eventually


async def test_market_buy_is_filled_and_shows_in_the_portfolio(e2e_stack: Stack) -> None:
    username, password, _ = await open_account(e2e_stack, "100000.00")
    async with httpx.AsyncClient(base_url=e2e_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        placed = await client.post(
            "/v1/orders",
            json={"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": 10},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["orderId"]
        assert placed.json()["status"] == "PENDING_EXCHANGE"

        async def filled() -> dict | None:
            order = exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))
            return order if order["status"] == "FILLED" else None

        order = await eventually(filled)
        assert order["filledQuantity"] == 10
        assert order["leavesQuantity"] == 0
        average = order["avgPrice"]
        assert isinstance(average, Decimal)
        assert average > 0

        async def portfolio_shows_it() -> dict | None:
            portfolio = exact_json(await client.get("/v1/portfolio", headers=auth))
            rows = [*portfolio["holdings"], *portfolio["positions"]]
            held = [r for r in rows if r["symbol"] == "INFY"]
            return portfolio if held else None

        portfolio = await eventually(portfolio_shows_it)
        held = {r["symbol"]: r for r in portfolio["holdings"]}
        positions = {r["symbol"]: r for r in portfolio["positions"]}
        quantity = held["INFY"]["quantity"] if "INFY" in held else positions["INFY"]["netQuantity"]
        assert quantity == 10

        async def settled() -> dict | None:
            funds = exact_json(await client.get("/v1/funds", headers=auth))
            return funds if funds["blocked"] == 0 else None

        funds = await eventually(settled)
        spent = Decimal("100000.00") - funds["available"]
        # Cash spent is the fills' value plus charges; never less than the shares' value.
        assert spent >= average * 10
        assert funds["total"] == funds["available"]

        trades = (await client.get("/v1/trades", headers=auth)).json()
        assert sum(t["quantity"] for t in trades["trades"] if t["orderId"] == order_id) == 10
