"""Test doubles around svc_exec: an OMS that publishes order commands and collects the
execution reports (through JetStream, as svc_orders and svc_funds do), and poll helpers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc
from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.orders.v1 import order_command_pb2 as oc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_runtime import context, messaging
from svc_runtime.grpc_client import channel
from svc_runtime.ids import new_id
from svc_runtime.messaging import Topology
from svc_runtime.stack import Stack
from tests.support.grpc import as_service, service_channel

TRADE = er.EXEC_TYPE_TRADE


async def eventually_async(
    probe: Callable[[], Awaitable[object]], *, equals: object, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while (value := await probe()) != equals:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r}, expected {equals!r} after {timeout}s")
        await asyncio.sleep(0.1)


class Oms:
    """Publishes OrderCommands and collects every ExecutionReport from the stream."""

    def __init__(self, nats_url: str, namespace: str) -> None:
        self.nats_url = nats_url
        self.topology = Topology(namespace)
        self.reports: list[er.ExecutionReport] = []
        self.headers: list[dict[str, str]] = []
        self.nc: NatsClient | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.user_id = "u_" + new_id("t")[-8:].lower()

    async def __aenter__(self) -> Oms:
        self.nc = await messaging.connect(self.nats_url, "test-oms")
        self.js = self.nc.jetstream()
        await messaging.ensure_streams(self.js, self.topology)
        subject = self.topology.wildcard(self.topology.exec_report_subject("x"))
        self.sub = await self.js.pull_subscribe(
            subject,
            durable="test_oms",
            stream=self.topology.exec_reports_stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL),
        )
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            # Python 3.11's asyncio.wait_for (inside nats-py's fetch) can swallow a
            # cancellation that races with a message arriving: the flag ends the loop anyway.
            self._closing = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.nc:
            await self.nc.close()

    async def _collect(self) -> None:
        while not self._closing:
            try:
                msgs = await self.sub.fetch(500, timeout=0.5)
            except Exception:
                continue
            for msg in msgs:
                for carried in messaging.unpack(msg):
                    self.reports.append(messaging.decode(carried, er.ExecutionReport))
                    self.headers.append(dict(carried.headers or {}))
                await msg.ack()

    # --- commands ----------------------------------------------------------------------
    async def send(self, kind: str, order_id: str, *, command_id: str | None = None, **fields: object) -> str:
        command_id = command_id or new_id("cmd")
        command = oc.OrderCommand(
            command_id=command_id,
            order_id=order_id,
            user_id=fields.pop("user_id", self.user_id),  # type: ignore[arg-type]
            request_id=fields.pop("request_id", new_id("req")),  # type: ignore[arg-type]
        )
        getattr(command, kind).CopyFrom(_command_body(kind, fields))
        with context.bind(request_id=command.request_id):
            await messaging.publish(
                self.js,
                self.topology.order_command_subject(kind.split("_", maxsplit=1)[0]),
                command,
                command_id,
            )
        return command_id

    async def new_order(
        self,
        order_id: str | None = None,
        *,
        symbol: str = "INFY",
        side: int = trading_pb2.SIDE_BUY,
        quantity: int = 10,
        price: str | None = "1500.05",
        order_type: int = trading_pb2.ORDER_TYPE_LIMIT,
        **extra: object,
    ) -> str:
        order_id = order_id or new_id("ord")
        await self.send(
            "new_order",
            order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            limit_price=price,
            type=order_type,
            time_in_force=trading_pb2.TIME_IN_FORCE_DAY,
            **extra,
        )
        return order_id

    async def cancel(self, order_id: str, *, quantity: int = 10, symbol: str = "INFY") -> str:
        return await self.send(
            "cancel_order", order_id, symbol=symbol, side=trading_pb2.SIDE_BUY, quantity=quantity
        )

    async def replace(self, order_id: str, *, quantity: int, price: str, symbol: str = "INFY") -> str:
        return await self.send(
            "replace_order",
            order_id,
            symbol=symbol,
            side=trading_pb2.SIDE_BUY,
            quantity=quantity,
            limit_price=price,
            type=trading_pb2.ORDER_TYPE_LIMIT,
            time_in_force=trading_pb2.TIME_IN_FORCE_DAY,
        )

    async def commands_pending(self) -> int:
        """Commands not yet acknowledged by svc_exec (the stream is a work queue)."""
        info = await self.js.stream_info(self.topology.order_commands_stream)
        return int(info.state.messages)

    # --- what came back -----------------------------------------------------------------
    def of(self, order_id: str, exec_type: int | None = None) -> list[er.ExecutionReport]:
        return [
            r
            for r in self.reports
            if r.order_id == order_id and (exec_type is None or r.exec_type == exec_type)
        ]

    def filled(self, order_id: str) -> int:
        return sum(r.last_quantity for r in self.of(order_id, TRADE))

    def duplicate_exec_ids(self) -> list[str]:
        return [exec_id for exec_id, n in Counter(r.exec_id for r in self.reports).items() if n > 1]


def _command_body(kind: str, fields: dict[str, object]) -> object:
    body_type = {
        "new_order": oc.NewOrderCommand,
        "cancel_order": oc.CancelOrderCommand,
        "replace_order": oc.ReplaceOrderCommand,
        "order_status": oc.OrderStatusCommand,
    }[kind]
    values = dict(fields)
    for name in ("limit_price", "stop_price"):
        if name in values:
            price = values.pop(name)
            if price is not None:
                values[name] = decimal_pb2.Decimal(value=str(price))
    return body_type(**values)  # type: ignore[arg-type]


_channels: dict[str, object] = {}


def exec_stub(stack: Stack) -> exec_pb2_grpc.ExecutionServiceStub:
    # The stub does not keep its channel alive; this module does, for the test session. One
    # per stack: a later stack may get the same port, and a channel kept from a stopped one
    # is backing off its reconnects, failing calls at once (UNAVAILABLE).
    target = stack.plan.target("svc_exec")
    key = f"{stack.plan.data_dir}|{target}"
    if key not in _channels:
        _channels[key] = channel(target, signer=as_service(stack.plan))
    return exec_pb2_grpc.ExecutionServiceStub(_channels[key])


async def session_status(stack: Stack) -> exec_pb2.SessionStatus:
    async with service_channel(stack.plan, "svc_exec") as ch:
        return await exec_pb2_grpc.ExecutionServiceStub(ch).GetSessionStatus(
            exec_pb2.GetSessionStatusRequest(), timeout=5
        )


async def wait_logged_on(stack: Stack, timeout: float = 60.0) -> exec_pb2.SessionStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await session_status(stack)
        if status.logged_on:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"svc_exec did not log on: {status}")
        await asyncio.sleep(0.1)


def exec_log(stack: Stack) -> str:
    return (stack.log_dir / "svc_exec.log").read_text(errors="replace")


def fix_message_log(stack: Stack) -> list[str]:
    """svc_exec's FIX message log (quickfix's, every message in and out), one per line."""
    lines: list[str] = []
    for path in sorted((data_dir(stack) / "log").glob("*.messages.*log")):
        lines.extend(path.read_text(errors="replace").splitlines())
    return lines


def total_price(reports: list[er.ExecutionReport]) -> Decimal:
    return sum((Decimal(r.last_price.value) * r.last_quantity for r in reports), Decimal(0))


def data_dir(stack: Stack) -> Path:
    return stack.plan.data_dir / "svc_exec"
