"""`brokermesh admin …` operates a running stack with the operator credentials `up` left in
its data directory, and every change it makes is audited under the operator's name."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from svc_runtime.stack import Stack
from tests.security.conftest import open_account
from tests.security.support import place_resting_buy
from tests.support.grpc import user_channel
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def brokermesh(stack: Stack, *args: str, operator: str = "admin") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from svc_runtime.cli import main; main()",
        "--data-dir",
        str(stack.plan.data_dir),
        "admin",
        "--operator",
        operator,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def admin_json(stack: Stack, *args: str, rows: bool = False) -> Any:
    """The command's output: one JSON document, or with `rows` one JSON object per line."""
    code, out, err = await brokermesh(stack, *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()] if rows else json.loads(out)


async def audit_actors(stack: Stack, *args: str) -> list[tuple[str, str]]:
    records = await admin_json(stack, "audit-trail", "--limit", "1000", *args, rows=True)
    return [(r["action"], r["actor"]) for r in records]


async def test_kill_switch_and_symbol_halts_from_the_cli_are_audited_as_the_operator(
    secured_stack: Stack,
) -> None:
    on = await admin_json(secured_stack, "kill-switch", "on", "--reason", "drill")
    assert on["trading_halted"] and on["halt_reason"] == "drill"
    off = await admin_json(secured_stack, "kill-switch", "off")
    assert not off.get("trading_halted", False)
    halted = await admin_json(secured_stack, "halt", "tcs")
    assert "TCS" in halted["halted_symbols"]
    resumed = await admin_json(secured_stack, "resume", "TCS")
    assert "TCS" not in resumed.get("halted_symbols", [])
    actors = await audit_actors(secured_stack)
    assert actors.count(("TRADING_CONTROLS", "operator:admin")) >= 4


async def test_a_read_only_operator_may_look_but_not_change(secured_stack: Stack) -> None:
    code, out, _ = await brokermesh(secured_stack, "kill-switch", "status", operator="auditor")
    assert code == 0 and "version" in out
    code, _, err = await brokermesh(secured_stack, "kill-switch", "on", operator="auditor")
    assert code != 0 and "PERMISSION_DENIED" in err
    _, _, user = await open_account(secured_stack)
    code, _, err = await brokermesh(secured_stack, "deposit", user, "100.00", operator="auditor")
    assert code != 0 and "PERMISSION_DENIED" in err


async def test_an_unknown_operator_gets_nothing(secured_stack: Stack) -> None:
    code, _, err = await brokermesh(secured_stack, "balances", operator="mallory")
    assert code != 0 and "mallory" in err


async def test_cash_in_and_out(secured_stack: Stack) -> None:
    _, _, user = await open_account(secured_stack, deposit="1000.00")
    after_deposit = await admin_json(secured_stack, "deposit", user, "250.50", "--request-id", f"dep-{user}")
    again = await admin_json(secured_stack, "deposit", user, "250.50", "--request-id", f"dep-{user}")
    assert after_deposit["available"]["value"] == again["available"]["value"] == "1250.50"
    after_withdrawal = await admin_json(secured_stack, "withdraw", user, "0.50")
    assert after_withdrawal["available"]["value"] == "1250.00"


async def test_cancel_all_of_a_users_orders(secured_stack: Stack) -> None:
    _, _, user = await open_account(secured_stack)
    placed = [await place_resting_buy(secured_stack, user, f"rest-{i}") for i in range(2)]
    cancelled = await admin_json(secured_stack, "cancel-all", user, rows=True)
    assert {o["order_id"] for o in cancelled} == {o.order_id for o in placed}
    async with user_channel(secured_stack.plan, "svc_orders", user) as ch:
        orders = orders_pb2_grpc.OrdersServiceStub(ch)

        async def all_cancelled() -> bool:
            listed = await orders.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{user}"), timeout=5)
            return all(o.status == orders_pb2.ORDER_STATUS_CANCELLED for o in listed.orders)

        await eventually(all_cancelled, timeout=30)
    actors = await audit_actors(secured_stack, "--user-id", user)
    assert actors.count(("CANCEL", "operator:admin")) == 2


async def test_end_of_day_and_the_fix_session(secured_stack: Stack) -> None:
    closed = await admin_json(secured_stack, "end-of-day")
    assert closed["trading_day"]
    session = await admin_json(secured_stack, "fix-session")
    assert session["session_id"]

    # svc_funds keeps no audit table for end of day; its log names the operator.
    def logged() -> bool:
        lines = (secured_stack.log_dir / "svc_funds.log").read_text().splitlines()
        return any(
            '"operator call"' in line and "operator:admin" in line and "RunEndOfDay" in line for line in lines
        )

    await eventually(logged, timeout=10)


async def test_an_operator_registers_the_bank_account_a_user_withdraws_to(secured_stack: Stack) -> None:
    _, _, user = await open_account(secured_stack)
    registered = await admin_json(secured_stack, "set-bank-account", user, "50100012345678", "hdfc0001234")
    assert (registered["account_number"], registered["ifsc"]) == ("50100012345678", "HDFC0001234")
    code, _, err = await brokermesh(secured_stack, "set-bank-account", user, "12", "HDFC0001234")
    assert code != 0 and "INVALID_ARGUMENT" in err and "account_number" in err
    code, _, err = await brokermesh(
        secured_stack, "set-bank-account", user, "50100012345678", "HDFC0001234", operator="auditor"
    )
    assert code != 0 and "PERMISSION_DENIED" in err
