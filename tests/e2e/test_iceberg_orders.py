"""An iceberg order through the public REST surface and every hop, against the simulated
exchange with its liquidity agents off (so only the test's orders are in the book): only
the display quantity shows in depth, counter-orders fill it across refills, its funds block
is for the whole quantity and is released when it fills, and the audit is clean."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from brokermesh.funds.v1 import portfolio_pb2, portfolio_pb2_grpc
from brokermesh.type.v1 import decimal_pb2
from svc_runtime import audit
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.e2e.conftest import exact_json, login, open_account
from tests.gateway.conftest import events, next_event
from tests.support.grpc import service_channel
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

PRICE = Decimal("1530.00")  # INFY, at its previous close: inside every band and collar


@pytest.fixture(scope="module")
async def quiet_stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = await new_stack(
        infra, tmp_path_factory.mktemp("iceberg"), extra_env={"BROKERMESH_EXCHANGE_AGENTS": "off"}
    )
    yield stack
    with contextlib.suppress(Exception):
        await stack.stop()


async def _deposit_shares(stack: Stack, user_id: str, symbol: str, quantity: int) -> None:
    channel = service_channel(stack.plan, "svc_funds")
    try:
        await portfolio_pb2_grpc.PortfolioServiceStub(channel).DepositShares(
            portfolio_pb2.DepositSharesRequest(
                parent=f"users/{user_id}",
                symbol=symbol,
                quantity=quantity,
                average_price=decimal_pb2.Decimal(value=str(PRICE)),
                request_id=uuid.uuid4().hex,
            ),
            timeout=30,
        )
    finally:
        await channel.close()


async def _place(client: httpx.AsyncClient, auth: dict[str, str], **order: object) -> dict:
    placed = await client.post(
        "/v1/orders",
        json={"symbol": "INFY", "type": "LIMIT", "limitPrice": str(PRICE), **order},
        headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert placed.status_code == 201, placed.text
    return exact_json(placed)


async def test_an_iceberg_shows_its_display_refills_and_fills_in_full(quiet_stack: Stack) -> None:
    buyer, buyer_password, _ = await open_account(quiet_stack, "1000000.00")
    seller, seller_password, seller_id = await open_account(quiet_stack, "100000.00")
    await _deposit_shares(quiet_stack, seller_id, "INFY", 100)
    async with httpx.AsyncClient(base_url=quiet_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, buyer, buyer_password)
        seller_auth = await login(client, seller, seller_password)

        async def order(order_id: str) -> dict:
            return exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))

        async def bids() -> list[dict]:
            reply = await client.get("/v1/instruments/INFY/depth", headers=auth)
            assert reply.status_code == 200, reply.text
            return exact_json(reply)["bids"]

        async with client.stream("GET", "/v1/orders/stream", headers=auth) as response:
            assert response.status_code == 200
            stream = events(response)
            assert (await next_event(stream)).event == "retry"
            iceberg = await _place(client, auth, side="BUY", quantity=100, displayQuantity=10)
            assert iceberg["displayQuantity"] == 10 and iceberg["quantity"] == 100
            update = (await next_event(stream, timeout=30)).json()["order"]
            assert (update["orderId"], update["displayQuantity"]) == (iceberg["orderId"], 10)
        order_id = iceberg["orderId"]
        await eventually(lambda: _status_is(order(order_id), "OPEN"), timeout=30)

        # The market sees 10 of the 100; the block is for all 100.
        await eventually(lambda: _levels_are(bids(), [{"price": PRICE, "quantity": 10}]), timeout=30)
        funds = exact_json(await client.get("/v1/funds", headers=auth))
        assert funds["blocked"] >= 100 * PRICE

        # 25 against it: 10 shown, refilled, 10, refilled, 5; the bid shows what is left of the refill.
        await _place(client, seller_auth, side="SELL", quantity=25)
        partly = await eventually(lambda: _filled(order(order_id), 25), timeout=30)
        assert (partly["status"], partly["leavesQuantity"], partly["displayQuantity"]) == (
            "PARTIALLY_FILLED",
            75,
            10,
        )
        await eventually(lambda: _levels_are(bids(), [{"price": PRICE, "quantity": 5}]), timeout=30)

        await _place(client, seller_auth, side="SELL", quantity=75)
        filled = await eventually(lambda: _filled(order(order_id), 100), timeout=30)
        assert (filled["status"], filled["leavesQuantity"], filled["avgPrice"]) == ("FILLED", 0, PRICE)
        trades = exact_json(await client.get("/v1/trades", params={"orderId": order_id}, headers=auth))[
            "trades"
        ]
        # One fill per shown part: 10, 10, 5, then 5 and seven refills of 10.
        assert sorted(t["quantity"] for t in trades) == sorted([10, 10, 5, 5] + [10] * 7)
        await eventually(lambda: _levels_are(bids(), []), timeout=30)

        async def released() -> dict | None:
            funds = exact_json(await client.get("/v1/funds", headers=auth))
            return funds if funds["blocked"] == 0 else None

        await eventually(released, timeout=30)

    report = await audit.run(
        quiet_stack.plan.describe(), signer=quiet_stack.plan.operator_signer("auditor"), settle_seconds=20
    )
    assert report.complete, report.render()


async def test_a_display_quantity_out_of_range_is_a_problem_naming_the_field(quiet_stack: Stack) -> None:
    username, password, _ = await open_account(quiet_stack, "1000000.00")
    async with httpx.AsyncClient(base_url=quiet_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        for body, reason in (
            ({"type": "LIMIT", "displayQuantity": 5}, "DISPLAY_QUANTITY_OUT_OF_RANGE"),  # under 10 %
            ({"type": "MARKET", "displayQuantity": 10}, "DISPLAY_QUANTITY_NOT_ALLOWED"),
        ):
            fields: dict[str, object] = {"symbol": "INFY", "side": "BUY", "quantity": 100, **body}
            if body["type"] == "LIMIT":
                fields["limitPrice"] = str(PRICE)
            refused = await client.post(
                "/v1/orders", json=fields, headers={**auth, "Idempotency-Key": str(uuid.uuid4())}
            )
            assert refused.status_code == 400, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["reason"] == reason
            assert "displayQuantity" in refused.text
        assert (await client.get("/v1/orders", headers=auth)).json()["orders"] == []


async def test_a_modified_iceberg_keeps_showing_its_display_quantity(quiet_stack: Stack) -> None:
    username, password, _ = await open_account(quiet_stack, "1000000.00")
    price = Decimal("3890.00")  # TCS at its previous close; a book of its own
    async with httpx.AsyncClient(base_url=quiet_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        iceberg = await _place(
            client, auth, symbol="TCS", side="BUY", quantity=100, limitPrice=str(price), displayQuantity=10
        )
        order_id = iceberg["orderId"]

        async def bids() -> list[dict]:
            return exact_json(await client.get("/v1/instruments/TCS/depth", headers=auth))["bids"]

        await eventually(lambda: _levels_are(bids(), [{"price": price, "quantity": 10}]), timeout=30)
        # The replace restates MaxFloor: the exchange keeps showing 10 of the 80, not all 80.
        modified = await client.post(
            f"/v1/orders/{order_id}:modify",
            json={"quantity": 80},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert modified.status_code == 200, modified.text

        async def replaced() -> dict | None:
            current = exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))
            return current if (current["status"], current["quantity"]) == ("OPEN", 80) else None

        assert (await eventually(replaced, timeout=30))["displayQuantity"] == 10
        await eventually(lambda: _levels_are(bids(), [{"price": price, "quantity": 10}]), timeout=30)
        # A quantity of 10 would leave nothing hidden behind the 10 shown.
        too_small = await client.post(
            f"/v1/orders/{order_id}:modify",
            json={"quantity": 10},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert too_small.status_code == 400, too_small.text
        assert too_small.json()["reason"] == "DISPLAY_QUANTITY_OUT_OF_RANGE"
        cancelled = await client.post(f"/v1/orders/{order_id}:cancel", headers=auth)
        assert cancelled.status_code == 200, cancelled.text
        await eventually(lambda: _levels_are(bids(), []), timeout=30)

        async def released() -> dict | None:
            funds = exact_json(await client.get("/v1/funds", headers=auth))
            return funds if funds["blocked"] == 0 else None

        await eventually(released, timeout=30)
    report = await audit.run(
        quiet_stack.plan.describe(), signer=quiet_stack.plan.operator_signer("auditor"), settle_seconds=20
    )
    assert report.complete, report.render()


async def _status_is(order: object, status: str) -> dict | None:
    current = await order  # type: ignore[misc]
    return current if current["status"] == status else None


async def _filled(order: object, quantity: int) -> dict | None:
    current = await order  # type: ignore[misc]
    return current if current["filledQuantity"] == quantity else None


async def _levels_are(levels: object, expected: list[dict]) -> bool:
    return await levels == expected  # type: ignore[misc]
