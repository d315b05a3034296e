"""Contingent orders through the public REST surface and every hop, against the simulated
exchange: a bracket's entry fills, its target fills and its stop-loss is cancelled, with the
audit (I3, I8, I9 included) clean afterwards."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx

from svc_runtime.stack import Stack
from tests.e2e.conftest import exact_json, login, open_account
from tests.support.polling import eventually

TICK = Decimal("0.05")


def _on_tick(price: Decimal) -> Decimal:
    return (price / TICK).to_integral_value() * TICK


async def _bid(client: httpx.AsyncClient, auth: dict[str, str], symbol: str) -> Decimal:
    async def quoted() -> Decimal | None:
        quotes = exact_json(await client.get("/v1/quotes", params={"symbols": symbol}, headers=auth))[
            "quotes"
        ]
        return Decimal(quotes[0]["bid"]) if quotes and quotes[0]["bid"] else None

    return await eventually(quoted, timeout=30)


async def test_a_brackets_target_fills_and_its_stop_loss_is_cancelled(e2e_stack: Stack) -> None:
    username, password, _ = await open_account(e2e_stack, "1000000.00")
    async with httpx.AsyncClient(base_url=e2e_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        bid = await _bid(client, auth, "INFY")
        # A target under the bid sells at once; a stop-loss far under it never triggers.
        target_price, stop_price = _on_tick(bid * Decimal("0.97")), _on_tick(bid * Decimal("0.90"))
        placed = await client.post(
            "/v1/orders",
            json={
                "symbol": "INFY",
                "side": "BUY",
                "type": "MARKET",
                "quantity": 10,
                "contingent": {
                    "kind": "BRACKET",
                    "targetPrice": str(target_price),
                    "stopLossPrice": str(stop_price),
                },
            },
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert placed.status_code == 201, placed.text
        entry = exact_json(placed)
        assert entry["leg"] == "ENTRY"
        assert entry["contingent"] == {
            "kind": "BRACKET",
            "targetPrice": target_price,
            "stopLossPrice": stop_price,
        }

        async def exits_done() -> dict[str, dict] | None:
            orders = exact_json(await client.get("/v1/orders", headers=auth))["orders"]
            legs = {o["leg"]: o for o in orders if o["parentOrderId"] == entry["orderId"]}
            if (
                legs.get("TARGET", {}).get("status") == "FILLED"
                and legs["STOP_LOSS"]["status"] == "CANCELLED"
            ):
                return legs
            return None

        legs = await eventually(exits_done, timeout=60)
        target, stop = legs["TARGET"], legs["STOP_LOSS"]
        assert target["filledQuantity"] == 10 and stop["filledQuantity"] == 0
        assert target["ocoGroupId"] == stop["ocoGroupId"] == target["orderId"]
        assert stop["statusReason"] == "OCO: a sibling leg filled"
        assert (await client.get(f"/v1/orders/{entry['orderId']}", headers=auth)).json()["status"] == "FILLED"

        async def flat() -> dict | None:
            funds = exact_json(await client.get("/v1/funds", headers=auth))
            return funds if funds["blocked"] == 0 else None

        await eventually(flat, timeout=30)


async def test_bad_exit_terms_are_a_problem_naming_the_field(e2e_stack: Stack) -> None:
    username, password, _ = await open_account(e2e_stack, "100000.00")
    async with httpx.AsyncClient(base_url=e2e_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        refused = await client.post(
            "/v1/orders",
            json={
                "symbol": "INFY",
                "side": "BUY",
                "type": "MARKET",
                "quantity": 1,
                "contingent": {"kind": "BRACKET", "stopLossPrice": "1400.00"},
            },
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert refused.status_code == 400, refused.text
        problem = refused.json()
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert problem["reason"] == "MISSING_EXIT_PRICE"
        assert "contingent.targetPrice" in refused.text


async def _quote(client: httpx.AsyncClient, auth: dict[str, str], symbol: str) -> dict:
    async def quoted() -> dict | None:
        quotes = exact_json(await client.get("/v1/quotes", params={"symbols": symbol}, headers=auth))[
            "quotes"
        ]
        return quotes[0] if quotes and quotes[0]["ask"] and quotes[0]["ltp"] else None

    return await eventually(quoted, timeout=30)


async def test_a_gtt_fires_once_when_a_trade_crosses_it(e2e_stack: Stack) -> None:
    username, password, _ = await open_account(e2e_stack, "1000000.00")
    async with httpx.AsyncClient(base_url=e2e_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)

        async def created_above_the_last_trade() -> tuple[dict, Decimal] | None:
            # The ask is above the last trade most of the time; a buy at the ask then crosses it.
            quote = await _quote(client, auth, "TCS")
            ask = Decimal(quote["ask"])
            response = await client.post(
                "/v1/gtts",
                json={
                    "symbol": "TCS",
                    "triggerPrice": str(ask),
                    "side": "BUY",
                    "type": "LIMIT",
                    "quantity": 1,
                    "limitPrice": str(_on_tick(ask * Decimal("0.95"))),
                },
                headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
            )
            if response.status_code == 400 and response.json()["reason"] == "GTT_TRIGGER_AT_MARKET":
                return None
            assert response.status_code == 201, response.text
            gtt = exact_json(response)
            if gtt["direction"] == "RISES_TO":
                return gtt, ask
            # The price moved past the ask meanwhile: this one would wait for a fall.
            cancelled = await client.post(f"/v1/gtts/{gtt['gttId']}:cancel", headers=auth)
            assert cancelled.json()["status"] == "CANCELLED", cancelled.text
            return None

        gtt, ask = await eventually(created_above_the_last_trade, timeout=30)
        assert gtt["status"] == "ACTIVE" and gtt["triggerPrice"] == ask
        bought = await client.post(
            "/v1/orders",
            json={"symbol": "TCS", "side": "BUY", "type": "LIMIT", "quantity": 5, "limitPrice": str(ask)},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert bought.status_code == 201, bought.text

        async def fired() -> dict | None:
            current = exact_json(await client.get(f"/v1/gtts/{gtt['gttId']}", headers=auth))
            return current if current["status"] == "TRIGGERED" and current["orderId"] else None

        fired_gtt = await eventually(fired, timeout=60)
        placed = exact_json(await client.get(f"/v1/orders/{fired_gtt['orderId']}", headers=auth))
        assert placed["clientOrderId"] == f"gtt-{gtt['gttId']}"
        listed = exact_json(await client.get("/v1/gtts", headers=auth))["gtts"]
        assert {g["gttId"]: g["status"] for g in listed if g["status"] != "CANCELLED"} == {
            gtt["gttId"]: "TRIGGERED"
        }
        refused = await client.post(f"/v1/gtts/{gtt['gttId']}:cancel", headers=auth)
        assert refused.status_code == 422 and refused.json()["reason"] == "GTT_NOT_ACTIVE"
        # Cancel what was placed, so nothing of the test stays working.
        for order_id in (placed["orderId"], exact_json(bought)["orderId"]):
            await client.post(f"/v1/orders/{order_id}:cancel", headers=auth)
