"""Operator actions on a running stack, over the services' public gRPC APIs."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from brokermesh.funds.v1 import accounts_pb2, accounts_pb2_grpc, funds_pb2, funds_pb2_grpc
from brokermesh.type.v1 import decimal_pb2
from svc_runtime import context
from svc_runtime.grpc_client import channel


def _json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


async def create_user(
    funds_target: str, username: str, password: str, display_name: str, deposit: str
) -> dict[str, Any]:
    """Open an account (or find the existing one of that username) and deposit once.

    Idempotent: the request ids derive from the username, so running it twice neither opens
    two accounts nor deposits twice.
    """
    async with channel(funds_target) as ch:
        accounts = accounts_pb2_grpc.AccountServiceStub(ch)
        funds = funds_pb2_grpc.FundsServiceStub(ch)
        with context.bind(request_id=f"admin-create-{username}", actor="admin"):
            try:
                account = await accounts.CreateAccount(
                    accounts_pb2.CreateAccountRequest(
                        username=username,
                        password=password,
                        display_name=display_name,
                        request_id=f"create-account-{username}",
                    ),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                account = await accounts.VerifyCredentials(
                    accounts_pb2.VerifyCredentialsRequest(username=username, password=password), timeout=10
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
                    timeout=10,
                )
    result = {"account": _json(account)}
    if balance is not None:
        result["funds"] = _json(balance)
    return result


async def deposit(funds_target: str, user_id: str, amount: str) -> dict[str, Any]:
    async with channel(funds_target) as ch:
        funds = funds_pb2_grpc.FundsServiceStub(ch)
        with context.bind(request_id=context.new_request_id(), actor="admin"):
            balance = await funds.Deposit(
                funds_pb2.DepositRequest(
                    name=f"users/{user_id}/funds",
                    amount=decimal_pb2.Decimal(value=amount),
                    request_id=context.new_request_id(),
                    reference="admin deposit",
                ),
                timeout=10,
            )
    return _json(balance)


async def balances(funds_target: str, user_ids: list[str]) -> list[dict[str, Any]]:
    async with channel(funds_target) as ch:
        accounts = accounts_pb2_grpc.AccountServiceStub(ch)
        funds = funds_pb2_grpc.FundsServiceStub(ch)
        if not user_ids:
            page_token = ""
            while True:
                page = await accounts.ListAccounts(
                    accounts_pb2.ListAccountsRequest(page_size=1000, page_token=page_token), timeout=10
                )
                user_ids.extend(a.user_id for a in page.accounts)
                page_token = page.next_page_token
                if not page_token:
                    break
        rows = []
        for user_id in user_ids:
            balance = await funds.GetFunds(
                funds_pb2.GetFundsRequest(name=f"users/{user_id}/funds"), timeout=10
            )
            rows.append(_json(balance))
    return rows


async def seed_demo(plan: Any, users: tuple[tuple[str, str, str, str], ...]) -> None:
    for username, password, display_name, amount in users:
        await create_user(plan.target("svc_funds"), username, password, display_name, amount)
