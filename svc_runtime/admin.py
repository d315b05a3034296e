"""Operator actions on a running stack, over the services' authenticated gRPC APIs.

Every call is signed by an operator's credential (`svc_runtime.auth`): the services take
the operator's identity from it, so the audit trail names who did what.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, json_format

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc
from brokermesh.funds.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    funds_pb2,
    funds_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
)
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import decimal_pb2
from svc_runtime import context
from svc_runtime.auth import Signer
from svc_runtime.grpc_client import EXEC_SERVICE, channel

TIMEOUT = 10.0
# Turning a kill switch on answers once every working order's cancel is recorded.
KILL_SWITCH_TIMEOUT = 120.0
# Orders that can still be cancelled.
WORKING = (
    orders_pb2.ORDER_STATUS_PENDING_EXCHANGE,
    orders_pb2.ORDER_STATUS_OPEN,
    orders_pb2.ORDER_STATUS_PARTIALLY_FILLED,
    orders_pb2.ORDER_STATUS_PENDING_REPLACE,
    orders_pb2.ORDER_STATUS_TRIGGER_PENDING,
)


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


async def create_user(
    funds_target: str, username: str, password: str, display_name: str, deposit: str, *, signer: Signer
) -> dict[str, Any]:
    """Open an account (or find the existing one of that username) and deposit once.

    Idempotent: the request ids derive from the username, so running it twice neither opens
    two accounts nor deposits twice.
    """
    async with channel(funds_target, signer=signer) as ch:
        accounts = accounts_pb2_grpc.AccountServiceStub(ch)
        funds = funds_pb2_grpc.FundsServiceStub(ch)
        with context.bind(request_id=f"admin-create-{username}"):
            try:
                account = await accounts.CreateAccount(
                    accounts_pb2.CreateAccountRequest(
                        username=username,
                        password=password,
                        display_name=display_name,
                        request_id=f"create-account-{username}",
                    ),
                    timeout=TIMEOUT,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                account = await accounts.VerifyCredentials(
                    accounts_pb2.VerifyCredentialsRequest(username=username, password=password),
                    timeout=TIMEOUT,
                )
            balance = None
            if deposit and deposit not in {"0", "0.00"}:
                balance = await funds.Deposit(
                    funds_pb2.DepositRequest(
                        name=f"{account.name}/funds",
                        amount=decimal_pb2.Decimal(value=deposit),
                        request_id=f"opening-deposit-{username}",
                        reference="opening deposit",
                    ),
                    timeout=TIMEOUT,
                )
    result = {"account": _json(account)}
    if balance is not None:
        result["funds"] = _json(balance)
    return result


async def move_cash(
    funds_target: str, user_id: str, amount: str, *, withdraw: bool, signer: Signer, request_id: str = ""
) -> dict[str, Any]:
    """Deposit or withdraw cash. `request_id` makes a retry safe (a new one when empty)."""
    request_id = request_id or context.new_request_id()
    async with channel(funds_target, signer=signer) as ch:
        funds = funds_pb2_grpc.FundsServiceStub(ch)
        request_type, call = (
            (funds_pb2.WithdrawRequest, funds.Withdraw)
            if withdraw
            else (funds_pb2.DepositRequest, funds.Deposit)
        )
        balance = await call(
            request_type(
                name=f"users/{user_id}/funds",
                amount=decimal_pb2.Decimal(value=amount),
                request_id=request_id,
                reference=f"operator {'withdrawal' if withdraw else 'deposit'}",
            ),
            timeout=TIMEOUT,
        )
    return _json(balance)


async def balances(funds_target: str, user_ids: list[str], *, signer: Signer) -> list[dict[str, Any]]:
    async with channel(funds_target, signer=signer) as ch:
        accounts = accounts_pb2_grpc.AccountServiceStub(ch)
        funds = funds_pb2_grpc.FundsServiceStub(ch)
        if not user_ids:
            page_token = ""
            while True:
                page = await accounts.ListAccounts(
                    accounts_pb2.ListAccountsRequest(page_size=1000, page_token=page_token), timeout=TIMEOUT
                )
                user_ids.extend(a.user_id for a in page.accounts)
                page_token = page.next_page_token
                if not page_token:
                    break
        rows = []
        for user_id in user_ids:
            balance = await funds.GetFunds(
                funds_pb2.GetFundsRequest(name=f"users/{user_id}/funds"), timeout=TIMEOUT
            )
            rows.append(_json(balance))
    return rows


async def end_of_day(funds_target: str, trading_day: str, *, signer: Signer) -> dict[str, Any]:
    async with channel(funds_target, signer=signer) as ch:
        portfolio = portfolio_pb2_grpc.PortfolioServiceStub(ch)
        reply = await portfolio.RunEndOfDay(
            portfolio_pb2.RunEndOfDayRequest(trading_day=trading_day), timeout=60
        )
    return _json(reply)


async def trading_controls(orders_target: str, *, signer: Signer) -> dict[str, Any]:
    async with channel(orders_target, signer=signer) as ch:
        orders = orders_pb2_grpc.OrdersServiceStub(ch)
        reply = await orders.GetTradingControls(orders_pb2.GetTradingControlsRequest(), timeout=TIMEOUT)
    return _json(reply)


async def set_kill_switch(orders_target: str, halted: bool, reason: str, *, signer: Signer) -> dict[str, Any]:
    """The kill switch: while on, no order can be placed or modified (cancels go through);
    turning it on cancels every working order, listed in the answer's `cancelled_orders`."""
    async with channel(orders_target, signer=signer) as ch:
        orders = orders_pb2_grpc.OrdersServiceStub(ch)
        reply = await orders.UpdateTradingControls(
            orders_pb2.UpdateTradingControlsRequest(
                trading_controls=orders_pb2.TradingControls(trading_halted=halted, halt_reason=reason),
                update_mask=field_mask_pb2.FieldMask(paths=["trading_halted", "halt_reason"]),
                request_id=context.new_request_id(),
            ),
            timeout=KILL_SWITCH_TIMEOUT,
        )
    return _json(reply)


async def halt_symbol(orders_target: str, symbol: str, halted: bool, *, signer: Signer) -> dict[str, Any]:
    """Halt (or resume) new orders in one symbol at the broker."""
    async with channel(orders_target, signer=signer) as ch:
        orders = orders_pb2_grpc.OrdersServiceStub(ch)
        current = await orders.GetTradingControls(orders_pb2.GetTradingControlsRequest(), timeout=TIMEOUT)
        symbols = set(current.halted_symbols)
        symbols = symbols | {symbol.upper()} if halted else symbols - {symbol.upper()}
        reply = await orders.UpdateTradingControls(
            orders_pb2.UpdateTradingControlsRequest(
                trading_controls=orders_pb2.TradingControls(halted_symbols=sorted(symbols)),
                update_mask=field_mask_pb2.FieldMask(paths=["halted_symbols"]),
                request_id=context.new_request_id(),
            ),
            timeout=TIMEOUT,
        )
    return _json(reply)


_MONEY_LIMITS = ("max_order_value", "max_daily_loss")


async def risk_limits(orders_target: str, name: str, *, signer: Signer) -> dict[str, Any]:
    """A user's (`users/{user}/riskLimits`) or a segment's (`segments/CNC/riskLimits`) limits."""
    async with channel(orders_target, signer=signer) as ch:
        orders = orders_pb2_grpc.OrdersServiceStub(ch)
        reply = await orders.GetRiskLimits(orders_pb2.GetRiskLimitsRequest(name=name), timeout=TIMEOUT)
    return _json(reply)


async def set_risk_limits(
    orders_target: str, name: str, changes: dict[str, str | bool | None], *, signer: Signer
) -> dict[str, Any]:
    """Set (a value) or clear (None) the named limits of one scope; `trading_halted` True is
    that scope's kill switch, which also cancels its working orders (listed in the answer)."""
    limits = orders_pb2.RiskLimits(name=name)
    for field, value in changes.items():
        if value is None:
            continue
        if field == "trading_halted":
            limits.trading_halted = bool(value)
        elif field in _MONEY_LIMITS:
            getattr(limits, field).CopyFrom(decimal_pb2.Decimal(value=str(value)))
        else:
            setattr(limits, field, int(value))
    async with channel(orders_target, signer=signer) as ch:
        orders = orders_pb2_grpc.OrdersServiceStub(ch)
        reply = await orders.UpdateRiskLimits(
            orders_pb2.UpdateRiskLimitsRequest(
                risk_limits=limits,
                update_mask=field_mask_pb2.FieldMask(paths=sorted(changes)),
                request_id=context.new_request_id(),
            ),
            timeout=KILL_SWITCH_TIMEOUT,
        )
    return _json(reply)


async def _pages(fetch: Any, request: Any, items: str) -> AsyncIterator[Any]:
    while True:
        reply = await fetch(request, timeout=TIMEOUT)
        for item in getattr(reply, items):
            yield item
        if not reply.next_page_token:
            return
        request.page_token = reply.next_page_token


async def cancel_all(orders_target: str, user_id: str, *, signer: Signer) -> list[dict[str, Any]]:
    """Ask to cancel every working order of one user; returns the orders as they now stand."""
    async with channel(orders_target, signer=signer) as ch:
        orders = orders_pb2_grpc.OrdersServiceStub(ch)
        listing = orders_pb2.ListOrdersRequest(parent=f"users/{user_id}", page_size=500, statuses=WORKING)
        working = [order async for order in _pages(orders.ListOrders, listing, "orders")]
        cancelled = []
        for order in working:
            try:
                reply = await orders.CancelOrder(
                    orders_pb2.CancelOrderRequest(
                        name=order.name, request_id=f"operator-cancel-{order.order_id}"
                    ),
                    timeout=TIMEOUT,
                )
            except grpc.aio.AioRpcError as error:
                # Finished meanwhile (filled, expired): nothing left to cancel.
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                continue
            cancelled.append(_json(reply))
    return cancelled


async def audit_trail(orders_target: str, parent: str, limit: int, *, signer: Signer) -> list[dict[str, Any]]:
    """The audit records under `parent` (`users/-`, `users/{user}`, or one order), oldest first."""
    async with channel(orders_target, signer=signer) as ch:
        orders = orders_pb2_grpc.OrdersServiceStub(ch)
        request = orders_pb2.ListAuditRecordsRequest(parent=parent, page_size=min(limit, 1000))
        records = []
        async for record in _pages(orders.ListAuditRecords, request, "records"):
            records.append(_json(record))
            if len(records) >= limit:
                break
    return records


async def fix_session(exec_target: str, *, signer: Signer) -> dict[str, Any]:
    async with channel(exec_target, signer=signer, health_service=EXEC_SERVICE) as ch:
        execution = exec_pb2_grpc.ExecutionServiceStub(ch)
        reply = await execution.GetSessionStatus(exec_pb2.GetSessionStatusRequest(), timeout=TIMEOUT)
    return _json(reply)


async def end_order(exec_target: str, order_id: str, reason: str, *, signer: Signer) -> dict[str, Any]:
    """End a working order the venue does not hold (svc_exec asks the venue first)."""
    async with channel(exec_target, signer=signer, health_service=EXEC_SERVICE) as ch:
        execution = exec_pb2_grpc.ExecutionServiceStub(ch)
        # svc_exec waits for the venue's answer first (up to 10 s).
        reply = await execution.EndOrder(
            exec_pb2.EndOrderRequest(order_id=order_id, reason=reason), timeout=TIMEOUT + 15
        )
    return _json(reply)


async def set_bank_account(
    funds_target: str, user_id: str, account_number: str, ifsc: str, *, signer: Signer
) -> dict[str, Any]:
    """Register the bank account a user's withdrawals are paid to."""
    async with channel(funds_target, signer=signer) as ch:
        reply = await funds_pb2_grpc.FundsServiceStub(ch).SetBankAccount(
            funds_pb2.SetBankAccountRequest(
                bank_account=funds_pb2.BankAccount(
                    name=f"users/{user_id}/bankAccount", account_number=account_number, ifsc=ifsc
                )
            ),
            timeout=TIMEOUT,
        )
    return _json(reply)


# The demo users' bank accounts (the simulated bank pays any account it is not told to refuse).
DEMO_BANK_ACCOUNTS = {"asha": ("50100012345678", "HDFC0000001"), "ravi": ("30200087654321", "SBIN0000002")}


async def seed_demo(plan: Any, users: tuple[tuple[str, str, str, str], ...]) -> None:
    signer = plan.operator_signer("admin")
    for username, password, display_name, amount in users:
        created = await create_user(
            plan.target("svc_funds"), username, password, display_name, amount, signer=signer
        )
        if username in DEMO_BANK_ACCOUNTS:
            number, ifsc = DEMO_BANK_ACCOUNTS[username]
            user_id = created["account"]["name"].removeprefix("users/")
            await set_bank_account(plan.target("svc_funds"), user_id, number, ifsc, signer=signer)
