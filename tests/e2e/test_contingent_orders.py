"""Contingent orders through the public REST surface and every hop, against the simulated
exchange: a bracket's entry fills, its target fills and its stop-loss is cancelled — or both
exits trade before the cancel arrives —, with the audit (I3, I8, I9 included) clean afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx

from brokermesh.exchange.v1 import exchange_admin_pb2, exchange_admin_pb2_grpc
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_runtime.grpc_client import channel as signed_channel
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


@contextlib.asynccontextmanager
async def _exchange_admin(stack: Stack) -> AsyncIterator[exchange_admin_pb2_grpc.ExchangeAdminServiceStub]:
    async with signed_channel(
        stack.plan.target("exchange_sim"), signer=stack.plan.service_signer("gateway")
    ) as channel:
        yield exchange_admin_pb2_grpc.ExchangeAdminServiceStub(channel)


async def _trade_at(
    exchange: exchange_admin_pb2_grpc.ExchangeAdminServiceStub, symbol: str, side: int, price: Decimal
) -> None:
    """Another participant takes every resting order on the other side up to `price` (IOC),
    if there are any: the last trade is then at `price` when an order rests there."""
    book = await exchange.GetOrderBook(exchange_admin_pb2.GetOrderBookRequest(symbol=symbol, depth=100))
    if side == trading_pb2.SIDE_BUY:
        quantity = sum(level.quantity for level in book.asks if Decimal(level.price.value) <= price)
    else:
        quantity = sum(level.quantity for level in book.bids if Decimal(level.price.value) >= price)
    if not quantity:
        return
    await exchange.PlaceOrder(
        exchange_admin_pb2.PlaceOrderRequest(
            participant="SWEEP",
            symbol=symbol,
            side=side,  # type: ignore[arg-type]
            quantity=quantity,
            order_type=trading_pb2.ORDER_TYPE_LIMIT,
            price=decimal_pb2.Decimal(value=str(price)),
            time_in_force=trading_pb2.TIME_IN_FORCE_IOC,
        )
    )


async def test_both_exits_trading_before_the_cancel_arrives_are_recorded_and_reported(
    e2e_stack: Stack,
) -> None:
    """The exchange fills the target and then the stop-loss while the broker cannot yet know
    of the first fill (its reports held back): both fills stand as the exchange's facts, the
    broker reports it and buys back the shares sold beyond the bracket's, and the audit stays
    clean."""
    symbol = "ITC"
    username, password, user_id = await open_account(e2e_stack, "1000000.00")
    async with httpx.AsyncClient(base_url=e2e_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        bid = await _bid(client, auth, symbol)
        target_price, stop_price = _on_tick(bid * Decimal("1.05")), _on_tick(bid * Decimal("0.95"))
        placed = await client.post(
            "/v1/orders",
            json={
                "symbol": symbol,
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

        async def exits(statuses: set[str]) -> dict[str, dict] | None:
            orders = exact_json(await client.get("/v1/orders", headers=auth))["orders"]
            legs = {o["leg"]: o for o in orders if o["parentOrderId"] == entry["orderId"]}
            if len(legs) == 2 and {leg["status"] for leg in legs.values()} <= statuses:
                return legs
            return None

        await eventually(lambda: exits({"OPEN", "TRIGGER_PENDING"}), timeout=60)
        async with _exchange_admin(e2e_stack) as exchange:
            # The market makers step away and the broker hears of fills only seconds later:
            # long after both exits have traded.
            await exchange.SetScenario(
                exchange_admin_pb2.SetScenarioRequest(delay_reports_ms=5000, pause_market_makers=True)
            )
            try:
                await _trade_at(exchange, symbol, trading_pb2.SIDE_BUY, target_price)
                # A bid of ours at the stop-loss price, then a sale down to it: the last trade at
                # the stop-loss price triggers it, and it sells into the rest of that bid.
                await exchange.PlaceOrder(
                    exchange_admin_pb2.PlaceOrderRequest(
                        participant="FLOOR",
                        symbol=symbol,
                        side=trading_pb2.SIDE_BUY,
                        quantity=11,
                        order_type=trading_pb2.ORDER_TYPE_LIMIT,
                        price=decimal_pb2.Decimal(value=str(stop_price)),
                    )
                )
                await _trade_at(exchange, symbol, trading_pb2.SIDE_SELL, stop_price + TICK)
                await exchange.PlaceOrder(
                    exchange_admin_pb2.PlaceOrderRequest(
                        participant="SWEEP",
                        symbol=symbol,
                        side=trading_pb2.SIDE_SELL,
                        quantity=1,
                        order_type=trading_pb2.ORDER_TYPE_LIMIT,
                        price=decimal_pb2.Decimal(value=str(stop_price)),
                        time_in_force=trading_pb2.TIME_IN_FORCE_IOC,
                    )
                )
            finally:
                await exchange.SetScenario(exchange_admin_pb2.SetScenarioRequest())

        legs = await eventually(lambda: exits({"FILLED"}), timeout=60)
        target, stop = legs["TARGET"], legs["STOP_LOSS"]
        assert target["filledQuantity"] == stop["filledQuantity"] == 10
        assert Decimal(target["avgPrice"]) == target_price
        assert Decimal(stop["avgPrice"]) == stop_price

        async with signed_channel(
            e2e_stack.plan.target("svc_orders"), signer=e2e_stack.plan.operator_signer()
        ) as channel:
            orders = orders_pb2_grpc.OrdersServiceStub(channel)
            audit = await orders.ListAuditRecords(
                orders_pb2.ListAuditRecordsRequest(parent=f"users/{user_id}", page_size=1000)
            )
        reported = [r for r in audit.records if r.action == "OCO_OVERSOLD"]
        assert len(reported) == 1, [(r.action, r.detail) for r in audit.records]
        assert target["orderId"] in reported[0].detail and stop["orderId"] in reported[0].detail

        # The 10 shares sold beyond the bracket's are bought back by the broker, which pays
        # off what the user owed (the audit after the test checks nothing is owed).
        async def close_out(statuses: tuple[str, ...]) -> dict:
            orders = exact_json(await client.get("/v1/orders", headers=auth))["orders"]
            found = [o for o in orders if o["clientOrderId"] == f"closeout-{target['orderId']}-0"]
            assert found and found[0]["status"] in statuses, found
            return found[0]

        buy_back = await eventually(lambda: close_out(("OPEN", "FILLED")), timeout=60)
        assert (buy_back["side"], buy_back["type"], buy_back["quantity"]) == ("BUY", "MARKET", 10)
        if buy_back["status"] == "OPEN":
            # The last trade was at the stop-loss price, so the market order's protection
            # is under the market makers' bids: a seller takes every bid down to it.
            async with _exchange_admin(e2e_stack) as exchange:
                await _trade_at(exchange, symbol, trading_pb2.SIDE_SELL, Decimal(buy_back["protectionPrice"]))
        buy_back = await eventually(lambda: close_out(("FILLED",)), timeout=60)
        assert buy_back["filledQuantity"] == 10
        assert len(exact_json(await client.get("/v1/orders", headers=auth))["orders"]) == 4

        async def settled() -> dict | None:
            funds = exact_json(await client.get("/v1/funds", headers=auth))
            return funds if funds["blocked"] == 0 else None

        await eventually(settled, timeout=30)
