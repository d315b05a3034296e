"""The FIX round trip through the order executor: an order command on JetStream → svc_exec
records it and sends a NewOrderSingle → the exchange simulator fills it → the
ExecutionReports come back over FIX → svc_exec publishes them to JetStream → here.

Every order is a BUY LIMIT of one share that crosses a large resting SELL placed through the
simulator's admin API (a participant that is not a FIX counterparty), so each order costs
exactly one NewOrderSingle and two reports (New, then Trade), and nothing else competes for
the machine: the simulator's liquidity agents are off, and no OMS or funds service runs.

- **burst**: N commands published as fast as JetStream takes them; throughput is N over the
  time from the first publication to the last fill published by svc_exec (svc_exec drains a
  backlog at its full rate: the saturation throughput of the executor path).
- **open loops** at fixed rates: latency from each command's intended send time to the fill
  report's arrival on JetStream, no coordinated omission (`bench.load.open_loop`).

Baseline: one JetStream publish awaiting its ack (`baseline.jetstream_publish_ack`); every
order takes two of those hops and a FIX round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Callable

from bench import load
from bench.api import BASELINE_JS_PUBLISH, BenchContext, Figure, Scenario
from brokermesh.exchange.v1 import exchange_admin_pb2 as admin_pb
from brokermesh.exchange.v1 import exchange_admin_pb2_grpc
from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc
from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.orders.v1 import order_command_pb2 as oc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_runtime import messaging
from svc_runtime.grpc_client import channel
from svc_runtime.ids import new_id

SERVICES = ["exchange_sim", "svc_exec"]
QUIET = {"BROKERMESH_EXCHANGE_AGENTS": "off"}
SYMBOLS = ("INFY", "TCS", "RELIANCE", "HDFCBANK")
PRICES = {"INFY": "1500", "TCS": "3900", "RELIANCE": "2450", "HDFCBANK": "1640"}
TARGET_THROUGHPUT = ">= 2000 orders/s"


class Desk:
    """Publishes order commands and waits for their fills on the EXEC_REPORTS stream."""

    def __init__(self, nats_url: str, namespace: str) -> None:
        self.nats_url = nats_url
        self.topology = messaging.Topology(namespace)
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.fills = 0
        self.reports = 0
        self.messages = 0  # as stored: a batch of reports is one
        self.last_fill = 0.0
        self.user = f"u_bench_{secrets.token_hex(3)}"
        self._symbols = itertools.cycle(SYMBOLS)

    async def __aenter__(self) -> Desk:
        self.nc = await messaging.connect(self.nats_url, "bench-fix-roundtrip")
        self.js = self.nc.jetstream()
        await messaging.ensure_streams(self.js, self.topology)
        self.sub = await self.nc.subscribe(
            self.topology.wildcard(self.topology.exec_report_subject("x")),
            cb=self._on_report,
            pending_msgs_limit=-1,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def _on_report(self, msg) -> None:  # type: ignore[no-untyped-def]
        self.messages += 1
        for carried in messaging.unpack(msg):
            self._on_one(er.ExecutionReport.FromString(carried.data))

    def _on_one(self, report: er.ExecutionReport) -> None:
        self.reports += 1
        if report.exec_type != er.EXEC_TYPE_TRADE:
            return
        self.fills += 1
        now = time.perf_counter()
        self.last_fill = now
        future = self.waiting.pop(report.order_id, None)
        if future is not None and not future.done():
            future.set_result(now)

    def command(self) -> tuple[str, oc.OrderCommand]:
        order_id = new_id("ord")
        symbol = next(self._symbols)
        command = oc.OrderCommand(command_id=new_id("cmd"), order_id=order_id, user_id=self.user)
        command.new_order.CopyFrom(
            oc.NewOrderCommand(
                symbol=symbol,
                side=trading_pb2.SIDE_BUY,
                type=trading_pb2.ORDER_TYPE_LIMIT,
                time_in_force=trading_pb2.TIME_IN_FORCE_DAY,
                quantity=1,
                limit_price=decimal_pb2.Decimal(value=PRICES[symbol]),
            )
        )
        return order_id, command

    def expect(self, order_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[order_id] = future
        return future

    async def publish(self, command: oc.OrderCommand) -> None:
        await messaging.publish(
            self.js, self.topology.order_command_subject("new"), command, command.command_id
        )

    async def publish_pipelined(self, commands: list[oc.OrderCommand]) -> None:
        acks = []
        for command in commands:
            acks.append(
                await self.js.publish_async(
                    self.topology.order_command_subject("new"),
                    command.SerializeToString(),
                    headers=messaging.headers_for(command, command.command_id),
                )
            )
        await asyncio.gather(*acks)


async def _liquidity(admin: exchange_admin_pb2_grpc.ExchangeAdminServiceStub) -> None:
    for symbol in SYMBOLS:
        await admin.PlaceOrder(
            admin_pb.PlaceOrderRequest(
                participant="BENCH_LIQUIDITY",
                symbol=symbol,
                side=trading_pb2.SIDE_SELL,
                quantity=10_000_000,
                order_type=trading_pb2.ORDER_TYPE_LIMIT,
                price=decimal_pb2.Decimal(value=PRICES[symbol]),
                time_in_force=trading_pb2.TIME_IN_FORCE_DAY,
            ),
            timeout=10,
        )


async def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _burst(desk: Desk, orders: int, progress: Callable[[str], None]) -> list[Figure]:
    commands = [desk.command()[1] for _ in range(orders)]
    fills_before, reports_before, messages_before = desk.fills, desk.reports, desk.messages
    progress(f"burst of {orders}")
    started = time.perf_counter()
    await desk.publish_pipelined(commands)
    published = time.perf_counter()
    complete = await _wait(lambda: desk.fills - fills_before >= orders, timeout=120)
    filled = desk.fills - fills_before
    elapsed = (desk.last_fill if filled else time.perf_counter()) - started
    note = (
        f"{orders} one-share BUY orders published pipelined ({orders / (published - started):.0f}/s), "
        f"then drained by svc_exec; orders over first publication → last fill published"
    )
    return [
        Figure(
            "fix_roundtrip.burst.throughput",
            filled / elapsed,
            "orders/s",
            "higher",
            TARGET_THROUGHPUT,
            BASELINE_JS_PUBLISH,
            note,
        ),
        Figure(
            "fix_roundtrip.burst.reports_throughput",
            2 * filled / elapsed,
            "msgs/s",
            "higher",
            "",
            BASELINE_JS_PUBLISH,
            "execution reports published per second in the burst (New + Trade per order)",
        ),
        Figure(
            "fix_roundtrip.burst.report_messages_per_order",
            (desk.messages - messages_before) / max(1, filled),
            "msgs",
            "lower",
            "",
            "",
            f"JetStream messages carrying the burst's {desk.reports - reports_before} execution reports "
            "(a batch of reports is one), per filled order",
        ),
        Figure(
            "fix_roundtrip.burst.errors",
            float(orders - filled),
            "count",
            "lower",
            "<= 0",
            "",
            "orders without a fill 120 s after the burst" if not complete else "none",
        ),
    ]


async def _open_loop(
    desk: Desk, rate: float, duration: float, progress: Callable[[str], None]
) -> list[Figure]:
    async def order(_i: int) -> None:
        order_id, command = desk.command()
        filled = desk.expect(order_id)
        try:
            await desk.publish(command)
            await asyncio.wait_for(filled, 30)
        finally:
            desk.waiting.pop(order_id, None)

    result = await load.open_loop(order, rate=rate, duration=duration, warmup=1.0, progress=progress)
    return result.figures(
        f"fix_roundtrip.open_{rate:g}",
        baseline=BASELINE_JS_PUBLISH,
        throughput_unit="orders/s",
        targets={"errors": "<= 0"},
        note="command publish (intended send time) → fill report received from JetStream",
    )


async def roundtrip(ctx: BenchContext) -> list[Figure]:
    stack = await ctx.start_stack(SERVICES, extra_env=QUIET)
    figures: list[Figure] = []
    async with (
        channel(stack.plan.target("exchange_sim"), signer=stack.plan.service_signer("gateway")) as ch,
        channel(stack.plan.target("svc_exec"), signer=stack.plan.service_signer("gateway")) as ex,
    ):
        await _liquidity(exchange_admin_pb2_grpc.ExchangeAdminServiceStub(ch))
        executor = exec_pb2_grpc.ExecutionServiceStub(ex)
        deadline = time.monotonic() + 60
        while not (await executor.GetSessionStatus(exec_pb2.GetSessionStatusRequest(), timeout=5)).logged_on:
            if time.monotonic() > deadline:
                raise RuntimeError("svc_exec did not log on to the exchange simulator")
            await asyncio.sleep(0.1)
        async with Desk(ctx.nats_url, stack.plan.namespace) as desk:
            # Warm-up (not reported): connections, caches, the first consumer fetches.
            await _burst(desk, 200, ctx.progress)
            figures += await _burst(desk, 2000 if ctx.quick else 10_000, ctx.progress)
            rates = (500.0,) if ctx.quick else (500.0, 1000.0, 2000.0)
            for rate in rates:
                figures += await _open_loop(desk, rate, 3.0 if ctx.quick else 8.0, ctx.progress)
                with contextlib.suppress(Exception):
                    await _wait(lambda: not desk.waiting, timeout=30)
    return figures


SCENARIOS = [
    Scenario(
        "fix_roundtrip.orders",
        "order command → svc_exec → FIX NewOrderSingle → exchange simulator fill → report on JetStream",
        roundtrip,
    )
]
