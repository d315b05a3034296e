"""The fault found in the field, end to end: a FIX 4.4 venue fills a LIMIT BUY at once with
`150=2` (FIX 4.2's fill, no New before it) and svc_exec holds it to the standard. The order must not sit
quietly PENDING_EXCHANGE: the client sees it flagged as needing attention, and its cash
stays blocked (nothing says the order is over)."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from svc_runtime import audit, config
from svc_runtime.stack import SERVICE_NAMES, Stack
from tests.e2e.conftest import exact_json, login, open_account
from tests.support.polling import eventually
from tests.venue.acceptor import Acceptor, Venue

pytestmark = pytest.mark.slow


async def _stack_at(make_stack, acceptor: Acceptor, tmp_path: Path, **env: str) -> Stack:  # type: ignore[no-untyped-def]
    instruments = tmp_path / "instruments.csv"
    instruments.write_text("symbol,company_name\nINFY,Infosys Ltd\n")
    return await make_stack(
        [name for name in SERVICE_NAMES if name != "exchange_sim"],
        extra_env={
            config.FIX_PORT: str(acceptor.port),
            config.VENUE_PROFILE: "fix44",
            "BROKERMESH_MARKETDATA_FEED": "none",
            "BROKERMESH_MARKETDATA_INSTRUMENTS": str(instruments),
            **env,
        },
    )


async def _place_limit_buy(stack: Stack, client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    """A new user's LIMIT BUY of 10 INFY at 1500.05; returns (auth headers, order id)."""
    username, password, _ = await open_account(stack, "100000.00")
    auth = await login(client, username, password)
    placed = await client.post(
        "/v1/orders",
        json={"symbol": "INFY", "side": "BUY", "type": "LIMIT", "quantity": 10, "limitPrice": "1500.05"},
        headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert placed.status_code == 201, placed.text
    return auth, placed.json()["orderId"]


async def _place_and_see_flagged(stack: Stack, client: httpx.AsyncClient) -> tuple[dict[str, str], str, dict]:
    auth, order_id = await _place_limit_buy(stack, client)

    async def flagged() -> dict | None:
        order = exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))
        return order if order["statusReason"].startswith("needs attention") else None

    order = await eventually(flagged)
    assert "session_reject_sent" in order["statusReason"]
    return auth, order_id, order


async def test_a_fill_the_profile_refuses_shows_the_order_as_needing_attention(  # type: ignore[no-untyped-def]
    make_stack, start_venue, tmp_path: Path
) -> None:
    acceptor: Acceptor = start_venue(Venue("fills-at-once-as-4.2", fill_exec_types="12", send_new=False))
    stack = await _stack_at(make_stack, acceptor, tmp_path)
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        auth, _, order = await _place_and_see_flagged(stack, client)
        assert order["status"] == "PENDING_EXCHANGE" and order["filledQuantity"] == 0
        funds = exact_json(await client.get("/v1/funds", headers=auth))
        assert funds["blocked"] >= Decimal("15000.50"), "the block stays until the order is really over"


async def test_the_stuck_order_sweeper_then_learns_the_fill_from_the_venue_and_funds_settle(  # type: ignore[no-untyped-def]
    make_stack, start_venue, tmp_path: Path
) -> None:
    """The venue answers a status request in standard FIX 4.4 — if it names the venue's
    OrderID, which svc_exec learnt from the very report it refused: the fill is inferred from
    the answer, once; the order fills and its block is settled."""
    acceptor: Acceptor = start_venue(
        Venue("fills-at-once-as-4.2", fill_exec_types="12", send_new=False, status_needs_order_id=True)
    )
    stack = await _stack_at(
        make_stack,
        acceptor,
        tmp_path,
        BROKERMESH_ORDERS_SWEEP_AFTER_SECONDS="3",
        BROKERMESH_ORDERS_SWEEP_INTERVAL_SECONDS="1",
    )
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        auth, order_id, _ = await _place_and_see_flagged(stack, client)

        async def filled() -> dict | None:
            order = exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))
            return order if order["status"] == "FILLED" else None

        order = await eventually(filled, timeout=90)
        assert order["filledQuantity"] == 10 and order["avgPrice"] == Decimal("1500.05")
        assert order["statusReason"].startswith("needs attention"), "what happened stays visible"

        async def settled() -> dict | None:
            funds = exact_json(await client.get("/v1/funds", headers=auth))
            return funds if funds["blocked"] == 0 else None

        funds = await eventually(settled)
        assert funds["total"] <= Decimal("100000.00") - Decimal("15000.50")
        trades = (await client.get("/v1/trades", headers=auth)).json()
        assert sum(t["quantity"] for t in trades["trades"] if t["orderId"] == order_id) == 10
    requests = acceptor.received.of_type("H")
    assert requests and all(m.get(37) for m in requests), "status requests name the venue's OrderID"


async def test_the_audit_asks_the_venue_and_names_an_order_it_no_longer_holds(  # type: ignore[no-untyped-def]
    make_stack, start_venue, tmp_path: Path
) -> None:
    """I5 against a venue without the simulator's order list: the audit asks the venue about
    every working order over FIX. While the venue holds the order, it agrees; when the venue
    forgets its book, the order is named as a violation — never 'all invariants hold'."""
    acceptor = start_venue(Venue("resting", rest=True))
    stack = await _stack_at(make_stack, acceptor, tmp_path)
    signer = stack.plan.operator_signer("auditor")
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        auth, order_id = await _place_limit_buy(stack, client)

        async def opened() -> dict | None:
            order = exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))
            return order if order["status"] == "OPEN" else None

        await eventually(opened)
    described = stack.plan.describe()
    del described["grpc"]["exchange_sim"]  # type: ignore[attr-defined]  # as `up --venue` describes it
    held = await audit.run(described, signer=signer, settle_seconds=10)
    assert held.complete, held.render()
    assert held.checked["venue_status_queries"] == 1

    acceptor.venue = dataclasses.replace(acceptor.venue, status="deny")  # the venue lost its book
    forgotten = await audit.run(described, signer=signer, settle_seconds=2)
    assert not forgotten.ok
    assert any(order_id in detail for _, _, detail in forgotten.violations), forgotten.render()
    assert "all invariants hold" not in forgotten.render()
