"""On a running stack, every method of every service refuses a caller who cannot prove who
they are, and a signed-in user reaches only their own resources."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest

from brokermesh.exchange.v1 import exchange_admin_pb2
from brokermesh.exec.v1 import exec_pb2
from brokermesh.funds.v1 import funds_pb2
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import decimal_pb2
from svc_runtime.grpc_client import raw_channel
from svc_runtime.stack import Stack
from tests.security.conftest import open_account
from tests.security.methods import Method, served_methods
from tests.security.support import place_resting_buy, status_of
from tests.support.grpc import service_channel, user_channel, user_token

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

METHODS = {m.path: m for m in served_methods()}


def method(path: str) -> Method:
    return METHODS[path]


async def test_every_method_refuses_a_call_without_credentials(secured_stack: Stack) -> None:
    answers: dict[str, grpc.StatusCode] = {}
    for service in {m.service for m in METHODS.values()}:
        async with raw_channel(secured_stack.plan.target(service)) as ch:
            for m in METHODS.values():
                if m.service == service:
                    answers[m.path] = await status_of(ch, m)
    assert len(answers) == len(METHODS)
    assert {p: c for p, c in answers.items() if c != grpc.StatusCode.UNAUTHENTICATED} == {}


def _hostile_tokens(stack: Stack) -> dict[str, str]:
    now = int(time.time())
    secret = stack.plan.jwt_secret
    user = {"iss": "brokermesh", "aud": "brokermesh-api", "sub": "u1", "iat": now, "exp": now + 600}
    return {
        "expired": jwt.encode({**user, "iat": now - 7200, "exp": now - 3600}, secret, algorithm="HS256"),
        "malformed": "not.a.token",
        "wrongly signed": jwt.encode(user, "x" * 48, algorithm="HS256"),
        "alg none": jwt.encode(user, None, algorithm="none"),
        "wrong audience": jwt.encode({**user, "aud": "svc_funds"}, secret, algorithm="HS256"),
        "service token for another service": jwt.encode(
            {**user, "iss": "brokermesh-service", "aud": "svc_orders", "sub": "gateway", "exp": now + 300},
            stack.plan.credentials.service_key,  # type: ignore[union-attr]
            algorithm="HS256",
            headers={"kid": "service"},
        ),
    }


async def test_hostile_tokens_are_unauthenticated_and_told_nothing(secured_stack: Stack) -> None:
    targets = [
        method("/brokermesh.funds.v1.FundsService/GetFunds"),
        method("/brokermesh.funds.v1.FundsService/BlockFunds"),
        method("/brokermesh.funds.v1.FundsService/Deposit"),
    ]
    async with raw_channel(secured_stack.plan.target("svc_funds")) as ch:
        for name, token in _hostile_tokens(secured_stack).items():
            for m in targets:
                request = (
                    m.request(name="users/u1/funds")
                    if "name" in m.descriptor.input_type.fields_by_name
                    else None
                )
                call = ch.unary_unary(
                    m.path,
                    request_serializer=lambda x: x.SerializeToString(),
                    response_deserializer=m.response_class().FromString,
                )(request or m.request(), metadata=(("authorization", f"Bearer {token}"),), timeout=5)
                assert await call.code() == grpc.StatusCode.UNAUTHENTICATED, (name, m.path)
                # One answer for every cause: nothing that tells a prober what was wrong.
                assert await call.details() == "authentication required", (name, m.path)


async def test_a_user_reaches_only_their_own_orders(secured_stack: Stack) -> None:
    _, _, owner = await open_account(secured_stack)
    _, _, other = await open_account(secured_stack)
    order = await place_resting_buy(secured_stack, owner, "mine-1")
    async with user_channel(secured_stack.plan, "svc_orders", other) as ch:
        orders = orders_pb2_grpc.OrdersServiceStub(ch)
        for request_call in (
            lambda: orders.GetOrder(orders_pb2.GetOrderRequest(name=order.name), timeout=5),
            # The other user's own name with the order id: still not theirs.
            lambda: orders.GetOrder(
                orders_pb2.GetOrderRequest(name=f"users/{other}/orders/{order.order_id}"), timeout=5
            ),
            lambda: orders.CancelOrder(
                orders_pb2.CancelOrderRequest(name=order.name, request_id="x"), timeout=5
            ),
            lambda: orders.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{owner}"), timeout=5),
            lambda: orders.ListOrders(orders_pb2.ListOrdersRequest(parent="users/-"), timeout=5),
            lambda: orders.PlaceOrder(
                orders_pb2.PlaceOrderRequest(parent=f"users/{owner}", order=order, request_id="theirs-1"),
                timeout=5,
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await request_call()
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await orders.ListOrders(orders_pb2.ListOrdersRequest(parent=f"users/{other}"), timeout=5)
        assert order.order_id not in {o.order_id for o in listed.orders}
    async with user_channel(secured_stack.plan, "svc_orders", owner) as ch:
        mine = await orders_pb2_grpc.OrdersServiceStub(ch).GetOrder(
            orders_pb2.GetOrderRequest(name=order.name), timeout=5
        )
        assert mine.order_id == order.order_id


async def test_a_user_cannot_reach_internal_methods(secured_stack: Stack) -> None:
    _, _, user = await open_account(secured_stack)
    internal = {
        "svc_funds": [
            (
                method("/brokermesh.funds.v1.FundsService/BlockFunds"),
                funds_pb2.BlockFundsRequest(parent=f"users/{user}"),
            ),
            (
                method("/brokermesh.funds.v1.FundsService/Deposit"),
                funds_pb2.DepositRequest(
                    name=f"users/{user}/funds", amount=decimal_pb2.Decimal(value="1000"), request_id="gift"
                ),
            ),
            (method("/brokermesh.funds.v1.PortfolioService/RunEndOfDay"), None),
        ],
        "svc_orders": [(method("/brokermesh.orders.v1.OrdersService/UpdateTradingControls"), None)],
        "svc_exec": [(method("/brokermesh.exec.v1.ExecutionService/ReconcileOrders"), None)],
        "exchange_sim": [
            (
                method("/brokermesh.exchange.v1.ExchangeAdminService/HaltTrading"),
                exchange_admin_pb2.HaltTradingRequest(symbol="INFY"),
            )
        ],
    }
    token = (("authorization", f"Bearer {user_token(secured_stack.plan, user)}"),)
    for service, calls in internal.items():
        async with raw_channel(secured_stack.plan.target(service)) as ch:
            for m, request in calls:
                assert await status_of(ch, m, request, token) == grpc.StatusCode.PERMISSION_DENIED, m.path
                # And nobody at all without a credential.
                assert await status_of(ch, m, request) == grpc.StatusCode.UNAUTHENTICATED, m.path


async def test_a_service_identity_reaches_internal_methods(secured_stack: Stack) -> None:
    async with service_channel(secured_stack.plan, "svc_exec", caller="svc_orders") as ch:
        m = method("/brokermesh.exec.v1.ExecutionService/GetSessionStatus")
        assert await status_of(ch, m, exec_pb2.GetSessionStatusRequest()) == grpc.StatusCode.OK


async def test_the_audit_actor_comes_from_the_token_not_from_metadata(secured_stack: Stack) -> None:
    _, _, user = await open_account(secured_stack)
    order = await place_resting_buy(secured_stack, user, "claimed-actor-1")
    async with user_channel(secured_stack.plan, "svc_orders", user) as ch:
        cancelled = await orders_pb2_grpc.OrdersServiceStub(ch).CancelOrder(
            orders_pb2.CancelOrderRequest(name=order.name, request_id="claimed-actor-cancel"),
            metadata=(("x-actor", "operator:admin"),),
            timeout=5,
        )
    assert cancelled.order_id == order.order_id
    async with service_channel(secured_stack.plan, "svc_orders") as ch:
        records = await orders_pb2_grpc.OrdersServiceStub(ch).ListAuditRecords(
            orders_pb2.ListAuditRecordsRequest(parent=order.name), timeout=5
        )
    actors = {r.action: r.actor for r in records.records if r.action in ("PLACE", "CANCEL")}
    assert actors == {"PLACE": f"user:{user}", "CANCEL": f"user:{user}"}
