"""Money out and paperwork through REST, against svc_funds and the gateway: withdrawals to the
registered bank account (paid, or returned by a refusing bank), each once; the ledger audited
after each test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc
from svc_funds.main import BANK_SIM_DELAY_MS, BANK_SIM_FAILING
from svc_runtime import admin
from svc_runtime.grpc_client import channel
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.gateway.test_http_edge import assert_problem
from tests.gateway.test_with_services import login, open_account
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

REFUSED_ACCOUNT = "999900000002"


@pytest.fixture(scope="module")
async def money_stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    env = {BANK_SIM_FAILING: REFUSED_ACCOUNT, BANK_SIM_DELAY_MS: "100"}
    stack = await new_stack(infra, tmp_path_factory.mktemp("money"), ["svc_funds", "gateway"], env)
    yield stack
    with contextlib.suppress(Exception):
        await stack.stop()


async def assert_ledger_sound(stack: Stack) -> None:
    async with channel(stack.plan.target("svc_funds"), signer=stack.plan.operator_signer()) as ch:
        reply = await funds_pb2_grpc.FundsServiceStub(ch).CheckInvariants(funds_pb2.CheckInvariantsRequest())
    assert [v.description for v in reply.violations] == []


async def trader(
    stack: Stack, client: httpx.AsyncClient, deposit: str, account: str | None = ""
) -> dict[str, str]:
    """A logged-in user with `deposit` in cash and, unless `account` is None, a bank account."""
    username, password, user_id = await open_account(stack, deposit)
    if account is not None:
        await admin.set_bank_account(
            stack.plan.target("svc_funds"),
            user_id,
            account or "50100012345678",
            "HDFC0000001",
            signer=stack.plan.operator_signer(),
        )
    return await login(client, username, password)


async def final_state(client: httpx.AsyncClient, location: str, auth: dict[str, str]) -> dict:
    async def done() -> dict | None:
        body = (await client.get(location, headers=auth)).json()
        return None if body["state"] == "HELD" else body

    result: dict = await eventually(done, timeout=20)
    return result


async def test_a_withdrawal_is_held_then_paid_to_the_registered_account(money_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=money_stack.plan.gateway_url, timeout=30) as client:
        auth = await trader(money_stack, client, "10000.00")
        account = await client.get("/v1/funds/bank-account", headers=auth)
        assert account.status_code == 200 and account.json() == {
            "accountNumber": "50100012345678",
            "ifsc": "HDFC0000001",
        }
        key = str(uuid.uuid4())
        made = await client.post(
            "/v1/funds/withdrawals", json={"amount": "2500.50"}, headers={**auth, "Idempotency-Key": key}
        )
        assert made.status_code == 202, made.text
        held = made.json()
        assert held["state"] == "HELD" and Decimal(str(held["amount"])) == Decimal("2500.50")
        assert made.headers["location"] == f"/v1/funds/withdrawals/{held['withdrawalId']}"
        funds = (await client.get("/v1/funds", headers=auth)).json()
        assert Decimal(str(funds["available"])) == Decimal("7499.50")

        paid = await final_state(client, made.headers["location"], auth)
        assert paid["state"] == "PAID" and paid["bankReference"] and paid["failure"] is None
        again = await client.post(
            "/v1/funds/withdrawals", json={"amount": "2500.50"}, headers={**auth, "Idempotency-Key": key}
        )
        assert again.status_code == 202 and again.json()["withdrawalId"] == held["withdrawalId"]
        assert again.json()["state"] == "PAID"
        other_amount = await client.post(
            "/v1/funds/withdrawals", json={"amount": "1.00"}, headers={**auth, "Idempotency-Key": key}
        )
        assert_problem(other_amount, 409, "REQUEST_ID_REUSED")
        listed = (await client.get("/v1/funds/withdrawals", headers=auth)).json()
        assert [w["withdrawalId"] for w in listed["withdrawals"]] == [held["withdrawalId"]]
        funds = (await client.get("/v1/funds", headers=auth)).json()
        assert Decimal(str(funds["available"])) == Decimal("7499.50")
    await assert_ledger_sound(money_stack)


async def test_a_withdrawal_the_bank_refuses_is_returned(money_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=money_stack.plan.gateway_url, timeout=30) as client:
        auth = await trader(money_stack, client, "1000.00", REFUSED_ACCOUNT)
        made = await client.post("/v1/funds/withdrawals", json={"amount": 400}, headers=auth)
        assert made.status_code == 202, made.text
        returned = await final_state(client, made.headers["location"], auth)
        assert returned["state"] == "RETURNED" and returned["failure"] and returned["bankReference"] is None
        funds = (await client.get("/v1/funds", headers=auth)).json()
        assert Decimal(str(funds["available"])) == Decimal("1000.00")
    await assert_ledger_sound(money_stack)


async def test_withdrawals_that_cannot_be_made_are_refused_clearly(money_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=money_stack.plan.gateway_url, timeout=30) as client:
        auth = await trader(money_stack, client, "100.00")
        too_much = await client.post("/v1/funds/withdrawals", json={"amount": "100.01"}, headers=auth)
        body = assert_problem(too_much, 422, "INSUFFICIENT_FUNDS")
        assert "only 100.00 can be withdrawn" in body["detail"]
        assert_problem(
            await client.post("/v1/funds/withdrawals", json={"amount": "1.001"}, headers=auth), 400
        )
        assert_problem(await client.post("/v1/funds/withdrawals", json={"amount": -5}, headers=auth), 400)
        assert_problem(await client.post("/v1/funds/withdrawals", json={}, headers=auth), 400)
        assert_problem(
            await client.get("/v1/funds/withdrawals/wd_nope", headers=auth), 404, "WITHDRAWAL_NOT_FOUND"
        )
        no_account = await trader(money_stack, client, "100.00", account=None)
        refused = await client.post("/v1/funds/withdrawals", json={"amount": "1.00"}, headers=no_account)
        assert_problem(refused, 422, "NO_BANK_ACCOUNT")
        assert_problem(await client.get("/v1/funds/bank-account", headers=no_account), 422, "NO_BANK_ACCOUNT")
    await assert_ledger_sound(money_stack)
