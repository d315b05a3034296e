"""The fault found in the field, end to end: a FIX 4.4 venue fills a LIMIT BUY at once with
`150=2` (FIX 4.2's fill, no New before it) and svc_exec holds it to the standard. The order must not sit
quietly PENDING_EXCHANGE: the client sees it flagged as needing attention, and its cash
stays blocked (nothing says the order is over)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from svc_runtime import config
from svc_runtime.stack import SERVICE_NAMES
from tests.e2e.conftest import exact_json, login, open_account
from tests.support.polling import eventually
from tests.venue.acceptor import Acceptor, Venue

pytestmark = pytest.mark.slow


async def test_a_fill_the_profile_refuses_shows_the_order_as_needing_attention(  # type: ignore[no-untyped-def]
    make_stack, start_venue, tmp_path: Path
) -> None:
    acceptor: Acceptor = start_venue(Venue("fills-at-once-as-4.2", fill_exec_types="12", send_new=False))
    instruments = tmp_path / "instruments.csv"
    instruments.write_text("symbol,company_name\nINFY,Infosys Ltd\n")
    stack = await make_stack(
        [name for name in SERVICE_NAMES if name != "exchange_sim"],
        extra_env={
            config.FIX_PORT: str(acceptor.port),
            config.VENUE_PROFILE: "fix44",
            "BROKERMESH_MARKETDATA_FEED": "none",
            "BROKERMESH_MARKETDATA_INSTRUMENTS": str(instruments),
        },
    )
    username, password, _ = await open_account(stack, "100000.00")
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        placed = await client.post(
            "/v1/orders",
            json={"symbol": "INFY", "side": "BUY", "type": "LIMIT", "quantity": 10, "limitPrice": "1500.05"},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["orderId"]

        async def flagged() -> dict | None:
            order = exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))
            return order if order["statusReason"].startswith("needs attention") else None

        order = await eventually(flagged)
        assert order["status"] == "PENDING_EXCHANGE" and order["filledQuantity"] == 0
        assert "session_reject_sent" in order["statusReason"]
        funds = exact_json(await client.get("/v1/funds", headers=auth))
        assert funds["blocked"] >= Decimal("15000.50"), "the block stays until the order is really over"
