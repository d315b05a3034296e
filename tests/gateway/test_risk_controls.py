"""Risk limits and the kill switch end to end: an operator sets a user's limits over gRPC,
the user meets them through REST (preview and placement, with the figures as fields), the
position limit counts real fills, and a user's kill switch takes their working order off
the exchange. The audit is clean afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import ROUND_FLOOR, Decimal

import httpx
import pytest

from svc_runtime import admin, audit
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.gateway.conftest import events, next_event
from tests.gateway.test_http_edge import assert_problem
from tests.gateway.test_with_services import login, needs_all, open_account
from tests.security.test_operator_cli import admin_json, brokermesh
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = await new_stack(infra, tmp_path_factory.mktemp("risk"))
    # What `brokermesh up` leaves for the operator tools.
    stack.write_description(stack.plan.data_dir / "stack.json")
    yield stack
    try:
        report = await audit.run(
            stack.plan.describe(), signer=stack.plan.operator_signer("auditor"), settle_seconds=30
        )
        assert report.complete, report.render()
    finally:
        with contextlib.suppress(Exception):
            await stack.stop()


async def set_limits(stack: Stack, user_id: str, **changes: str | bool | None) -> dict:
    return await admin.set_risk_limits(
        stack.plan.target("svc_orders"),
        f"users/{user_id}/riskLimits",
        changes,
        signer=stack.plan.operator_signer(),
    )


def money(value: object) -> Decimal:
    return Decimal(str(value))


async def place(client: httpx.AsyncClient, auth: dict[str, str], order: dict) -> httpx.Response:
    return await client.post("/v1/orders", json=order, headers={**auth, "Idempotency-Key": str(uuid.uuid4())})


@needs_all
async def test_a_users_limits_explain_their_refusals_in_preview_and_placement(stack: Stack) -> None:
    username, password, user_id = await open_account(stack, "500000.00")
    limits = await set_limits(stack, user_id, max_order_value="5000.00", max_position_quantity="3")
    assert limits["max_order_value"] == {"value": "5000.00"} and limits["max_position_quantity"] == "3"
    order = {"symbol": "INFY", "side": "BUY", "type": "LIMIT", "quantity": 7, "limitPrice": "1400.00"}
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        preview = (await client.post("/v1/orders:preview", json=order, headers=auth)).json()
        assert preview["acceptable"] is False
        assert preview["refusal"]["reason"] == "ORDER_VALUE_LIMIT"
        checks = {(c["rule"], c["scope"]): c for c in preview["riskChecks"]}
        value = checks[("ORDER_VALUE", f"users/{user_id}")]
        assert (money(value["limit"]), money(value["observed"]), value["passed"]) == (
            Decimal("5000.00"),
            Decimal("9800.00"),
            False,
        )
        # Every limit is reported, not only the first one refusing: 7 shares would also be past 3.
        position = checks[("POSITION", f"users/{user_id}")]
        assert (money(position["observed"]), position["passed"]) == (7, False)
        assert checks[("ORDER_QUANTITY", "default")]["passed"] is True

        body = assert_problem(await place(client, auth, order), 400, "ORDER_VALUE_LIMIT")
        assert body["riskCheck"] == {
            "rule": "ORDER_VALUE",
            "scope": f"users/{user_id}",
            "limit": "5000.00",
            "observed": "9800.00",
        }

        # Two shares bought at the market count toward the position once filled.
        bought = await place(client, auth, {"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": 2})
        assert bought.status_code == 201, bought.text

        async def held() -> int | None:
            portfolio = (await client.get("/v1/portfolio", headers=auth)).json()
            shares = sum(p["netQuantity"] for p in portfolio["positions"] if p["symbol"] == "INFY")
            return shares if shares == 2 else None

        await eventually(held, timeout=60)
        more = {"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": 2}
        body = assert_problem(await place(client, auth, more), 422, "POSITION_LIMIT")
        assert body["riskCheck"] == {
            "rule": "POSITION",
            "scope": f"users/{user_id}",
            "limit": "3",
            "observed": "4",
        }
        # Selling brings the position back toward flat: the limit does not stand in the way.
        sell = {"symbol": "INFY", "side": "SELL", "type": "MARKET", "quantity": 2}
        preview = (await client.post("/v1/orders:preview", json=sell, headers=auth)).json()
        position = next(c for c in preview["riskChecks"] if c["rule"] == "POSITION")
        assert position["passed"] is True, preview
        assert preview["refusal"] is None or preview["refusal"]["reason"] != "POSITION_LIMIT", preview


@needs_all
async def test_a_users_kill_switch_cancels_their_working_order_at_the_exchange(stack: Stack) -> None:
    username, password, user_id = await open_account(stack, "500000.00")
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        quote = (await client.get("/v1/quotes?symbols=INFY", headers=auth)).json()
        last = money(quote["quotes"][0]["ltp"])
        # Well below the market but inside the collar: it rests.
        resting = (last * Decimal("0.93") / Decimal("0.05")).to_integral_value(ROUND_FLOOR) * Decimal("0.05")
        order = {"symbol": "INFY", "side": "BUY", "type": "LIMIT", "quantity": 1, "limitPrice": str(resting)}
        placed = await place(client, auth, order)
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["orderId"]

        async def status() -> str:
            return str((await client.get(f"/v1/orders/{order_id}", headers=auth)).json()["status"])

        await eventually(lambda: _is(status, "OPEN"), timeout=30)
        halted = await set_limits(stack, user_id, trading_halted=True)
        assert halted["cancelled_orders"] == [f"users/{user_id}/orders/{order_id}"]
        await eventually(lambda: _is(status, "CANCELLED"), timeout=30)
        funds = (await client.get("/v1/funds", headers=auth)).json()
        assert money(funds["blocked"]) == 0
        body = assert_problem(await place(client, auth, order), 422, "TRADING_HALTED")
        assert user_id in body["detail"]
        await set_limits(stack, user_id, trading_halted=False)


async def _is(read: object, wanted: str) -> bool | None:
    return True if await read() == wanted else None  # type: ignore[operator]


@needs_all
async def test_a_price_alert_arrives_once_on_the_sse_stream_and_replays_by_last_event_id(
    stack: Stack,
) -> None:
    username, password, _ = await open_account(stack, "500000.00")
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        # Already met: it fires on INFY's next price, which our own market buy makes.
        created = await client.post(
            "/v1/alerts",
            json={"symbol": "infy", "condition": "PRICE_ABOVE", "threshold": "1.00", "note": "any trade"},
            headers={**auth, "Idempotency-Key": "alert-1"},
        )
        assert created.status_code == 201, created.text
        alert = created.json()
        assert (alert["symbol"], alert["state"], alert["firedAt"]) == ("INFY", "ACTIVE", None)
        again = await client.post(
            "/v1/alerts",
            json={"symbol": "INFY", "condition": "PRICE_ABOVE", "threshold": "1.00"},
            headers={**auth, "Idempotency-Key": "alert-1"},
        )
        assert again.json()["alertId"] == alert["alertId"]
        assert_problem(
            await client.post(
                "/v1/alerts", json={"symbol": "INFY", "condition": "SOMEDAY", "threshold": "1"}, headers=auth
            ),
            400,
        )

        # The market makers' prices may fire the alert before the stream starts following
        # (a stream without Last-Event-ID starts after the newest event): from event 0 it
        # arrives either way, replayed or live.
        async with client.stream(
            "GET", "/v1/alerts/stream", headers={**auth, "Last-Event-ID": "0"}
        ) as response:
            assert response.status_code == 200
            stream = events(response)
            assert (await next_event(stream)).event == "retry"
            buy = {"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": 1}
            assert (await place(client, auth, buy)).status_code == 201
            fired = await next_event(stream, timeout=30)
            assert fired.event == "alert_fired" and fired.id
            body = fired.json()
            assert (body["alertId"], body["state"], body["note"]) == (alert["alertId"], "FIRED", "any trade")
            assert body["firedPrice"] > 1
            # Another trade: the alert has fired; nothing more comes.
            assert (await place(client, auth, buy)).status_code == 201
            with pytest.raises(TimeoutError):
                await next_event(stream, timeout=3)

        async def replayed(after: str) -> list[str]:
            async with client.stream(
                "GET", "/v1/alerts/stream", headers={**auth, "Last-Event-ID": after}
            ) as again:
                stream = events(again)
                await next_event(stream)  # retry
                seen: list[str] = []
                with contextlib.suppress(TimeoutError):
                    while True:
                        seen.append((await next_event(stream, timeout=2)).id)
                return seen

        assert await replayed("0") == [fired.id]
        assert await replayed(fired.id) == []

        listed = (await client.get("/v1/alerts", headers=auth)).json()["alerts"]
        assert [(a["alertId"], a["state"]) for a in listed] == [(alert["alertId"], "FIRED")]
        assert (await client.delete(f"/v1/alerts/{alert['alertId']}", headers=auth)).status_code == 204
        assert_problem(
            await client.delete(f"/v1/alerts/{alert['alertId']}", headers=auth), 404, "ALERT_NOT_FOUND"
        )
        assert (await client.get("/v1/alerts", headers=auth)).json()["alerts"] == []


@needs_all
async def test_operators_set_and_show_limits_from_the_cli(stack: Stack) -> None:
    _, _, user_id = await open_account(stack, "1000.00")
    shown = await admin_json(
        stack,
        "risk-limits",
        "set",
        "--user",
        user_id,
        "--max-order-value",
        "2500.00",
        "--max-open-orders",
        "4",
    )
    assert (shown["max_order_value"], shown["max_open_orders"]) == ({"value": "2500.00"}, "4")
    cleared = await admin_json(stack, "risk-limits", "set", "--user", user_id, "--max-open-orders", "none")
    assert "max_open_orders" not in cleared and cleared["max_order_value"] == {"value": "2500.00"}
    assert (await admin_json(stack, "risk-limits", "show", "--user", user_id))["version"] == "2"
    segment = await admin_json(
        stack, "risk-limits", "set", "--segment", "INTRADAY", "--max-order-quantity", "900"
    )
    assert segment["name"] == "segments/INTRADAY/riskLimits" and segment["max_order_quantity"] == "900"
    await admin_json(stack, "risk-limits", "set", "--segment", "INTRADAY", "--max-order-quantity", "none")
    code, _, err = await brokermesh(stack, "risk-limits", "set", "--user", user_id, operator="auditor")
    assert code != 0 and "needs at least one limit" in err
    code, _, err = await brokermesh(
        stack, "risk-limits", "set", "--user", user_id, "--halt", "on", operator="auditor"
    )
    assert code != 0 and "PERMISSION_DENIED" in err
