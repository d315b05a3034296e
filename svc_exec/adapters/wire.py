"""Protobuf ↔ domain: order commands in, execution reports out."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.orders.v1 import order_command_pb2 as oc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_exec.domain.commands import (
    PRICE_PLACES,
    CancelOrder,
    Command,
    CommandMeta,
    InvalidCommand,
    NewOrder,
    QueryStatus,
    Refused,
    ReplaceOrder,
    validate,
)
from svc_exec.domain.model import Addressed, ExecKind, OrdStatus, OrdType, Side, TimeInForce
from svc_runtime.decimals import parse_decimal, to_proto
from svc_runtime.errors import InvalidArgument

_SIDES = {trading_pb2.SIDE_BUY: Side.BUY, trading_pb2.SIDE_SELL: Side.SELL}
_SIDES_OUT = {v: k for k, v in _SIDES.items()}
_TYPES = {
    trading_pb2.ORDER_TYPE_MARKET: OrdType.MARKET,
    trading_pb2.ORDER_TYPE_LIMIT: OrdType.LIMIT,
    trading_pb2.ORDER_TYPE_STOP: OrdType.STOP,
    trading_pb2.ORDER_TYPE_STOP_LIMIT: OrdType.STOP_LIMIT,
}
_TIFS = {
    trading_pb2.TIME_IN_FORCE_UNSPECIFIED: TimeInForce.DAY,
    trading_pb2.TIME_IN_FORCE_DAY: TimeInForce.DAY,
    trading_pb2.TIME_IN_FORCE_IOC: TimeInForce.IOC,
    trading_pb2.TIME_IN_FORCE_FOK: TimeInForce.FOK,
    trading_pb2.TIME_IN_FORCE_GTC: TimeInForce.GTC,
    trading_pb2.TIME_IN_FORCE_GTD: TimeInForce.GTD,
}
_EXEC_TYPES = {
    ExecKind.NEW: er.EXEC_TYPE_NEW,
    ExecKind.TRADE: er.EXEC_TYPE_TRADE,
    ExecKind.CANCELED: er.EXEC_TYPE_CANCELED,
    ExecKind.REPLACED: er.EXEC_TYPE_REPLACED,
    ExecKind.PENDING_CANCEL: er.EXEC_TYPE_PENDING_CANCEL,
    ExecKind.PENDING_REPLACE: er.EXEC_TYPE_PENDING_REPLACE,
    ExecKind.REJECTED: er.EXEC_TYPE_REJECTED,
    ExecKind.EXPIRED: er.EXEC_TYPE_EXPIRED,
    ExecKind.ORDER_STATUS: er.EXEC_TYPE_ORDER_STATUS,
    ExecKind.CANCEL_REJECTED: er.EXEC_TYPE_CANCEL_REJECTED,
    ExecKind.TRIGGERED: er.EXEC_TYPE_TRIGGERED,
    ExecKind.NEEDS_ATTENTION: er.EXEC_TYPE_NEEDS_ATTENTION,
}
_ORD_STATUSES = {
    OrdStatus.NEW: er.ORD_STATUS_NEW,
    OrdStatus.PARTIALLY_FILLED: er.ORD_STATUS_PARTIALLY_FILLED,
    OrdStatus.FILLED: er.ORD_STATUS_FILLED,
    OrdStatus.CANCELED: er.ORD_STATUS_CANCELED,
    OrdStatus.PENDING_CANCEL: er.ORD_STATUS_PENDING_CANCEL,
    OrdStatus.REJECTED: er.ORD_STATUS_REJECTED,
    OrdStatus.EXPIRED: er.ORD_STATUS_EXPIRED,
    OrdStatus.PENDING_REPLACE: er.ORD_STATUS_PENDING_REPLACE,
    OrdStatus.PENDING_NEW: er.ORD_STATUS_PENDING_NEW,
}

COMMAND_KINDS = {
    "new_order": "new",
    "cancel_order": "cancel",
    "replace_order": "replace",
    "order_status": "status",
}


def _price(message: decimal_pb2.Decimal, field: str, present: bool) -> Decimal | None:
    if not present or not message.value:
        return None
    try:
        return parse_decimal(message.value, field=field, max_places=PRICE_PLACES, positive=True)
    except InvalidArgument as error:
        raise InvalidCommand(error.message) from error


def _side(value: int) -> Side:
    if value not in _SIDES:
        raise InvalidCommand("side must be BUY or SELL")
    return _SIDES[value]


def _type(value: int) -> OrdType:
    if value not in _TYPES:
        raise InvalidCommand("order type is missing or unknown")
    return _TYPES[value]


def _expire_date(new: oc.NewOrderCommand) -> date | None:
    """A GTD order's date; the command is refused without one, or with one on another validity."""
    gtd = new.time_in_force == trading_pb2.TIME_IN_FORCE_GTD
    if gtd != bool(new.expire_date):
        raise InvalidCommand("new_order.expire_date goes with GTD orders, and only with them")
    try:
        return date.fromisoformat(new.expire_date) if gtd else None
    except ValueError:
        raise InvalidCommand("new_order.expire_date is not an ISO date") from None


def _tif(value: int) -> TimeInForce:
    if value not in _TIFS:
        raise InvalidCommand("time in force is unknown")
    return _TIFS[value]


def command_from_proto(message: oc.OrderCommand) -> Command | Refused:
    """A validated domain command, or `Refused` saying what is wrong with it."""
    meta = CommandMeta(message.command_id, message.order_id, message.user_id, message.request_id)
    which = message.WhichOneof("command") or ""
    kind = COMMAND_KINDS.get(which, "unknown")
    try:
        if not message.command_id or not message.order_id or not message.user_id:
            raise InvalidCommand("command_id, order_id and user_id are required")
        command: Command
        if which == "new_order":
            new = message.new_order
            command = NewOrder(
                meta,
                new.symbol,
                _side(new.side),
                _type(new.type),
                _tif(new.time_in_force),
                new.quantity,
                _price(new.limit_price, "new_order.limit_price", new.HasField("limit_price")),
                _price(new.stop_price, "new_order.stop_price", new.HasField("stop_price")),
                _expire_date(new),
                new.display_quantity,
            )
        elif which == "cancel_order":
            cancel = message.cancel_order
            command = CancelOrder(meta, cancel.symbol, _side(cancel.side), cancel.quantity)
        elif which == "replace_order":
            rep = message.replace_order
            command = ReplaceOrder(
                meta,
                rep.symbol,
                _side(rep.side),
                _type(rep.type),
                _tif(rep.time_in_force),
                rep.quantity,
                _price(rep.limit_price, "replace_order.limit_price", rep.HasField("limit_price")),
                _price(rep.stop_price, "replace_order.stop_price", rep.HasField("stop_price")),
                rep.display_quantity,
            )
        elif which == "order_status":
            status = message.order_status
            command = QueryStatus(meta, status.symbol, _side(status.side))
        else:
            raise InvalidCommand("the command carries no instruction")
        return validate(command)
    except InvalidCommand as error:
        return Refused(meta, kind, error.reason)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromMicroseconds((value - _EPOCH) // _MICROSECOND)
    return stamp


def report_to_proto(addressed: Addressed, *, receive_time: Timestamp | None = None) -> er.ExecutionReport:
    report = addressed.report
    message = er.ExecutionReport(
        exec_id=addressed.msg_id,
        order_id=addressed.order_id,
        user_id=addressed.user_id,
        cl_ord_id=report.cl_ord_id,
        orig_cl_ord_id=report.orig_cl_ord_id,
        exchange_order_id=report.exchange_order_id if report.exchange_order_id != "NONE" else "",
        exec_type=_EXEC_TYPES[report.kind],
        ord_status=_ORD_STATUSES.get(report.status, er.ORD_STATUS_UNSPECIFIED) if report.status else 0,
        symbol=report.symbol,
        side=_SIDES_OUT.get(report.side, trading_pb2.SIDE_UNSPECIFIED) if report.side else 0,
        order_quantity=report.order_qty,
        last_quantity=report.last_qty,
        cumulative_quantity=report.cum_qty,
        leaves_quantity=report.leaves_qty,
        text=report.text,
        possible_duplicate=report.possible_duplicate,
        request_id=addressed.request_id,
    )
    for field, value in (
        ("last_price", report.last_px),
        ("average_price", report.avg_px),
        ("limit_price", report.limit_px),
    ):
        if value is not None:
            getattr(message, field).CopyFrom(to_proto(value))
    transact = _timestamp(report.transact_time)
    if transact is not None:
        message.transact_time.CopyFrom(transact)
    if receive_time is not None:
        message.receive_time.CopyFrom(receive_time)
    else:
        message.receive_time.GetCurrentTime()
    return message
