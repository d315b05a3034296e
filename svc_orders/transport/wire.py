"""Domain objects ↔ their protobuf forms: gRPC responses, the order events and commands the
outbox publishes, and the execution reports the consumer reads. The one place the OMS's
domain meets protobuf."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

from google.protobuf import timestamp_pb2

from brokermesh.exec.v1 import execution_report_pb2
from brokermesh.orders.v1 import order_command_pb2, orders_pb2
from brokermesh.type.v1 import charges_pb2, decimal_pb2, trading_pb2
from svc_orders.app.entry import OrderPreview
from svc_orders.app.ports import CommandKind, ReportEnvelope
from svc_orders.domain.gtt import Gtt
from svc_orders.domain.limits import LimitSet, RiskCheck
from svc_orders.domain.model import (
    ORDER_TYPES,
    Contingency,
    EventType,
    ExchangeReport,
    ExchangeStatus,
    ExecType,
    ExitTerms,
    Fill,
    Leg,
    Order,
    OrderType,
    Product,
    Side,
    Status,
    TimeInForce,
)
from svc_orders.domain.risk import TradingControls
from svc_runtime.decimals import format_decimal, parse_decimal
from svc_runtime.errors import to_item_status
from svc_runtime.ids import new_id

CONTROLS_NAME = "tradingControls"


E = TypeVar("E", bound=StrEnum)


def _to_enum(value: int, names: dict[int, str], prefix: str, enum: type[E]) -> E | None:
    if value not in names:
        raise ValueError(f"unknown enum value {value}")
    name = names[value]
    if name.endswith("_UNSPECIFIED"):
        return None
    return enum(name.removeprefix(prefix))


def _names(enum_wrapper: object) -> dict[int, str]:
    return {number: name for name, number in enum_wrapper.items()}  # type: ignore[attr-defined]


_SIDE = _names(trading_pb2.Side)
_TYPE = _names(trading_pb2.OrderType)
_TIF = _names(trading_pb2.TimeInForce)
_PRODUCT = _names(trading_pb2.Product)
_EXEC_TYPE = _names(execution_report_pb2.ExecType)
_ORD_STATUS = _names(execution_report_pb2.OrdStatus)
_STATUS = _names(orders_pb2.OrderStatus)
_CONTINGENCY = _names(orders_pb2.ContingencyKind)
_LEG = _names(orders_pb2.Leg)


def side_from(value: int) -> Side | None:
    return _to_enum(value, _SIDE, "SIDE_", Side)


def type_from(value: int) -> OrderType | None:
    return _to_enum(value, _TYPE, "ORDER_TYPE_", OrderType)


def tif_from(value: int) -> TimeInForce | None:
    return _to_enum(value, _TIF, "TIME_IN_FORCE_", TimeInForce)


def product_from(value: int) -> Product | None:
    return _to_enum(value, _PRODUCT, "PRODUCT_", Product)


def status_from(value: int) -> Status | None:
    return _to_enum(value, _STATUS, "ORDER_STATUS_", Status)


def contingency_from(value: int) -> Contingency | None:
    return _to_enum(value, _CONTINGENCY, "CONTINGENCY_KIND_", Contingency)


def contingent_to(terms: ExitTerms) -> orders_pb2.ContingentTerms | None:
    if terms.contingency is Contingency.NONE:
        return None
    return orders_pb2.ContingentTerms(
        kind=orders_pb2.ContingencyKind.Value(f"CONTINGENCY_KIND_{terms.contingency.value}"),
        target_price=_decimal(terms.target_price),
        stop_loss_price=_decimal(terms.stop_price),
    )


def leg_to(leg: Leg) -> int:
    return orders_pb2.Leg.Value(f"LEG_{leg.value}")


def side_to(side: Side) -> int:
    return trading_pb2.Side.Value(f"SIDE_{side}")


def type_to(order_type: OrderType) -> int:
    return trading_pb2.OrderType.Value(f"ORDER_TYPE_{order_type}")


def tif_to(tif: TimeInForce) -> int:
    return trading_pb2.TimeInForce.Value(f"TIME_IN_FORCE_{tif}")


def product_to(product: Product) -> int:
    return trading_pb2.Product.Value(f"PRODUCT_{product}")


def status_to(status: Status) -> int:
    return orders_pb2.OrderStatus.Value(f"ORDER_STATUS_{status.public}")


def event_type_to(event: EventType) -> int:
    return orders_pb2.OrderEventType.Value(f"ORDER_EVENT_TYPE_{event}")


def _decimal(value: Decimal | None) -> decimal_pb2.Decimal | None:
    return None if value is None else decimal_pb2.Decimal(value=format_decimal(value))


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def order_name(user_id: str, order_id: str) -> str:
    return f"users/{user_id}/orders/{order_id}"


def order_to_proto(order: Order) -> orders_pb2.Order:
    return orders_pb2.Order(
        name=order_name(order.user_id, order.order_id),
        order_id=order.order_id,
        user_id=order.user_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=side_to(order.side),
        type=type_to(order.type),
        time_in_force=tif_to(order.time_in_force),
        product=product_to(order.product),
        quantity=order.quantity,
        limit_price=_decimal(order.limit_price),
        stop_price=_decimal(order.stop_price),
        status=status_to(order.status),
        filled_quantity=order.filled_quantity,
        leaves_quantity=order.leaves_quantity,
        average_price=_decimal(order.average_price),
        status_reason=order.status_reason,
        version=order.version,
        create_time=timestamp(order.create_time),
        update_time=timestamp(order.update_time),
        exchange_order_id=order.exchange_order_id,
        protection_price=_decimal(order.protection_price),
        expire_date=order.expire_date.isoformat() if order.expire_date else "",
        tag=order.tag,
        contingent=contingent_to(order.exit),
        leg=leg_to(order.leg),
        parent_order_id=order.parent_order_id,
        oco_group_id=order.oco_group,
        trailing_stop=None
        if order.trail is None
        else orders_pb2.TrailingStop(
            amount=_decimal(order.trail.amount), percent=_decimal(order.trail.percent)
        ),
        display_quantity=order.display_quantity,
    )


def gtt_to_proto(gtt: Gtt) -> orders_pb2.Gtt:
    o = gtt.order
    return orders_pb2.Gtt(
        name=f"users/{gtt.user_id}/gtts/{gtt.gtt_id}",
        gtt_id=gtt.gtt_id,
        user_id=gtt.user_id,
        trigger_price=_decimal(gtt.trigger_price),
        direction=orders_pb2.GttDirection.Value(f"GTT_DIRECTION_{gtt.direction.value}"),
        order=orders_pb2.Order(
            symbol=o.symbol,
            side=side_to(o.side),
            type=type_to(o.type),
            time_in_force=tif_to(o.time_in_force),
            product=product_to(o.product),
            quantity=o.quantity,
            limit_price=_decimal(o.limit_price),
        ),
        status=orders_pb2.GttStatus.Value(f"GTT_STATUS_{gtt.status.value}"),
        order_id=gtt.order_id,
        status_reason=gtt.status_reason,
        create_time=timestamp(gtt.create_time),
        expire_time=timestamp(gtt.expire_time),
        trigger_time=timestamp(gtt.trigger_time),
        triggered_at_price=_decimal(gtt.triggered_at_price),
    )


def preview_to_proto(preview: OrderPreview) -> orders_pb2.OrderPreview:
    block = preview.block
    message = orders_pb2.OrderPreview(
        acceptable=preview.refusal is None,
        refusal=None if preview.refusal is None else to_item_status(preview.refusal),
        block_price=_decimal(preview.block_price),
        reference_price=_decimal(preview.reference_price),
    )
    if block is not None:
        message.block_amount.CopyFrom(_decimal(block.amount))
        if block.order_value is not None:
            message.order_value.CopyFrom(_decimal(block.order_value))
        message.charges.extend(charges_pb2.Charge(name=n, amount=_decimal(a)) for n, a in block.charges)
        message.charges_total.CopyFrom(_decimal(block.charges_total))
        message.available.CopyFrom(_decimal(block.available))
    message.risk_checks.extend(risk_check_to_proto(c) for c in preview.risk_checks)
    return message


def risk_check_to_proto(check: RiskCheck) -> orders_pb2.RiskCheck:
    return orders_pb2.RiskCheck(
        rule=check.rule.value,
        scope=check.scope,
        limit=_decimal(check.limit),
        observed=_decimal(check.observed),
        passed=check.passed,
    )


def limits_to_proto(limits: LimitSet, cancelled: list[Order] | None = None) -> orders_pb2.RiskLimits:
    message = orders_pb2.RiskLimits(
        name=f"{limits.scope}/riskLimits",
        max_order_value=_decimal(limits.max_order_value),
        trading_halted=limits.trading_halted,
        version=limits.version,
        update_time=timestamp(limits.update_time),
        cancelled_orders=[order_name(o.user_id, o.order_id) for o in cancelled or []],
    )
    for name in ("max_order_quantity", "max_open_orders", "max_position_quantity"):
        value = getattr(limits, name)
        if value is not None:
            setattr(message, name, value)
    if limits.max_daily_loss is not None:
        message.max_daily_loss.CopyFrom(_decimal(limits.max_daily_loss))
    return message


def limits_from_proto(message: orders_pb2.RiskLimits, scope: str) -> LimitSet:
    def whole(name: str) -> int | None:
        return getattr(message, name) if message.HasField(name) else None

    def money(name: str) -> Decimal | None:
        if not message.HasField(name):
            return None
        return parse_decimal(getattr(message, name).value, field=f"risk_limits.{name}", max_places=2)

    return LimitSet(
        scope=scope,
        max_order_value=money("max_order_value"),
        max_order_quantity=whole("max_order_quantity"),
        max_open_orders=whole("max_open_orders"),
        max_position_quantity=whole("max_position_quantity"),
        max_daily_loss=money("max_daily_loss"),
        trading_halted=message.trading_halted,
    )


def trade_to_proto(fill: Fill, order: Order) -> orders_pb2.Trade:
    return orders_pb2.Trade(
        name=f"users/{order.user_id}/trades/{fill.exec_id}",
        exec_id=fill.exec_id,
        order_id=fill.order_id,
        symbol=order.symbol,
        side=side_to(order.side),
        quantity=fill.quantity,
        price=_decimal(fill.price),
        execute_time=timestamp(fill.execute_time),
        product=product_to(order.product),
        tag=order.tag,
    )


def event_to_proto(
    *, event_id: str, event: EventType, order: Order, fill: Fill | None, when: datetime, request_id: str
) -> orders_pb2.OrderEvent:
    return orders_pb2.OrderEvent(
        event_id=event_id,
        type=event_type_to(event),
        order=order_to_proto(order),
        trade=trade_to_proto(fill, order) if fill is not None else None,
        event_time=timestamp(when),
        request_id=request_id,
    )


def _exchange_type(order_type: OrderType) -> OrderType:
    # Market protection: MARKET goes out as a LIMIT at the protection price, and SL-M as
    # SL at it, so no fill can cost more than was blocked.
    return ORDER_TYPES[order_type].sent_as


def command_for(
    order: Order, kind: CommandKind, when: datetime, request_id: str
) -> order_command_pb2.OrderCommand:
    command = order_command_pb2.OrderCommand(
        command_id=new_id("cmd"),
        order_id=order.order_id,
        user_id=order.user_id,
        order_version=order.version,
        issue_time=timestamp(when),
        request_id=request_id,
    )
    if kind is CommandKind.NEW:
        command.new_order.CopyFrom(
            order_command_pb2.NewOrderCommand(
                symbol=order.symbol,
                side=side_to(order.side),
                type=type_to(_exchange_type(order.type)),
                time_in_force=tif_to(order.time_in_force),
                product=product_to(order.product),
                quantity=order.quantity,
                limit_price=_decimal(order.exchange_limit_price),
                stop_price=_decimal(order.stop_price),
                expire_date=order.expire_date.isoformat() if order.expire_date else "",
                display_quantity=order.display_quantity,
            )
        )
    elif kind is CommandKind.CANCEL:
        command.cancel_order.CopyFrom(
            order_command_pb2.CancelOrderCommand(
                symbol=order.symbol, side=side_to(order.side), quantity=order.quantity
            )
        )
    elif kind is CommandKind.REPLACE:
        pending = order.pending
        assert pending is not None and pending.kind == "REPLACE"
        limit = pending.limit_price if ORDER_TYPES[order.type].takes_limit_price else pending.protection_price
        command.replace_order.CopyFrom(
            order_command_pb2.ReplaceOrderCommand(
                symbol=order.symbol,
                side=side_to(order.side),
                type=type_to(_exchange_type(order.type)),
                quantity=pending.quantity or order.quantity,
                limit_price=_decimal(limit),
                stop_price=_decimal(pending.stop_price),
                time_in_force=tif_to(order.time_in_force),
                display_quantity=order.display_quantity,
            )
        )
    else:
        command.order_status.CopyFrom(
            order_command_pb2.OrderStatusCommand(symbol=order.symbol, side=side_to(order.side))
        )
    return command


def _report_decimal(message: decimal_pb2.Decimal, field: str) -> Decimal | None:
    if not message.value:
        return None
    return parse_decimal(message.value, field=field, max_places=8)


def report_from_proto(message: execution_report_pb2.ExecutionReport, payload: bytes = b"") -> ReportEnvelope:
    exec_type = _to_enum(message.exec_type, _EXEC_TYPE, "EXEC_TYPE_", ExecType)
    if exec_type is None:
        raise ValueError(f"execution report {message.exec_id} has no exec type")
    ord_status = (
        _to_enum(message.ord_status, _ORD_STATUS, "ORD_STATUS_", ExchangeStatus) or ExchangeStatus.UNKNOWN
    )
    transact = message.transact_time.ToDatetime(tzinfo=UTC) if message.HasField("transact_time") else None
    report = ExchangeReport(
        exec_id=message.exec_id,
        exec_type=exec_type,
        ord_status=ord_status,
        order_quantity=message.order_quantity,
        last_quantity=message.last_quantity,
        last_price=_report_decimal(message.last_price, "last_price"),
        cumulative_quantity=message.cumulative_quantity,
        leaves_quantity=message.leaves_quantity,
        limit_price=_report_decimal(message.limit_price, "limit_price"),
        exchange_order_id=message.exchange_order_id,
        text=message.text,
        transact_time=transact,
    )
    return ReportEnvelope(
        report=report,
        order_id=message.order_id,
        user_id=message.user_id,
        request_id=message.request_id,
        payload=payload,
    )


def audit_record_to_proto(row: dict[str, object]) -> orders_pb2.AuditRecord:
    def status(value: object) -> int:
        return status_to(Status(str(value))) if value else orders_pb2.ORDER_STATUS_UNSPECIFIED

    return orders_pb2.AuditRecord(
        record_id=int(row["record_id"]),  # type: ignore[call-overload]
        record_time=timestamp(row["record_time"]),  # type: ignore[arg-type]
        action=str(row["action"]),
        actor=str(row["actor"]),
        request_id=str(row["request_id"]),
        client_ip=str(row["client_ip"]),
        user_id=str(row["user_id"]),
        order_id=str(row["order_id"] or ""),
        order_version=int(row["order_version"] or 0),  # type: ignore[call-overload]
        from_status=status(row["from_status"]),
        to_status=status(row["to_status"]),
        exec_id=str(row["exec_id"]),
        last_price=_decimal(row["last_price"]),  # type: ignore[arg-type]
        bid_price=_decimal(row["bid_price"]),  # type: ignore[arg-type]
        ask_price=_decimal(row["ask_price"]),  # type: ignore[arg-type]
        detail=str(row["detail"]),
    )


def controls_to_proto(
    controls: TradingControls, cancelled: list[Order] | None = None
) -> orders_pb2.TradingControls:
    return orders_pb2.TradingControls(
        cancelled_orders=[order_name(o.user_id, o.order_id) for o in cancelled or []],
        name=CONTROLS_NAME,
        trading_halted=controls.trading_halted,
        halt_reason=controls.halt_reason,
        halted_symbols=sorted(controls.halted_symbols),
        version=controls.version,
        update_time=timestamp(controls.update_time),
    )
