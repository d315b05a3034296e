"""Exchange restarts with the whole broker running: the exchange keeps its books (so the
broker's working orders stay working and cancellable, with their blocks), and the audit
checks what the exchange can still answer for and names what it cannot."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest

from brokermesh.exchange.v1 import exchange_admin_pb2, exchange_admin_pb2_grpc
from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc
from brokermesh.orders.v1 import orders_pb2 as S
from brokermesh.orders.v1 import orders_pb2_grpc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_exec.settings import FORGOTTEN_AFTER
from svc_runtime import admin, audit
from svc_runtime.grpc_client import channel as signed_channel
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.support.infra import SharedInfra, unique_name
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

SERVICES = ("exchange_sim", "svc_funds", "svc_marketdata", "svc_exec", "svc_orders")
WORKING = {S.ORDER_STATUS_OPEN, S.ORDER_STATUS_PARTIALLY_FILLED, S.ORDER_STATUS_TRIGGER_PENDING}
SETTLED = WORKING | {S.ORDER_STATUS_CANCELLED, S.ORDER_STATUS_REJECTED, S.ORDER_STATUS_FILLED}


@pytest.fixture
async def start(
    infra: SharedInfra, tmp_path: Path
) -> AsyncIterator[Callable[..., Coroutine[Any, Any, Stack]]]:
    stacks: list[Stack] = []

    async def started(env: dict[str, str] | None = None) -> Stack:
        stack = await new_stack(infra, tmp_path / f"stack-{len(stacks)}", SERVICES, env)
        stacks.append(stack)
        return stack

    yield started
    for stack in stacks:
        await stack.stop()


class Broker:
    def __init__(self, stack: Stack, channel: grpc.aio.Channel) -> None:
        self.stack = stack
        self.orders = orders_pb2_grpc.OrdersServiceStub(channel)

    async def user(self) -> str:
        name = unique_name("u")
        created = await admin.create_user(
            self.stack.plan.target("svc_funds"),
            name,
            "pw-" + name,
            name,
            "5000000.00",
            signer=self.stack.plan.operator_signer(),
        )
        return str(created["account"]["user_id"])

    async def place(self, user: str, symbol: str, price: Decimal, key: str) -> S.Order:
        order = S.Order(
            symbol=symbol,
            side=trading_pb2.SIDE_BUY,
            type=trading_pb2.ORDER_TYPE_LIMIT,
            quantity=1,
            limit_price=decimal_pb2.Decimal(value=str(price)),
        )
        return await _retrying(
            lambda: self.orders.PlaceOrder(
                S.PlaceOrderRequest(parent=f"users/{user}", order=order, request_id=key), timeout=15
            )
        )

    async def cancel(self, order: S.Order) -> None:
        await _retrying(lambda: self.orders.CancelOrder(S.CancelOrderRequest(name=order.name), timeout=15))

    async def wait(self, order: S.Order, statuses: set[int], timeout: float = 90) -> S.Order:
        async def reached() -> S.Order | None:
            current = await self.orders.GetOrder(S.GetOrderRequest(name=order.name))
            return current if current.status in statuses else None

        return await eventually(reached, timeout=timeout, interval=0.2)


async def _retrying(call: Callable[[], Any]) -> Any:
    """A client that retries while a service restarts (UNAVAILABLE, DEADLINE_EXCEEDED)."""
    for _ in range(200):
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("the service never came back")


async def far_below_market(stack: Stack, symbol: str) -> Decimal:
    """A bid that rests: 6 % under the best bid, on the tick grid."""
    async with signed_channel(
        stack.plan.target("exchange_sim"), signer=stack.plan.service_signer("gateway")
    ) as channel:
        exchange = exchange_admin_pb2_grpc.ExchangeAdminServiceStub(channel)

        async def best_bid() -> Decimal | None:
            book = await exchange.GetOrderBook(exchange_admin_pb2.GetOrderBookRequest(symbol=symbol, depth=1))
            return Decimal(book.bids[0].price.value) if book.bids else None

        bid = await eventually(best_bid, timeout=60)
    return (bid * Decimal("0.94") / Decimal("0.05")).to_integral_value() * Decimal("0.05")


async def exchange_orders(stack: Stack) -> dict[str, exchange_admin_pb2.ExchangeOrder]:
    async with signed_channel(
        stack.plan.target("exchange_sim"), signer=stack.plan.service_signer("gateway")
    ) as channel:
        exchange = exchange_admin_pb2_grpc.ExchangeAdminServiceStub(channel)
        listed = await exchange.ListExchangeOrders(
            exchange_admin_pb2.ListExchangeOrdersRequest(sender_comp_id="BROKER"),
            wait_for_ready=True,
            timeout=30,
        )
    return {o.exchange_order_id: o for o in listed.orders}


async def active_blocks(stack: Stack, user: str) -> set[str]:
    async with signed_channel(
        stack.plan.target("svc_funds"), signer=stack.plan.service_signer("gateway")
    ) as channel:
        funds = funds_pb2_grpc.FundsServiceStub(channel)
        blocks = await funds.ListBlocks(
            funds_pb2.ListBlocksRequest(
                parent=f"users/{user}", state=funds_pb2.BLOCK_STATE_ACTIVE, page_size=1000
            )
        )
    return {b.order_id for b in blocks.blocks}


def _describe(stack: Stack, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    stack.write_description(data_dir / "stack.json")
    # The operator credentials the command signs with live beside the description.
    if not (data_dir / "credentials").exists():
        shutil.copytree(stack.plan.data_dir / "credentials", data_dir / "credentials")


async def cli_audit(stack: Stack, data_dir: Path, *flags: str) -> tuple[int, str]:
    """`brokermesh audit` against the stack, as an operator runs it."""
    _describe(stack, data_dir)
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "brokermesh"),
        "--data-dir",
        str(data_dir),
        "audit",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_after_a_restart_the_audit_names_the_finished_orders_the_exchange_forgot(
    start: Callable[..., Coroutine[Any, Any, Stack]], tmp_path: Path
) -> None:
    # Finished orders are kept for 3 seconds only, so a restart forgets them.
    stack = await start({"BROKERMESH_EXCHANGE_RETAIN_DAYS": str(3 / 86400)})
    async with signed_channel(
        stack.plan.target("svc_orders"), signer=stack.plan.service_signer("gateway")
    ) as channel:
        broker = Broker(stack, channel)
        user = await broker.user()
        price = await far_below_market(stack, "INFY")
        done = await broker.place(user, "INFY", price, "done")
        await broker.wait(done, {S.ORDER_STATUS_OPEN})
        await broker.cancel(done)
        await broker.wait(done, {S.ORDER_STATUS_CANCELLED})
        working = await broker.wait(await broker.place(user, "INFY", price, "working"), {S.ORDER_STATUS_OPEN})
        await asyncio.sleep(4)  # the cancelled order leaves the exchange's retention

        await stack.kill("exchange_sim")
        await stack.start_service("exchange_sim")

        report = await audit.run(
            stack.plan.describe(), signer=stack.plan.operator_signer("auditor"), settle_seconds=30
        )
        assert report.ok, report.render()
        assert [u[2].split(":")[0] for u in report.unverified] == [done.order_id], report.render()
        assert "unverified: 1 orders" in report.render()
        assert (await cli_audit(stack, tmp_path / "cli"))[0] == 0
        strict, output = await cli_audit(stack, tmp_path / "cli", "--strict")
        assert strict == 1 and done.order_id in output

        # The working order survived the restart at the exchange: it still cancels.
        held = await exchange_orders(stack)
        assert held[working.exchange_order_id].ord_status == "0"
        await broker.cancel(working)
        await broker.wait(working, {S.ORDER_STATUS_CANCELLED})
        assert working.order_id not in await active_blocks(stack, user)
        assert (
            await audit.run(
                stack.plan.describe(), signer=stack.plan.operator_signer("auditor"), settle_seconds=30
            )
        ).ok


@dataclass
class Stream:
    """Resting orders and cancels placed while the exchange is killed and restarted."""

    broker: Broker
    users: list[str]
    placed: dict[str, S.Order] = field(default_factory=dict)
    to_cancel: set[str] = field(default_factory=set)


async def stream_through_kills(
    stack: Stack, channel: grpc.aio.Channel, restart: Callable[[], Coroutine[Any, Any, None]]
) -> tuple[Stream, dict[str, S.Order]]:
    """Two clients place resting orders (40 each at least, and a few more after the last
    restart, however long restarts take) and cancel every second one while the exchange is
    killed twice (`restart` starts it again); returns the stream and every order as it
    settled."""
    broker = Broker(stack, channel)
    stream = Stream(broker, [await broker.user() for _ in range(2)])
    prices = {symbol: await far_below_market(stack, symbol) for symbol in ("INFY", "TCS")}
    kills: list[float] = []
    placed_at: list[float] = []
    loop = asyncio.get_running_loop()

    restarted = asyncio.Event()

    async def client(user: str, count: int) -> None:
        # At least `count` orders, and on past the last restart whatever it takes.
        after_restarts = -1
        for i in itertools.count():
            if restarted.is_set() and after_restarts < 0:
                after_restarts = i + 4
            if i >= count and 0 <= after_restarts <= i:
                return
            symbol = ("INFY", "TCS")[i % 2]
            order = await broker.place(user, symbol, prices[symbol], f"{user}-{i}")
            stream.placed[order.order_id] = order
            placed_at.append(loop.time())
            if i % 2:
                stream.to_cancel.add(order.order_id)
                try:
                    await broker.cancel(order)
                except grpc.aio.AioRpcError as error:
                    # Only an order already over (refused on the way) cannot be cancelled.
                    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
            await asyncio.sleep(0.15)

    async def chaos() -> None:
        for pause in (1.0, 1.0):
            await asyncio.sleep(pause)
            await stack.kill("exchange_sim")
            kills.append(loop.time())
            await asyncio.sleep(0.3)
            await restart()
        restarted.set()

    await asyncio.gather(*(client(user, 40) for user in stream.users), chaos())
    assert len(kills) == 2 and max(placed_at) > kills[-1], "the kills must fall inside the stream"
    final = {
        order_id: await broker.wait(order, SETTLED, timeout=120) for order_id, order in stream.placed.items()
    }
    return stream, final


async def broker_equals_venue(stack: Stack, stream: Stream, timeout: float) -> dict[str, S.Order]:
    """Waits until every order working at the broker rests at the exchange and the working
    orders are exactly those holding blocks; every cancelled order is then over. Returns
    the orders as they stand."""
    disagreement: list[object] = []

    async def agreed() -> dict[str, S.Order] | None:
        now = {
            order_id: await stream.broker.orders.GetOrder(S.GetOrderRequest(name=order.name))
            for order_id, order in stream.placed.items()
        }
        held = await exchange_orders(stack)
        working = {o.order_id: o for o in now.values() if o.status in WORKING}
        strays = [
            (o.order_id, o.exchange_order_id, o.status_reason)
            for o in working.values()
            if o.exchange_order_id not in held or held[o.exchange_order_id].ord_status != "0"
        ]
        blocks = set().union(*[await active_blocks(stack, user) for user in stream.users])
        disagreement[:] = [("not held by the exchange", strays), ("blocks ≠ working", blocks ^ set(working))]
        return now if not strays and blocks == set(working) else None

    try:
        now = await eventually(agreed, timeout=timeout, interval=0.5)
    except AssertionError:
        raise AssertionError(f"the broker and the exchange disagree: {disagreement}") from None
    assert any(o.status in WORKING for o in now.values()), "some orders must still rest at the end"
    for order_id in stream.to_cancel:
        assert now[order_id].status in (S.ORDER_STATUS_CANCELLED, S.ORDER_STATUS_REJECTED), now[order_id]
    return now


async def test_kill_9_of_the_exchange_under_a_stream_of_resting_orders_and_cancels(
    start: Callable[..., Coroutine[Any, Any, Stack]],
) -> None:
    """Resting orders and cancels keep coming while the exchange is killed twice. At the end
    no order is working at the broker that the exchange does not hold, every working order
    has its block, every cancelled one has none, and the audit is complete and clean."""
    stack = await start(
        {"BROKERMESH_ORDERS_SWEEP_AFTER_SECONDS": "3", "BROKERMESH_ORDERS_SWEEP_INTERVAL_SECONDS": "0.5"}
    )
    async with signed_channel(
        stack.plan.target("svc_orders"), signer=stack.plan.service_signer("gateway")
    ) as channel:
        stream, _ = await stream_through_kills(stack, channel, lambda: stack.start_service("exchange_sim"))
        await broker_equals_venue(stack, stream, timeout=30)
    report = await audit.run(
        stack.plan.describe(), signer=stack.plan.operator_signer("auditor"), settle_seconds=30
    )
    assert report.complete, report.render()


async def test_kill_9_of_an_exchange_that_forgets_its_book_under_a_stream_of_resting_orders_and_cancels(
    start: Callable[..., Coroutine[Any, Any, Stack]],
) -> None:
    """The same stream against a venue that really forgets: the exchange comes back from
    each kill without its order journal, and denies knowing the orders it held. The broker
    learns it (two denials seconds apart) and ends those orders, releasing their blocks:
    afterwards no order works at the broker that the venue does not hold, blocks are
    exactly the working orders, and the audit finds no violation (what the venue forgot is
    unverified, not a disagreement)."""
    stack = await start(
        {
            "BROKERMESH_ORDERS_SWEEP_AFTER_SECONDS": "3",
            "BROKERMESH_ORDERS_SWEEP_INTERVAL_SECONDS": "0.5",
            FORGOTTEN_AFTER: "2",
        }
    )
    journal = stack.plan.data_dir / "exchange_sim" / "orders.journal"

    async def restart_without_its_book() -> None:
        assert journal.exists()
        journal.unlink()
        await stack.start_service("exchange_sim")

    async with signed_channel(
        stack.plan.target("svc_orders"), signer=stack.plan.service_signer("gateway")
    ) as channel:
        stream, _ = await stream_through_kills(stack, channel, restart_without_its_book)
        now = await broker_equals_venue(stack, stream, timeout=60)
    forgotten = [o for o in now.values() if "the venue does not hold the order" in o.status_reason]
    assert forgotten, "orders resting before a kill were forgotten and must have been ended"
    assert all(o.status == S.ORDER_STATUS_CANCELLED for o in forgotten)
    report = await audit.run(
        stack.plan.describe(), signer=stack.plan.operator_signer("auditor"), settle_seconds=30
    )
    assert report.ok, report.render()
