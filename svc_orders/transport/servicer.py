"""OrdersService over gRPC: parse names and messages, call a use case, map the result."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from typing import TypeVar

import grpc

from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import invariants_pb2
from svc_orders.app.controls import TradingControlsView
from svc_orders.app.entry import OrderEntry
from svc_orders.app.fanout import OrderEventFanout, StreamFellBehind
from svc_orders.app.gtt import Gtts
from svc_orders.app.queries import OrderQueries
from svc_orders.app.risk_limits import RiskLimitBook, cancel_working, parse_scope, scope_filter
from svc_orders.domain import validation
from svc_orders.domain.model import Order
from svc_orders.domain.risk import TradingControls
from svc_orders.domain.validation import ModificationDraft, OrderDraft
from svc_orders.transport import wire
from svc_runtime import context, names
from svc_runtime.errors import InvalidArgument, ResourceExhausted
from svc_runtime.tags import check_tag

log = logging.getLogger(__name__)


T = TypeVar("T")


def _parent(parent: str, *, allow_all: bool = False) -> str | None:
    """`users/{user}` → the user id; `users/-` → None where listing every user is allowed."""
    return names.user_or_every(parent) if allow_all else names.user_of(parent)


def _order_name(name: str) -> tuple[str, str]:
    user, order = names.pattern("users/{user}/orders/{order}").ids(name)
    return user, order


def _enum(convert: Callable[[int], T | None], value: int, field: str) -> T | None:
    try:
        return convert(value)
    except (KeyError, ValueError) as exc:
        raise InvalidArgument(
            f"{field} has an unknown value {value}", reason="INVALID_ENUM", field=field
        ) from exc


def _draft(o: orders_pb2.Order) -> OrderDraft:
    return OrderDraft(
        symbol=o.symbol,
        side=_enum(wire.side_from, o.side, "order.side"),
        type=_enum(wire.type_from, o.type, "order.type"),
        time_in_force=_enum(wire.tif_from, o.time_in_force, "order.time_in_force"),
        product=_enum(wire.product_from, o.product, "order.product"),
        quantity=o.quantity,
        limit_price=o.limit_price.value if o.HasField("limit_price") else "",
        stop_price=o.stop_price.value if o.HasField("stop_price") else "",
        expire_date=o.expire_date,
        tag=check_tag(o.tag, "order.tag"),
        contingency=_enum(wire.contingency_from, o.contingent.kind, "order.contingent.kind"),
        exit_target_price=o.contingent.target_price.value if o.contingent.HasField("target_price") else "",
        exit_stop_price=o.contingent.stop_loss_price.value
        if o.contingent.HasField("stop_loss_price")
        else "",
        trail_amount=o.trailing_stop.amount.value if o.trailing_stop.HasField("amount") else "",
        trail_percent=o.trailing_stop.percent.value if o.trailing_stop.HasField("percent") else "",
        display_quantity=o.display_quantity,
    )


def _gtt_name(name: str) -> tuple[str, str]:
    user, gtt = names.pattern("users/{user}/gtts/{gtt}").ids(name)
    return user, gtt


def _optional_request_id(value: str) -> str:
    return validation.request_id(value) if value else context.new_request_id()


class OrdersServicer(orders_pb2_grpc.OrdersServiceServicer):
    def __init__(
        self,
        entry: OrderEntry,
        queries: OrderQueries,
        controls: TradingControlsView,
        fanout: OrderEventFanout,
        *,
        risk_limits: RiskLimitBook,
        gtts: Gtts,
    ) -> None:
        self.gtts = gtts
        self.entry = entry
        self.queries = queries
        self.controls = controls
        self.fanout = fanout
        self.risk_limits = risk_limits

    async def PlaceOrder(
        self, request: orders_pb2.PlaceOrderRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        user_id = _parent(request.parent)
        assert user_id is not None
        request_id = validation.request_id(request.request_id)
        order = await self.entry.place(user_id, _draft(request.order), request_id)
        return wire.order_to_proto(order)

    # --- GTT ----------------------------------------------------------------------------------
    async def CreateGtt(
        self, request: orders_pb2.CreateGttRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.Gtt:
        user_id = _parent(request.parent)
        assert user_id is not None
        request_id = validation.request_id(request.request_id)
        if not request.gtt.HasField("trigger_price"):
            raise InvalidArgument(
                "gtt.trigger_price is required", reason="MISSING_TRIGGER_PRICE", field="gtt.trigger_price"
            )
        expire = (
            request.gtt.expire_time.ToDatetime(tzinfo=UTC) if request.gtt.HasField("expire_time") else None
        )
        gtt = await self.gtts.create(
            user_id, request.gtt.trigger_price.value, _draft(request.gtt.order), expire, request_id
        )
        return wire.gtt_to_proto(gtt)

    async def GetGtt(
        self, request: orders_pb2.GetGttRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.Gtt:
        return wire.gtt_to_proto(await self.gtts.get(*_gtt_name(request.name)))

    async def ListGtts(
        self, request: orders_pb2.ListGttsRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.ListGttsResponse:
        user_id = _parent(request.parent)
        assert user_id is not None
        return orders_pb2.ListGttsResponse(
            gtts=[wire.gtt_to_proto(g) for g in await self.gtts.for_user(user_id)]
        )

    async def CancelGtt(
        self, request: orders_pb2.CancelGttRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.Gtt:
        return wire.gtt_to_proto(await self.gtts.cancel(*_gtt_name(request.name)))

    async def PreviewOrder(
        self, request: orders_pb2.PreviewOrderRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.OrderPreview:
        user_id = _parent(request.parent)
        assert user_id is not None
        return wire.preview_to_proto(await self.entry.preview(user_id, _draft(request.order)))

    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        user_id, order_id = _order_name(request.name)
        return wire.order_to_proto(await self.queries.get(user_id, order_id))

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        user_id = _parent(request.parent, allow_all=True)
        statuses = []
        for value in request.statuses:
            status = _enum(wire.status_from, value, "statuses")
            if status is None:
                raise InvalidArgument("statuses must not contain UNSPECIFIED", field="statuses")
            statuses.append(status)
        orders, token = await self.queries.list_orders(
            user_id, statuses, request.page_size, request.page_token, tag=check_tag(request.tag)
        )
        return orders_pb2.ListOrdersResponse(
            orders=[wire.order_to_proto(o) for o in orders], next_page_token=token
        )

    async def CancelOrder(
        self, request: orders_pb2.CancelOrderRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        user_id, order_id = _order_name(request.name)
        order = await self.entry.cancel(user_id, order_id, _optional_request_id(request.request_id))
        return wire.order_to_proto(order)

    async def ModifyOrder(
        self, request: orders_pb2.ModifyOrderRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        user_id, order_id = _order_name(request.name)
        if request.quantity < 0:
            raise InvalidArgument("quantity must be positive", reason="NOT_POSITIVE", field="quantity")
        draft = ModificationDraft(
            quantity=request.quantity,
            limit_price=request.limit_price.value if request.HasField("limit_price") else "",
            stop_price=request.stop_price.value if request.HasField("stop_price") else "",
        )
        order = await self.entry.modify(user_id, order_id, draft, _optional_request_id(request.request_id))
        return wire.order_to_proto(order)

    async def ListTrades(
        self, request: orders_pb2.ListTradesRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.ListTradesResponse:
        user_id = _parent(request.parent, allow_all=True)
        if request.order_id:
            names.resource_id(request.order_id, "order_id")
        trades, token = await self.queries.list_trades(
            user_id, request.order_id, request.page_size, request.page_token, tag=check_tag(request.tag)
        )
        return orders_pb2.ListTradesResponse(
            trades=[wire.trade_to_proto(fill, order) for fill, order in trades], next_page_token=token
        )

    async def StreamOrderUpdates(
        self, request: orders_pb2.StreamOrderUpdatesRequest, context_: grpc.aio.ServicerContext
    ) -> AsyncIterator[orders_pb2.StreamOrderUpdatesResponse]:
        user_id = _parent(request.parent)
        assert user_id is not None
        # Subscribe before replaying, so nothing committed meanwhile falls in between; an
        # event seen in both is sent once.
        subscription = self.fanout.subscribe(user_id)
        try:
            replayed: set[str] = set()
            if request.after_event_id:
                async for record in self.queries.replay(user_id, request.after_event_id):
                    event = orders_pb2.OrderEvent()
                    event.ParseFromString(record.payload)
                    replayed.add(record.event_id)
                    yield orders_pb2.StreamOrderUpdatesResponse(event=event)
            while True:
                try:
                    event = await subscription.next()
                except StreamFellBehind:
                    raise ResourceExhausted(
                        "the stream fell behind and was closed; reconnect with after_event_id",
                        reason="STREAM_FELL_BEHIND",
                    ) from None
                if event.event_id in replayed:
                    continue
                yield orders_pb2.StreamOrderUpdatesResponse(event=event)
        finally:
            subscription.close()

    async def CheckInvariants(
        self, request: orders_pb2.CheckInvariantsRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.CheckInvariantsResponse:
        violations, checked = await self.queries.check_invariants()
        return orders_pb2.CheckInvariantsResponse(
            violations=[
                invariants_pb2.InvariantViolation(invariant=i, user_id=u, detail=d) for i, u, d in violations
            ],
            orders_checked=checked,
        )

    async def ListAuditRecords(
        self, request: orders_pb2.ListAuditRecordsRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.ListAuditRecordsResponse:
        order_id: str | None = None
        if "/orders/" in request.parent:
            user_id, order_id = _order_name(request.parent)
        else:
            user_id = _parent(request.parent, allow_all=True)
        records, token = await self.queries.list_audit(
            user_id, order_id, request.page_size, request.page_token
        )
        return orders_pb2.ListAuditRecordsResponse(
            records=[wire.audit_record_to_proto(r) for r in records], next_page_token=token
        )

    async def GetTradingControls(
        self, request: orders_pb2.GetTradingControlsRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.TradingControls:
        if request.name and request.name != wire.CONTROLS_NAME:
            raise InvalidArgument(f"name must be {wire.CONTROLS_NAME}", reason="INVALID_NAME", field="name")
        return wire.controls_to_proto(await self.controls.refresh())

    async def UpdateTradingControls(
        self, request: orders_pb2.UpdateTradingControlsRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.TradingControls:
        given = request.trading_controls
        if given.name and given.name != wire.CONTROLS_NAME:
            raise InvalidArgument(
                f"trading_controls.name must be {wire.CONTROLS_NAME}",
                reason="INVALID_NAME",
                field="trading_controls.name",
            )
        requested = TradingControls(
            trading_halted=given.trading_halted,
            halt_reason=given.halt_reason,
            halted_symbols=frozenset(given.halted_symbols),
        )
        request_id = _optional_request_id(request.request_id)
        paths = list(request.update_mask.paths)
        updated = await self.controls.update(requested, paths, request_id)
        cancelled = []
        if updated.trading_halted and (not paths or "trading_halted" in paths):
            # The kill switch also takes what is already working off the market.
            cancelled = await self._cancel_working(None, None, f"kill-{request_id}")
        return wire.controls_to_proto(updated, cancelled)

    async def GetRiskLimits(
        self, request: orders_pb2.GetRiskLimitsRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.RiskLimits:
        scope = parse_scope(request.name)
        await self.risk_limits.refresh()
        return wire.limits_to_proto(self.risk_limits.get(scope))

    async def UpdateRiskLimits(
        self, request: orders_pb2.UpdateRiskLimitsRequest, context_: grpc.aio.ServicerContext
    ) -> orders_pb2.RiskLimits:
        scope = parse_scope(request.risk_limits.name)
        requested = wire.limits_from_proto(request.risk_limits, scope)
        request_id = _optional_request_id(request.request_id)
        paths = list(request.update_mask.paths)
        updated = await self.risk_limits.update(scope, requested, paths, request_id)
        cancelled = []
        if updated.trading_halted and (not paths or "trading_halted" in paths):
            user_id, product = scope_filter(scope)
            cancelled = await self._cancel_working(user_id, product, f"halt-{request_id}")
        return wire.limits_to_proto(updated, cancelled)

    async def _cancel_working(self, user_id: str | None, product: str | None, request_id: str) -> list[Order]:
        working = await self.risk_limits.store.working_orders(user_id, product)
        return await cancel_working(working, self.entry.cancel, request_id)
