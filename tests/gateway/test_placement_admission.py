"""Past the placements a gateway process can carry, POST /v1/orders is refused at once with
429 SERVER_BUSY and Retry-After, instead of queueing: the gateway's HTTP application in the
test process, in front of an order service (a small real gRPC server here) that is slow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pytest

from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import trading_pb2
from gateway.adapters.backends import Backends
from gateway.app.admission import Admission, Busy
from svc_runtime import tls
from tests.gateway.conftest import LocalEdge, quick_limits, serve_local

ORDER = {"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": 1}


class SlowOrders(orders_pb2_grpc.OrdersServiceServicer):
    """Places every order after `seconds`, counting how many it holds at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.holding = 0
        self.most_held = 0
        self.placed = 0

    async def PlaceOrder(
        self, request: orders_pb2.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        self.holding += 1
        self.most_held = max(self.most_held, self.holding)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.holding -= 1
        self.placed += 1
        return orders_pb2.Order(
            order_id=f"ord_{self.placed:06d}",
            user_id=request.parent.removeprefix("users/"),
            client_order_id=request.request_id,
            symbol=request.order.symbol,
            side=request.order.side,
            type=request.order.type,
            quantity=request.order.quantity,
            status=orders_pb2.ORDER_STATUS_PENDING_EXCHANGE,
            time_in_force=trading_pb2.TIME_IN_FORCE_DAY,
        )


@dataclass
class Served:
    edge: LocalEdge
    orders: SlowOrders


@pytest.fixture
async def slow_edge() -> AsyncIterator[Served]:
    orders = SlowOrders(0.3)
    server = grpc.aio.server()
    orders_pb2_grpc.add_OrdersServiceServicer_to_server(orders, server)
    port = tls.add_port(server, "127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    backends = Backends(orders_target=target, funds_target=target, marketdata_target=target, timeout=5.0)
    # Two placements at once, two more may wait up to 50 ms.
    limits = quick_limits(placements=Admission(in_flight=2, queue=2, queue_seconds=0.05))
    try:
        async with serve_local(backends, limits) as edge:
            yield Served(edge, orders)
    finally:
        await backends.close()
        await server.stop(0)


async def test_placements_past_the_admission_limit_are_refused_with_429_and_retry_after(
    slow_edge: Served,
) -> None:
    edge = slow_edge.edge

    async def place(i: int) -> httpx.Response:
        return await edge.client.post(
            "/v1/orders", json=ORDER, headers={**edge.auth(f"u_rush{i}"), "Idempotency-Key": f"rush-{i}"}
        )

    responses = await asyncio.gather(*(place(i) for i in range(12)))
    statuses = [r.status_code for r in responses]
    assert not [s for s in statuses if s >= 500], statuses
    assert set(statuses) == {201, 429}, statuses
    # The slow service never held more than the gateway's slots.
    assert slow_edge.orders.most_held <= 2
    assert statuses.count(201) == slow_edge.orders.placed
    for response in responses:
        if response.status_code == 429:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["reason"] == "SERVER_BUSY"
            assert int(response.headers["Retry-After"]) >= 1
    # Once the rush is over, a refused order goes through on retry with its key.
    refused = statuses.index(429)
    retried = await place(refused)
    assert retried.status_code == 201
    assert retried.json()["clientOrderId"] == f"rush-{refused}"


async def test_a_placement_waits_for_a_slot_within_the_queue_deadline() -> None:
    admission = Admission(in_flight=1, queue=1, queue_seconds=1.0)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.admitted():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert admission.taken == 1 and admission.waiting == 1
    # The queue is full: a third is refused without waiting.
    with pytest.raises(Busy):
        async with admission.admitted():
            pass
    release.set()
    await asyncio.wait_for(asyncio.gather(holder, waiter), 1.0)
    assert admission.taken == 0 and admission.waiting == 0


async def test_a_placement_that_waits_past_the_queue_deadline_is_refused() -> None:
    admission = Admission(in_flight=1, queue=4, queue_seconds=0.02)
    async with admission.admitted():
        with pytest.raises(Busy) as refused:
            async with admission.admitted():
                pass
        assert refused.value.retry_after_seconds >= 1
        assert admission.waiting == 0
    # The slot is free again.
    async with admission.admitted():
        assert admission.taken == 1
