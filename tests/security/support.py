"""Calls a test makes the way an outside client would: any method by name, any credential."""

from __future__ import annotations

from decimal import Decimal

import grpc

from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_runtime.stack import Stack
from tests.security.methods import Method
from tests.support.grpc import user_channel
from tests.support.polling import eventually


async def status_of(
    channel: grpc.aio.Channel, method: Method, request: object = None, metadata: tuple = ()
) -> grpc.StatusCode:
    """The status a call of `method` ends with (a stream is read to its end or its error)."""
    request = request if request is not None else method.request()
    options = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": method.response_class().FromString,
    }
    if method.streams:
        call = channel.unary_stream(method.path, **options)(request, metadata=metadata, timeout=5)
    else:
        call = channel.unary_unary(method.path, **options)(request, metadata=metadata, timeout=5)
    return await call.code()


async def last_price(stack: Stack, user_id: str, symbol: str) -> Decimal:
    async with user_channel(stack.plan, "svc_marketdata", user_id) as ch:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(ch)

        async def quoted() -> Decimal | None:
            reply = await stub.BatchGetQuotes(
                marketdata_pb2.BatchGetQuotesRequest(symbols=[symbol]), timeout=5
            )
            value = reply.quotes[0].last_price.value if reply.quotes else ""
            return Decimal(value) if value else None

        return await eventually(quoted, timeout=60)


async def place_resting_buy(stack: Stack, user_id: str, request_id: str) -> orders_pb2.Order:
    """A limit buy 5% under the market, as the user: it rests in the book."""
    price = await last_price(stack, user_id, "INFY") * Decimal("0.95")
    price = (price / Decimal("0.05")).to_integral_value() * Decimal("0.05")
    async with user_channel(stack.plan, "svc_orders", user_id) as ch:
        return await orders_pb2_grpc.OrdersServiceStub(ch).PlaceOrder(
            orders_pb2.PlaceOrderRequest(
                parent=f"users/{user_id}",
                order=orders_pb2.Order(
                    symbol="INFY",
                    side=trading_pb2.SIDE_BUY,
                    type=trading_pb2.ORDER_TYPE_LIMIT,
                    quantity=1,
                    limit_price=decimal_pb2.Decimal(value=str(price)),
                ),
                request_id=request_id,
            ),
            timeout=10,
        )
