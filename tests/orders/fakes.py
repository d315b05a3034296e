"""In-process stand-ins for svc_funds, svc_marketdata and svc_exec, speaking their real gRPC
contracts, so the OMS can be driven into the corners a real stack rarely reaches (a reply
lost after the block was made, an executor that never saw an order). PostgreSQL and NATS
are always the real servers; the OMS is always the real process."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import grpc
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc, execution_report_pb2
from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc, portfolio_pb2, portfolio_pb2_grpc
from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from brokermesh.orders.v1 import order_command_pb2
from brokermesh.type.v1 import decimal_pb2
from svc_runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ServiceError,
    Unavailable,
    to_item_status,
)
from svc_runtime.grpc_server import GrpcServer, Guard
from svc_runtime.messaging import DurableConsumer, Topology, decode
from svc_runtime.stack import StackPlan


def _dec(value: Decimal) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=str(value))


@dataclass
class FakeBlock:
    user_id: str
    order_id: str
    kind: str
    symbol: str
    quantity: int
    price: Decimal | None
    amount: Decimal
    active: bool = True

    def proto(self) -> funds_pb2.Block:
        return funds_pb2.Block(
            name=f"users/{self.user_id}/blocks/{self.order_id}",
            order_id=self.order_id,
            user_id=self.user_id,
            kind=funds_pb2.BLOCK_KIND_CASH if self.kind == "CASH" else funds_pb2.BLOCK_KIND_SHARES,
            symbol=self.symbol,
            amount=_dec(self.amount),
            remaining=_dec(self.amount if self.active else Decimal(0)),
            state=funds_pb2.BLOCK_STATE_ACTIVE if self.active else funds_pb2.BLOCK_STATE_CLOSED,
        )


class FakeFunds(funds_pb2_grpc.FundsServiceServicer):
    """Cash and share blocks keyed by order id, like svc_funds (no charges)."""

    def __init__(self) -> None:
        self.cash: dict[str, Decimal] = {}
        self.shares: dict[tuple[str, str], int] = {}
        self.blocks: dict[str, FakeBlock] = {}
        self.calls: Counter[str] = Counter()
        self.adjust_keys: set[str] = set()
        # Fail the next N replies of BlockFunds (and of batched share blocks) after doing the work, as if the network lost
        # them. The OMS's channel retries UNAVAILABLE up to 4 times, so 4 make it give up.
        self.lose_next_replies = 0
        self.down = False
        # When set, BlockFunds pauses (after making the block, or before with
        # `hold_before_block`) until `resume` is set, and sets `holding` meanwhile;
        # `abandoned` is set once a paused call is cancelled (its caller went away).
        self.hold = False
        self.hold_before_block = False
        self.holding = asyncio.Event()
        self.resume = asyncio.Event()
        self.abandoned = asyncio.Event()

    def deposit(self, user_id: str, amount: str) -> None:
        self.cash[user_id] = self.cash.get(user_id, Decimal(0)) + Decimal(amount)

    def _check_up(self) -> None:
        if self.down:
            raise Unavailable("svc_funds is down")

    def _lose_reply(self) -> None:
        if self.lose_next_replies > 0:
            self.lose_next_replies -= 1
            raise Unavailable("connection reset after the block was made")

    async def _pause(self) -> None:
        self.hold = False
        self.holding.set()
        try:
            await self.resume.wait()
        except asyncio.CancelledError:
            self.abandoned.set()
            raise

    async def BlockFunds(self, request: funds_pb2.BlockFundsRequest, context: object) -> funds_pb2.Block:
        self.calls["BlockFunds"] += 1
        self._check_up()
        if self.hold and self.hold_before_block:
            await self._pause()
        block = self._block_cash(request)
        if self.hold:
            await self._pause()
        self._lose_reply()
        return block

    async def BatchBlockFunds(
        self, request: funds_pb2.BatchBlockFundsRequest, context: object
    ) -> funds_pb2.BatchBlockFundsResponse:
        self.calls["BatchBlockFunds"] += 1
        self._check_up()
        if self.hold and self.hold_before_block:
            await self._pause()
        results = self._each(request.requests, self._block_cash)
        if self.hold:
            await self._pause()
        self._lose_reply()
        return funds_pb2.BatchBlockFundsResponse(results=results)

    @staticmethod
    def _each(items: Sequence[Any], make: Callable[[Any], funds_pb2.Block]) -> list[funds_pb2.BlockResult]:
        """A batch's results: each item's block, or its error as the single call's."""
        results = []
        for i, item in enumerate(items):
            try:
                results.append(funds_pb2.BlockResult(block=make(item)))
            except ServiceError as error:
                results.append(funds_pb2.BlockResult(error=to_item_status(error, f"requests[{i}].")))
        return results

    def _block_cash(self, request: funds_pb2.BlockFundsRequest) -> funds_pb2.Block:
        user_id = request.parent.removeprefix("users/")
        price = Decimal(request.price.value)
        existing = self.blocks.get(request.order_id)
        if existing is not None:
            if (existing.quantity, existing.price) != (request.quantity, price):
                raise AlreadyExists("block exists with other terms", reason="BLOCK_TERMS_DIFFER")
            return existing.proto()
        if user_id not in self.cash:
            raise NotFound("no such account", reason="ACCOUNT_NOT_FOUND")
        amount = price * request.quantity
        if self.cash[user_id] < amount:
            raise FailedPrecondition(
                f"insufficient funds: {amount} needed, {self.cash[user_id]} available",
                reason="INSUFFICIENT_FUNDS",
                metadata={"available": str(self.cash[user_id]), "required": str(amount)},
            )
        self.cash[user_id] -= amount
        block = FakeBlock(user_id, request.order_id, "CASH", request.symbol, request.quantity, price, amount)
        self.blocks[request.order_id] = block
        return block.proto()

    async def BlockHoldings(
        self, request: funds_pb2.BlockHoldingsRequest, context: object
    ) -> funds_pb2.Block:
        self.calls["BlockHoldings"] += 1
        self._check_up()
        return self._block_shares(request)

    async def BatchBlockHoldings(
        self, request: funds_pb2.BatchBlockHoldingsRequest, context: object
    ) -> funds_pb2.BatchBlockHoldingsResponse:
        self.calls["BatchBlockHoldings"] += 1
        self._check_up()
        results = self._each(request.requests, self._block_shares)
        self._lose_reply()
        return funds_pb2.BatchBlockHoldingsResponse(results=results)

    def _block_shares(self, request: funds_pb2.BlockHoldingsRequest) -> funds_pb2.Block:
        user_id = request.parent.removeprefix("users/")
        existing = self.blocks.get(request.order_id)
        if existing is not None:
            return existing.proto()
        free = self.shares.get((user_id, request.symbol), 0)
        if free < request.quantity:
            raise FailedPrecondition(
                f"insufficient holdings: {request.quantity} needed, {free} free",
                reason="INSUFFICIENT_HOLDINGS",
            )
        self.shares[(user_id, request.symbol)] = free - request.quantity
        block = FakeBlock(
            user_id,
            request.order_id,
            "SHARES",
            request.symbol,
            request.quantity,
            None,
            Decimal(request.quantity),
        )
        self.blocks[request.order_id] = block
        return block.proto()

    def _block(self, name: str) -> FakeBlock:
        order_id = name.rsplit("/", 1)[-1]
        block = self.blocks.get(order_id)
        if block is None:
            raise NotFound(f"no block for {order_id}", reason="BLOCK_NOT_FOUND")
        return block

    async def GetBlock(self, request: funds_pb2.GetBlockRequest, context: object) -> funds_pb2.Block:
        self.calls["GetBlock"] += 1
        self._check_up()
        return self._block(request.name).proto()

    async def AdjustBlock(self, request: funds_pb2.AdjustBlockRequest, context: object) -> funds_pb2.Block:
        self.calls["AdjustBlock"] += 1
        self._check_up()
        block = self._block(request.name)
        if request.request_id in self.adjust_keys:
            return block.proto()
        if not block.active:
            raise FailedPrecondition("closed", reason="BLOCK_CLOSED")
        if block.kind == "CASH":
            price = Decimal(request.price.value) if request.price.value else block.price
            assert price is not None
            needed = price * request.quantity
            delta = needed - block.amount
            if delta > self.cash[block.user_id]:
                raise FailedPrecondition("insufficient funds for the change", reason="INSUFFICIENT_FUNDS")
            self.cash[block.user_id] -= delta
            block.price = price
        else:
            needed = Decimal(request.quantity)
        block.amount, block.quantity = needed, request.quantity
        self.adjust_keys.add(request.request_id)
        return block.proto()

    async def ReleaseBlock(self, request: funds_pb2.ReleaseBlockRequest, context: object) -> funds_pb2.Block:
        self.calls["ReleaseBlock"] += 1
        self._check_up()
        block = self._block(request.name)
        if not block.active:
            raise FailedPrecondition("closed", reason="BLOCK_CLOSED")
        block.active = False
        if block.kind == "CASH":
            self.cash[block.user_id] += block.amount
        return block.proto()


INSTRUMENTS = {
    "INFY": ("0.05", 1, "1530.20"),
    "TCS": ("0.05", 1, "3890.00"),
    "LOTS": ("0.05", 25, "100.00"),
    "NOREF": ("0.05", 1, ""),
}


class FakeMarketData(marketdata_pb2_grpc.MarketDataServiceServicer):
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def GetInstrument(
        self, request: marketdata_pb2.GetInstrumentRequest, context: object
    ) -> marketdata_pb2.Instrument:
        self.calls["GetInstrument"] += 1
        symbol = request.name.removeprefix("instruments/")
        if symbol not in INSTRUMENTS:
            raise NotFound(f"no instrument {symbol}", reason="INSTRUMENT_NOT_FOUND")
        tick, lot, close = INSTRUMENTS[symbol]
        return marketdata_pb2.Instrument(
            name=request.name,
            symbol=symbol,
            tick_size=decimal_pb2.Decimal(value=tick),
            lot_size=lot,
            previous_close=decimal_pb2.Decimal(value=close) if close else None,
        )


class FakeExec(exec_pb2_grpc.ExecutionServiceServicer):
    """Knows the orders whose NEW command it consumed, like svc_exec; an order it never
    received is abandoned (never to be sent) and reported NOT_FOUND / ORDER_NOT_RECEIVED."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.abandoned: set[str] = set()
        self.calls: Counter[str] = Counter()

    async def GetExchangeOrderStatus(
        self, request: exec_pb2.GetExchangeOrderStatusRequest, context: object
    ) -> execution_report_pb2.ExecutionReport:
        self.calls["GetExchangeOrderStatus"] += 1
        if request.order_id not in self.known:
            self.abandoned.add(request.order_id)
            raise NotFound("never received", reason="ORDER_NOT_RECEIVED")
        return execution_report_pb2.ExecutionReport(
            exec_id=f"st-{request.order_id}-{self.calls['GetExchangeOrderStatus']}",
            order_id=request.order_id,
            exec_type=execution_report_pb2.EXEC_TYPE_ORDER_STATUS,
            ord_status=execution_report_pb2.ORD_STATUS_NEW,
            exchange_order_id=f"X-{request.order_id}",
        )

    async def ReconcileOrders(
        self, request: exec_pb2.ReconcileOrdersRequest, context: object
    ) -> exec_pb2.ReconcileOrdersResponse:
        self.calls["ReconcileOrders"] += 1
        return exec_pb2.ReconcileOrdersResponse()


@dataclass
class CommandLog:
    """Takes every order command off the work queue, as svc_exec would."""

    executor: FakeExec
    commands: list[order_command_pb2.OrderCommand] = field(default_factory=list)
    # While set, commands are taken off the queue and lost (never reach the exchange).
    lose_commands: bool = False

    async def handle(self, msgs: Sequence[Msg]) -> None:
        for msg in msgs:
            command = decode(msg, order_command_pb2.OrderCommand)
            if command.order_id in self.executor.abandoned or self.lose_commands:
                continue
            self.commands.append(command)
            if command.WhichOneof("command") == "new_order":
                self.executor.known.add(command.order_id)

    def of(self, order_id: str) -> list[order_command_pb2.OrderCommand]:
        return [c for c in self.commands if c.order_id == order_id]


class FakePortfolio(portfolio_pb2_grpc.PortfolioServiceServicer):
    """svc_funds' portfolio as the risk limits read it: each user's net shares per symbol
    (shown as today's positions) and today's P&L, as a test sets them."""

    def __init__(self) -> None:
        self.shares: dict[str, dict[str, int]] = {}
        self.day_pnl: dict[str, Decimal] = {}
        self.calls = 0

    async def GetPortfolio(
        self, request: portfolio_pb2.GetPortfolioRequest, context: grpc.aio.ServicerContext
    ) -> portfolio_pb2.Portfolio:
        self.calls += 1
        user_id = request.name.split("/")[1]
        shares = self.shares.get(user_id, {})
        positions = [
            portfolio_pb2.Position(symbol=symbol, net_quantity=quantity, realized_pnl=_dec(Decimal(0)))
            for symbol, quantity in shares.items()
        ]
        # Today's P&L sits on one position (a symbol of its own when the user holds none).
        pnl = self.day_pnl.get(user_id, Decimal(0))
        positions.append(
            portfolio_pb2.Position(symbol="PNL", realized_pnl=_dec(pnl), unrealized_pnl=_dec(Decimal(0)))
        )
        return portfolio_pb2.Portfolio(name=request.name, positions=positions)


class FakeServices:
    """The three stand-ins, listening where the stack plan says the real ones would."""

    def __init__(self, plan: StackPlan) -> None:
        self.funds = FakeFunds()
        self.portfolio = FakePortfolio()
        self.marketdata = FakeMarketData()
        self.executor = FakeExec()
        self.command_log = CommandLog(self.executor)
        self._servers: list[GrpcServer] = []
        self._plan = plan
        self._consumer: DurableConsumer | None = None
        self._consuming: asyncio.Task[None] | None = None

    async def start(self, js: JetStreamContext, topology: Topology) -> None:
        registrations = (
            (
                funds_pb2_grpc.add_FundsServiceServicer_to_server,
                self.funds,
                "brokermesh.funds.v1.FundsService",
            ),
            (
                marketdata_pb2_grpc.add_MarketDataServiceServicer_to_server,
                self.marketdata,
                "brokermesh.marketdata.v1.MarketDataService",
            ),
            (
                exec_pb2_grpc.add_ExecutionServiceServicer_to_server,
                self.executor,
                "brokermesh.exec.v1.ExecutionService",
            ),
        )
        # Each stand-in checks its callers as the real service would.
        for service, (register, servicer, name) in zip(
            ("svc_funds", "svc_marketdata", "svc_exec"), registrations, strict=True
        ):
            server = GrpcServer(self._plan.target(service), guard=Guard(self._plan.verifier(service)))
            server.add(register, servicer, name)
            if service == "svc_funds":
                server.add(
                    portfolio_pb2_grpc.add_PortfolioServiceServicer_to_server,
                    self.portfolio,
                    "brokermesh.funds.v1.PortfolioService",
                )
            await server.start()
            self._servers.append(server)
        self._consumer = DurableConsumer(
            js,
            stream=topology.order_commands_stream,
            durable="fake_exec",
            filter_subject=topology.wildcard(topology.order_command_subject("x")),
            handler=self.command_log.handle,
            fetch_timeout=0.2,
            max_deliver=1000,
        )
        self._consuming = asyncio.create_task(self._consumer.run())

    async def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.stop()
        if self._consuming is not None:
            await asyncio.wait([self._consuming], timeout=5)
        for server in self._servers:
            await server.stop(0)


def rpc_code(error: BaseException) -> grpc.StatusCode:
    assert isinstance(error, grpc.aio.AioRpcError), error
    return error.code()
