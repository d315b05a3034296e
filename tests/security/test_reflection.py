"""A generic client that knows nothing but the address: it lists the services by reflection
(v1 and v1alpha), builds a request from the reflected descriptors, calls by name, and gets
the same answers as a client built from proto/."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from svc_runtime.grpc_client import raw_channel, sync_channel
from svc_runtime.stack import Stack
from tests.security.conftest import open_account
from tests.security.support import place_resting_buy
from tests.support.grpc import user_token

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REFLECTION = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}


async def _list_services(target: str, version: str) -> set[str]:
    async with raw_channel(target) as ch:
        call = ch.stream_stream(
            REFLECTION[version],
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(timeout=5)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.done_writing()
        replies = [reply async for reply in call]
    return {s.name for reply in replies for s in reply.list_services_response.service}


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_every_service_in_both_versions(secured_stack: Stack, version: str) -> None:
    names = await _list_services(secured_stack.plan.target("svc_funds"), version)
    assert {
        "brokermesh.funds.v1.FundsService",
        "brokermesh.funds.v1.AccountService",
        "brokermesh.funds.v1.PortfolioService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


def _call_by_name(
    target: str, service: str, method: str, fields: dict[str, str], token: str
) -> grpc.StatusCode:
    """What grpcurl does: descriptors from reflection, a dynamic message, a call by name."""
    with sync_channel(target) as ch:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
        found = pool.FindServiceByName(service).FindMethodByName(method)
        request = message_factory.GetMessageClass(found.input_type)(**fields)
        response_class = message_factory.GetMessageClass(found.output_type)
        call = ch.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            call(request, metadata=metadata, timeout=5)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


async def test_a_reflection_client_gets_the_same_answers(secured_stack: Stack) -> None:
    _, _, owner = await open_account(secured_stack)
    _, _, other = await open_account(secured_stack)
    order = await place_resting_buy(secured_stack, owner, "reflected-1")
    target = secured_stack.plan.target("svc_orders")
    service = "brokermesh.orders.v1.OrdersService"

    def answer(user: str, name: str) -> grpc.StatusCode:
        token = user_token(secured_stack.plan, user) if user else ""
        return _call_by_name(target, service, "GetOrder", {"name": name}, token)

    assert await asyncio.to_thread(answer, "", order.name) == grpc.StatusCode.UNAUTHENTICATED
    assert await asyncio.to_thread(answer, other, order.name) == grpc.StatusCode.NOT_FOUND
    assert await asyncio.to_thread(answer, owner, order.name) == grpc.StatusCode.OK
    funds = secured_stack.plan.target("svc_funds")
    blocked = await asyncio.to_thread(
        _call_by_name,
        funds,
        "brokermesh.funds.v1.FundsService",
        "ReleaseBlock",
        {"name": f"users/{owner}/blocks/{order.order_id}"},
        user_token(secured_stack.plan, owner),
    )
    assert blocked == grpc.StatusCode.PERMISSION_DENIED
