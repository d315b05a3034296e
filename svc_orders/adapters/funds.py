"""svc_funds over gRPC: blocks for orders. Its refusals (INSUFFICIENT_FUNDS, …) pass
through with their details; a call that may or may not have arrived becomes UNAVAILABLE or
DEADLINE_EXCEEDED, which the order path treats as an unknown outcome."""

from __future__ import annotations

from collections.abc import Awaitable
from decimal import Decimal

import grpc

from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc, portfolio_pb2, portfolio_pb2_grpc
from brokermesh.type.v1 import decimal_pb2
from svc_orders.app.ports import BlockQuote
from svc_orders.app.risk_limits import Standing
from svc_orders.domain.model import Order, OrderSpec
from svc_orders.transport.wire import product_to, side_to
from svc_runtime import context
from svc_runtime.batching import Coalescer
from svc_runtime.decimals import to_proto
from svc_runtime.errors import ServiceError, from_item_status, reraise_remote

BLOCK_CALLS_IN_FLIGHT = 4  # per kind of block


class FundsClient:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 5.0) -> None:
        self.stub = funds_pb2_grpc.FundsServiceStub(channel)
        self.timeout = timeout
        # Concurrent placements' blocks travel together (BatchBlockFunds for BUY orders,
        # BatchBlockHoldings for SELL orders): one call goes at once, and those arriving
        # while calls are out share the next one.
        self._cash_blocks: Coalescer[funds_pb2.BlockFundsRequest, None] = Coalescer(
            self._send_cash_blocks, max_in_flight=BLOCK_CALLS_IN_FLIGHT
        )
        self._share_blocks: Coalescer[funds_pb2.BlockHoldingsRequest, None] = Coalescer(
            self._send_share_blocks, max_in_flight=BLOCK_CALLS_IN_FLIGHT
        )

    async def block_funds(self, order: Order, price: Decimal) -> None:
        await self._cash_blocks.submit(
            funds_pb2.BlockFundsRequest(
                parent=f"users/{order.user_id}",
                order_id=order.order_id,
                symbol=order.symbol,
                quantity=order.quantity,
                price=to_proto(price),
                product=product_to(order.product),
                request_id=context.request_id(),
                tag=order.tag,
            )
        )

    async def block_holdings(self, order: Order) -> None:
        await self._share_blocks.submit(
            funds_pb2.BlockHoldingsRequest(
                parent=f"users/{order.user_id}",
                order_id=order.order_id,
                symbol=order.symbol,
                quantity=order.quantity,
                # Sell-side charges differ by product (delivery vs intraday).
                product=product_to(order.product),
                request_id=context.request_id(),
                tag=order.tag,
            )
        )

    async def _send_cash_blocks(
        self, requests: list[funds_pb2.BlockFundsRequest]
    ) -> list[ServiceError | None]:
        return await self._sent(
            self.stub.BatchBlockFunds(
                funds_pb2.BatchBlockFundsRequest(parent="users/-", requests=requests), timeout=self.timeout
            )
        )

    async def _send_share_blocks(
        self, requests: list[funds_pb2.BlockHoldingsRequest]
    ) -> list[ServiceError | None]:
        return await self._sent(
            self.stub.BatchBlockHoldings(
                funds_pb2.BatchBlockHoldingsRequest(parent="users/-", requests=requests), timeout=self.timeout
            )
        )

    @staticmethod
    async def _sent(
        call: Awaitable[funds_pb2.BatchBlockFundsResponse | funds_pb2.BatchBlockHoldingsResponse],
    ) -> list[ServiceError | None]:
        """Each item's refusal, as the single call would have raised it (None: blocked)."""
        try:
            response = await call
        except grpc.aio.AioRpcError as error:
            raise reraise_remote(error) from error
        return [from_item_status(r.error) if r.HasField("error") else None for r in response.results]

    async def quote_block(self, user_id: str, spec: OrderSpec, price: Decimal | None) -> BlockQuote:
        request = funds_pb2.PreviewBlockRequest(
            parent=f"users/{user_id}",
            side=side_to(spec.side),
            symbol=spec.symbol,
            quantity=spec.quantity,
            price=to_proto(price),
            product=product_to(spec.product),
        )
        try:
            preview = await self.stub.PreviewBlock(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise reraise_remote(error) from error
        return BlockQuote(
            amount=Decimal(preview.amount.value),
            order_value=Decimal(preview.order_value.value) if preview.HasField("order_value") else None,
            charges=tuple((c.name, Decimal(c.amount.value)) for c in preview.charges),
            charges_total=Decimal(preview.charges_total.value),
            available=Decimal(preview.available.value),
            refusal=from_item_status(preview.refusal) if preview.HasField("refusal") else None,
        )

    async def block_active(self, user_id: str, order_id: str) -> bool:
        try:
            block = await self.stub.GetBlock(
                funds_pb2.GetBlockRequest(name=f"users/{user_id}/blocks/{order_id}"), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise reraise_remote(error) from error
        return block.state == funds_pb2.BLOCK_STATE_ACTIVE

    async def adjust_block(
        self, user_id: str, order_id: str, quantity: int, price: Decimal | None, request_id: str
    ) -> None:
        request = funds_pb2.AdjustBlockRequest(
            name=f"users/{user_id}/blocks/{order_id}",
            quantity=quantity,
            price=to_proto(price),
            request_id=request_id,
        )
        try:
            await self.stub.AdjustBlock(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise reraise_remote(error) from error

    async def release_block(self, user_id: str, order_id: str, reason: str) -> None:
        request = funds_pb2.ReleaseBlockRequest(name=f"users/{user_id}/blocks/{order_id}", reason=reason)
        try:
            await self.stub.ReleaseBlock(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise reraise_remote(error) from error


class PortfolioClient:
    """svc_funds' portfolio: what the position and daily-loss limits measure."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 5.0) -> None:
        self.stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
        self.timeout = timeout

    async def standing(self, user_id: str, symbol: str) -> Standing:
        try:
            portfolio = await self.stub.GetPortfolio(
                portfolio_pb2.GetPortfolioRequest(name=f"users/{user_id}/portfolio"), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise reraise_remote(error) from error
        held = sum(h.quantity for h in portfolio.holdings if h.symbol == symbol)
        traded = sum(p.net_quantity for p in portfolio.positions if p.symbol == symbol)
        day_pnl = sum(
            (_amount(p.realized_pnl) + _amount(p.unrealized_pnl) for p in portfolio.positions), Decimal(0)
        )
        return Standing(position=held + traded, day_pnl=day_pnl)


def _amount(value: decimal_pb2.Decimal) -> Decimal:
    return Decimal(value.value) if value.value else Decimal(0)
