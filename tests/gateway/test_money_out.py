"""Money out and paperwork through REST, against svc_funds and the gateway: withdrawals to the
registered bank account (paid, or returned by a refusing bank), each once; contract notes and
statements that reconcile with the ledger; the ledger audited after each test."""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal

import httpx
import pytest

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc
from brokermesh.type.v1 import trading_pb2
from svc_funds.domain.model import EXCHANGE_TZ
from svc_funds.settings import BANK_SIM_DELAY_MS, BANK_SIM_FAILING
from svc_runtime import admin
from svc_runtime.grpc_client import channel
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.funds.support import Reports, report
from tests.funds.test_acceptance import client_of
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


# --- statements and contract notes ---------------------------------------------------------
def today_ist() -> str:
    return datetime.now(EXCHANGE_TZ).date().isoformat()


async def a_day_of_trading(stack: Stack, user_id: str) -> list[str]:
    """Buy 10 INFY in two fills and sell 4 of them, settled through the real report stream
    (india-equity charges); returns the exec ids."""
    funds = client_of(stack)
    await funds.block_funds(user_id, f"ord_{user_id}_b", 10, "1500.00")
    async with Reports(stack.plan.nats_url, stack.plan.namespace) as reports:
        await reports.publish(
            report(f"{user_id}-x1", f"ord_{user_id}_b", user_id, quantity=6, price="1499.35", cumulative=6),
            report(
                f"{user_id}-x2",
                f"ord_{user_id}_b",
                user_id,
                quantity=4,
                price="1498.10",
                cumulative=10,
                ord_status=er.ORD_STATUS_FILLED,
            ),
        )
        await eventually(lambda: funds.sql("SELECT 1 FROM fills WHERE exec_id = $1", f"{user_id}-x2"))
        await funds.funds.BlockHoldings(
            funds_pb2.BlockHoldingsRequest(
                parent=f"users/{user_id}", order_id=f"ord_{user_id}_s", symbol="INFY", quantity=4
            )
        )
        await reports.publish(
            report(
                f"{user_id}-x3",
                f"ord_{user_id}_s",
                user_id,
                side=trading_pb2.SIDE_SELL,
                quantity=4,
                price="1510.55",
                cumulative=4,
                ord_status=er.ORD_STATUS_FILLED,
            )
        )
        await eventually(lambda: funds.sql("SELECT 1 FROM fills WHERE exec_id = $1", f"{user_id}-x3"))
    await funds.close()
    return [f"{user_id}-x1", f"{user_id}-x2", f"{user_id}-x3"]


def totals_of(response: httpx.Response) -> dict[str, Decimal]:
    pairs = (item.split("=") for item in response.headers["document-totals"].split(","))
    return {name: Decimal(value) for name, value in pairs}


async def ledger_entries(client: httpx.AsyncClient, auth: dict[str, str]) -> list[dict]:
    entries, token = [], ""
    while True:
        page = (
            await client.get("/v1/funds/ledger", params={"pageSize": 100, "pageToken": token}, headers=auth)
        ).json()
        entries += page["entries"]
        token = page["nextPageToken"]
        if not token:
            return entries


async def test_the_contract_note_and_the_statement_reconcile_to_the_paisa_with_the_ledger(
    money_stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=money_stack.plan.gateway_url, timeout=30) as client:
        username, password, user_id = await open_account(money_stack, "100000.00")
        await admin.set_bank_account(
            money_stack.plan.target("svc_funds"), user_id, "50100012345678", "HDFC0000001",
            signer=money_stack.plan.operator_signer(),
        )  # fmt: skip
        auth = await login(client, username, password)
        exec_ids = await a_day_of_trading(money_stack, user_id)
        # The sale's proceeds are not settled yet (no end of day has run): not withdrawable.
        available = Decimal(str((await client.get("/v1/funds", headers=auth)).json()["available"]))
        everything = await client.post("/v1/funds/withdrawals", json={"amount": str(available)}, headers=auth)
        assert_problem(everything, 422, "INSUFFICIENT_FUNDS")
        made = await client.post("/v1/funds/withdrawals", json={"amount": "1000.00"}, headers=auth)
        await final_state(client, made.headers["location"], auth)
        day = today_ist()
        entries = await ledger_entries(client, auth)
        rupee_accounts = {"cash", "cash_blocked", "cash_dues"}

        note = await client.get(f"/v1/funds/contract-notes/{day}", headers=auth)
        assert note.status_code == 200, note.text
        assert note.headers["content-type"].startswith("text/csv")
        assert note.headers["content-disposition"] == f'attachment; filename="contract-note-{day}.csv"'
        rows = list(csv.DictReader(io.StringIO(note.text)))
        fills = [r for r in rows if r["exec_id"]]
        assert [r["exec_id"] for r in fills] == exec_ids
        total = next(r for r in rows if r["trade_time"] == "TOTAL")
        from_ledger = sum(
            (
                Decimal(str(e["amount"]))
                for e in entries
                if e["execId"] in exec_ids and e["account"] in rupee_accounts
            ),
            Decimal(0),
        )
        assert Decimal(total["net"]) == from_ledger == totals_of(note)["net"]
        charged = sum((-Decimal(str(e["amount"])) for e in entries if e["kind"] == "CHARGES"), Decimal(0))
        assert Decimal(total["total_charges"]) == charged > 0  # india-equity charges delivery trades
        assert sum((Decimal(r["net"]) for r in fills), Decimal(0)) == Decimal(total["net"])

        [position] = (await client.get("/v1/portfolio", headers=auth)).json()["positions"]
        assert Decimal(str(position["charges"])) == charged and position["netQuantity"] == 6
        assert position["pnlAfterCharges"] is None  # no last price here: unrealized P&L is unknown
        assert (await client.get("/v1/portfolio", headers=auth)).json()["pnlIncludesCharges"] is False

        statement = await client.get(
            "/v1/funds/statement", params={"startDate": day, "endDate": day}, headers=auth
        )
        assert statement.status_code == 200, statement.text
        lines = list(csv.DictReader(io.StringIO(statement.text)))
        opening, closing = lines[0], lines[-1]
        assert (opening["kind"], closing["kind"]) == ("OPENING", "CLOSING")
        balance = Decimal(opening["balance"])
        for line in lines[1:-1]:
            balance += Decimal(line["credit"] or 0) - Decimal(line["debit"] or 0)
            assert Decimal(line["balance"]) == balance
        debits = sum((Decimal(line["debit"] or 0) for line in lines[1:-1]), Decimal(0))
        credits = sum((Decimal(line["credit"] or 0) for line in lines[1:-1]), Decimal(0))
        assert (Decimal(closing["debit"]), Decimal(closing["credit"])) == (debits, credits)
        funds = (await client.get("/v1/funds", headers=auth)).json()
        ledger_total = sum(
            (Decimal(str(e["amount"])) for e in entries if e["account"] in rupee_accounts), Decimal(0)
        )
        assert Decimal(closing["balance"]) == balance == ledger_total
        assert balance == Decimal(str(funds["available"])) + Decimal(str(funds["blocked"])) + Decimal(
            str(funds["dues"])
        )
        assert any(line["kind"] == "WITHDRAWAL" and line["debit"] == "1000.00" for line in lines)
        assert totals_of(statement)["closing"] == balance

        pdf = await client.get(
            "/v1/funds/statement", params={"startDate": day, "endDate": day, "format": "pdf"}, headers=auth
        )
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert (
            pdf.content.startswith(b"%PDF-") and f"Closing balance: INR {balance:.2f}".encode() in pdf.content
        )
        note_pdf = await client.get(f"/v1/funds/contract-notes/{day}", params={"format": "pdf"}, headers=auth)
        assert note_pdf.status_code == 200 and note_pdf.headers["content-type"] == "application/pdf"
        assert f"Charges: INR {charged:.2f}".encode() in note_pdf.content

        reversed_range = await client.get(
            "/v1/funds/statement", params={"startDate": day, "endDate": "2000-01-01"}, headers=auth
        )
        assert_problem(reversed_range, 400, "INVALID_DATE_RANGE")
        assert_problem(
            await client.get(
                "/v1/funds/statement", params={"startDate": "yesterday", "endDate": day}, headers=auth
            ),
            400,
        )
    await assert_ledger_sound(money_stack)
