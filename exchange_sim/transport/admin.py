"""ExchangeAdminService: thin mapping between the admin protos and the exchange app."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf import timestamp_pb2

from brokermesh.exchange.v1 import exchange_admin_pb2 as pb
from brokermesh.exchange.v1 import exchange_admin_pb2_grpc
from brokermesh.type.v1 import trading_pb2
from exchange_sim.app.exchange import BadRequestError, Exchange, NotFoundError
from exchange_sim.app.order_entry import SessionOrder
from exchange_sim.domain import matching as me
from svc_runtime import decimals
from svc_runtime.errors import InvalidArgument, NotFound

SIDES = {me.BUY: trading_pb2.SIDE_BUY, me.SELL: trading_pb2.SIDE_SELL}
SIDE_OF = {trading_pb2.SIDE_BUY: me.BUY, trading_pb2.SIDE_SELL: me.SELL}
ORDER_TYPES = {
    me.LIMIT: trading_pb2.ORDER_TYPE_LIMIT,
    me.MARKET: trading_pb2.ORDER_TYPE_MARKET,
    me.STOP: trading_pb2.ORDER_TYPE_STOP,
    me.STOP_LIMIT: trading_pb2.ORDER_TYPE_STOP_LIMIT,
}
TIMES_IN_FORCE = {
    me.DAY: trading_pb2.TIME_IN_FORCE_DAY,
    me.IOC: trading_pb2.TIME_IN_FORCE_IOC,
    me.FOK: trading_pb2.TIME_IN_FORCE_FOK,
}
TIME_IN_FORCE_OF = {v: k for k, v in TIMES_IN_FORCE.items()}
DEFAULT_DEPTH = 5
MAX_DEPTH = 100
DEFAULT_PARTICIPANT = "TEST"


def _order(record: SessionOrder) -> pb.ExchangeOrder:
    order = record.order
    to_price = record.instrument.to_price if record.instrument is not None else None
    message = pb.ExchangeOrder(
        exchange_order_id=record.exchange_order_id,
        cl_ord_id=record.cl_ord_id,
        symbol=order.symbol,
        side=SIDES.get(order.side, trading_pb2.SIDE_UNSPECIFIED),
        quantity=order.quantity,
        filled_quantity=order.cum,
        leaves_quantity=order.leaves,
        ord_status=record.ord_status,
        average_price=decimals.to_proto(record.average_price()),
        sender_comp_id=record.session,
        order_type=ORDER_TYPES.get(order.order_type, trading_pb2.ORDER_TYPE_UNSPECIFIED),
        time_in_force=TIMES_IN_FORCE.get(order.tif, trading_pb2.TIME_IN_FORCE_UNSPECIFIED),
        account=record.account,
        text=record.text,
    )
    if to_price is not None and order.price is not None:
        message.price.CopyFrom(decimals.to_proto(to_price(order.price)))
    if to_price is not None and order.stop_price is not None:
        message.stop_price.CopyFrom(decimals.to_proto(to_price(order.stop_price)))
    return message


class ExchangeAdminServicer(exchange_admin_pb2_grpc.ExchangeAdminServiceServicer):
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    async def ListExchangeOrders(
        self, request: pb.ListExchangeOrdersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExchangeOrdersResponse:
        records = self.exchange.list_orders(request.sender_comp_id or None)
        response = pb.ListExchangeOrdersResponse(orders=[_order(r) for r in records])
        response.answers_since.FromDatetime(datetime.fromtimestamp(self.exchange.answers_since(), UTC))
        return response

    async def GetOrderBook(
        self, request: pb.GetOrderBookRequest, context: grpc.aio.ServicerContext
    ) -> pb.OrderBook:
        if request.depth < 0 or request.depth > MAX_DEPTH:
            raise InvalidArgument(f"depth must be between 0 and {MAX_DEPTH}", field="depth")
        try:
            view = self.exchange.order_book(request.symbol, request.depth or DEFAULT_DEPTH)
        except NotFoundError as error:
            raise NotFound(str(error), reason="INSTRUMENT_NOT_FOUND") from None
        book = pb.OrderBook(
            symbol=view.symbol,
            bids=[
                pb.PriceLevel(price=decimals.to_proto(p), quantity=q, order_count=n) for p, q, n in view.bids
            ],
            asks=[
                pb.PriceLevel(price=decimals.to_proto(p), quantity=q, order_count=n) for p, q, n in view.asks
            ],
        )
        if view.last_price is not None:
            book.last_price.CopyFrom(decimals.to_proto(view.last_price))
        return book

    async def HaltTrading(
        self, request: pb.HaltTradingRequest, context: grpc.aio.ServicerContext
    ) -> pb.TradingState:
        try:
            self.exchange.halt(request.symbol or None, request.reason)
        except NotFoundError as error:
            raise NotFound(str(error), reason="INSTRUMENT_NOT_FOUND") from None
        return self._state()

    async def ResumeTrading(
        self, request: pb.ResumeTradingRequest, context: grpc.aio.ServicerContext
    ) -> pb.TradingState:
        try:
            self.exchange.resume(request.symbol or None)
        except NotFoundError as error:
            raise NotFound(str(error), reason="INSTRUMENT_NOT_FOUND") from None
        return self._state()

    async def GetTradingState(
        self, request: pb.GetTradingStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.TradingState:
        return self._state()

    async def SetScenario(
        self, request: pb.SetScenarioRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetScenarioResponse:
        shock = None
        if request.HasField("shock_market_percent") and request.shock_market_percent.value:
            shock = decimals.parse_decimal(
                request.shock_market_percent.value, field="shock_market_percent", max_places=2
            )
            if not -50 <= shock <= 50:
                raise InvalidArgument(
                    "shock_market_percent must be between -50 and 50", field="shock_market_percent"
                )
        try:
            self.exchange.set_scenario(
                reject_next_orders=request.reject_next_orders,
                reject_text=request.reject_text,
                delay_reports_ms=request.delay_reports_ms,
                drop_session=request.drop_session,
                pause_market_makers=request.pause_market_makers,
                shock_market_percent=shock,
            )
        except BadRequestError as error:
            raise InvalidArgument(str(error), field=error.field) from None
        except NotFoundError as error:
            raise NotFound(str(error), reason="UNKNOWN_SESSION") from None
        return pb.SetScenarioResponse()

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExchangeOrder:
        side = SIDE_OF.get(request.side)
        if side is None:
            raise InvalidArgument("side must be BUY or SELL", field="side")
        if request.quantity <= 0:
            raise InvalidArgument("quantity must be positive", field="quantity")
        if request.order_type == trading_pb2.ORDER_TYPE_LIMIT:
            order_type = me.LIMIT
            price = decimals.from_proto(request.price, field="price", max_places=2, positive=True)
        elif request.order_type == trading_pb2.ORDER_TYPE_MARKET:
            order_type, price = me.MARKET, None
        else:
            raise InvalidArgument("order_type must be LIMIT or MARKET", field="order_type")
        tif = TIME_IN_FORCE_OF.get(request.time_in_force, me.DAY)
        try:
            record = self.exchange.place(
                request.participant or DEFAULT_PARTICIPANT,
                symbol=request.symbol,
                side=side,
                quantity=request.quantity,
                price=price,
                order_type=order_type,
                tif=tif,
            )
        except NotFoundError as error:
            raise NotFound(str(error), reason="INSTRUMENT_NOT_FOUND") from None
        except BadRequestError as error:
            raise InvalidArgument(str(error), field=error.field) from None
        return _order(record)

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        return pb.ListSessionsResponse(
            sessions=[
                pb.FixSession(
                    session_id=state.session_id,
                    counterparty=state.counterparty,
                    role=state.role,
                    logged_on=state.logged_on,
                    next_sender_seq_num=state.next_sender_seq,
                    next_target_seq_num=state.next_target_seq,
                )
                for state in self.exchange.fix_sessions()
            ]
        )

    def _state(self) -> pb.TradingState:
        status = self.exchange.status()
        state = pb.TradingState(
            market_halted=status.market_halt is not None,
            halted_symbols=sorted(status.halted_symbols),
            session_open=status.session_open,
            market_halt_reason=status.market_halt or "",
            circuit_breaker_level=status.circuit_level,
        )
        if status.index_value is not None:
            state.index_value.CopyFrom(decimals.to_proto(status.index_value))
        if status.index_change_percent is not None:
            state.index_change_percent.CopyFrom(decimals.to_proto(status.index_change_percent))
        if status.halt_ends_at is not None:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(datetime.fromtimestamp(status.halt_ends_at, UTC))
            state.halt_end_time.CopyFrom(stamp)
        if status.phase is not None:
            state.phase = pb.MarketPhase.Value(f"MARKET_PHASE_{status.phase}")
        if status.trading_date is not None:
            state.trading_date = status.trading_date.isoformat()
        if status.market_time is not None:
            state.market_time.FromDatetime(status.market_time.astimezone(UTC))
        return state
