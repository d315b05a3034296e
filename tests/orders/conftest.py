"""The OMS as a real process on real PostgreSQL and NATS, with its neighbours stood in by
fakes that speak their gRPC contracts (tests/orders/fakes.py), plus helpers to publish
execution reports and ticks the way svc_exec and svc_marketdata do."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.marketdata.v1 import marketdata_pb2, tick_pb2
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_runtime import messaging
from svc_runtime.messaging import Topology
from svc_runtime.stack import Stack, StackPlan
from tests.orders.fakes import FakeServices
from tests.support.grpc import plain_channel
from tests.support.infra import SharedInfra, fresh_database, unique_name
from tests.support.polling import eventually

# Slow refill so that rate-limit tests do not depend on how fast this machine is.
BASE_ENV = {
    "BROKERMESH_ORDERS_RATE_PER_SECOND": "0.05",
    "BROKERMESH_ORDERS_RATE_BURST": "10",
    "BROKERMESH_ORDERS_SWEEP_AFTER_SECONDS": "3600",
    "BROKERMESH_ORDERS_SWEEP_INTERVAL_SECONDS": "0.5",
    "BROKERMESH_ORDERS_PARK_AFTER_DELIVERIES": "3",
    "BROKERMESH_LOG_LEVEL": "INFO",
}


def dec(value: str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=value)


@dataclass
class Oms:
    """One OMS process with fakes around it."""

    stack: Stack
    fakes: FakeServices
    nc: NatsClient
    js: JetStreamContext
    topology: Topology
    channel: grpc.aio.Channel
    stub: orders_pb2_grpc.OrdersServiceStub

    def new_user(self, cash: str = "1000000.00") -> str:
        user_id = unique_name("u_")
        self.fakes.funds.deposit(user_id, cash)
        return user_id

    async def place(
        self,
        user_id: str,
        request_id: str | None = None,
        *,
        metadata: tuple[tuple[str, str], ...] = (),
        **order: Any,
    ) -> orders_pb2.Order:
        fields: dict[str, Any] = {
            "symbol": "INFY",
            "side": trading_pb2.SIDE_BUY,
            "type": trading_pb2.ORDER_TYPE_LIMIT,
            "quantity": 10,
            "limit_price": dec("1530.00"),
        }
        fields.update(order)
        return await self.stub.PlaceOrder(
            orders_pb2.PlaceOrderRequest(
                parent=f"users/{user_id}",
                order=orders_pb2.Order(**fields),
                request_id=request_id or unique_name("k"),
            ),
            metadata=metadata,
            timeout=30,
        )

    async def get(self, order: orders_pb2.Order) -> orders_pb2.Order:
        # wait_for_ready: right after a restart the channel may still be reconnecting.
        return await self.stub.GetOrder(
            orders_pb2.GetOrderRequest(name=order.name), timeout=10, wait_for_ready=True
        )

    async def report(
        self, order: orders_pb2.Order, exec_type: int, exec_id: str | None = None, **fields: Any
    ) -> str:
        """Publish an execution report as svc_exec does (message id = exec id)."""
        exec_id = exec_id or unique_name("x")
        message = er.ExecutionReport(
            exec_id=exec_id,
            order_id=order.order_id,
            user_id=order.user_id,
            symbol=order.symbol,
            side=order.side,
            order_quantity=fields.pop("order_quantity", order.quantity),
            exec_type=exec_type,
            **fields,
        )
        await messaging.publish(self.js, self.topology.exec_report_subject(order.user_id), message, exec_id)
        return exec_id

    async def fill(
        self, order: orders_pb2.Order, qty: int, price: str, cum: int, exec_id: str | None = None
    ) -> str:
        status = er.ORD_STATUS_FILLED if cum == order.quantity else er.ORD_STATUS_PARTIALLY_FILLED
        return await self.report(
            order,
            er.EXEC_TYPE_TRADE,
            exec_id,
            ord_status=status,
            last_quantity=qty,
            last_price=dec(price),
            cumulative_quantity=cum,
            leaves_quantity=order.quantity - cum,
            exchange_order_id=f"X-{order.order_id}",
        )

    async def ack(self, order: orders_pb2.Order) -> str:
        return await self.report(
            order,
            er.EXEC_TYPE_NEW,
            ord_status=er.ORD_STATUS_NEW,
            leaves_quantity=order.quantity,
            exchange_order_id=f"X-{order.order_id}",
        )

    async def tick(
        self, symbol: str, last: str, bid: str = "", ask: str = "", sequence: int | None = None
    ) -> None:
        quote = marketdata_pb2.Quote(
            symbol=symbol,
            last_price=dec(last),
            bid_price=dec(bid) if bid else None,
            ask_price=dec(ask) if ask else None,
            sequence=sequence if sequence is not None else time.monotonic_ns(),
        )
        batch = tick_pb2.TickBatch(quotes=[quote])
        await self.nc.publish(self.topology.tick_subject_for(symbol), batch.SerializeToString())
        await self.nc.flush()

    async def wait_status(
        self, order: orders_pb2.Order, status: int, timeout: float = 20.0
    ) -> orders_pb2.Order:
        async def reached() -> orders_pb2.Order | None:
            current = await self.get(order)
            return current if current.status == status else None

        return await eventually(reached, timeout=timeout)

    async def invariants(self) -> list[orders_pb2.CheckInvariantsResponse]:
        reply = await self.stub.CheckInvariants(orders_pb2.CheckInvariantsRequest(), timeout=30)
        return list(reply.violations)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.stack.stop()
        await self.fakes.stop()
        await self.channel.close()
        await self.nc.close()


async def start_oms(
    infra: SharedInfra, data_dir: Path, extra_env: dict[str, str] | None = None, database_url: str = ""
) -> Oms:
    plan = StackPlan.allocate(
        data_dir,
        database_url or await fresh_database(infra),
        infra.nats_url,
        namespace=unique_name("t"),
        jwt_secret=secrets.token_urlsafe(48),
    )
    plan.extra_env.update({**BASE_ENV, **(extra_env or {})})
    topology = Topology(plan.namespace)
    nc = await messaging.connect(infra.nats_url, "orders-tests")
    js = nc.jetstream()
    await messaging.ensure_streams(js, topology)
    fakes = FakeServices(plan)
    await fakes.start(js, topology)
    stack = Stack(plan)
    try:
        await stack.start(["svc_orders"])
    except BaseException:
        await stack.stop()
        await fakes.stop()
        await nc.close()
        raise
    # Reconnect quickly after the OMS is killed and restarted (the default backoff grows
    # to seconds, during which calls fail fast without trying).
    channel = plain_channel(
        plan,
        "svc_orders",
        options=[("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 300)],
    )
    return Oms(stack, fakes, nc, js, topology, channel, orders_pb2_grpc.OrdersServiceStub(channel))


@pytest.fixture(scope="module")
async def oms(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Oms]:
    """One OMS shared by a module's tests; each test uses its own users."""
    handle = await start_oms(infra, tmp_path_factory.mktemp("oms"))
    yield handle
    await handle.stop()


@pytest.fixture
async def start_own_oms(infra: SharedInfra, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Oms]]]:
    """An OMS of the test's own, with extra settings."""
    started: list[Oms] = []

    async def factory(extra_env: dict[str, str] | None = None) -> Oms:
        handle = await start_oms(infra, tmp_path / f"oms{len(started)}", extra_env)
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        await handle.stop()


def price(message: decimal_pb2.Decimal) -> Decimal:
    return Decimal(message.value)
