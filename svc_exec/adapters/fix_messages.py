"""FIX 4.4 messages to and from the exchange, built and read through raw tag text.

Only standard FIX 4.4 messages and tags: NewOrderSingle (D), OrderCancelRequest (F),
OrderCancelReplaceRequest (G), OrderStatusRequest (H), OrderMassStatusRequest (AF) out;
ExecutionReport (8), OrderCancelReject (9), BusinessMessageReject (j) and session Reject (3)
in. Prices and quantities never touch quickfix's double-typed fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import TypeVar

import quickfix as fix

from svc_exec.domain.commands import CancelOrder, NewOrder, ReplaceOrder
from svc_exec.domain.model import (
    UNKNOWN_ORDER_REASON,
    ExecKind,
    MessageRejected,
    OrdStatus,
    Report,
    Side,
)
from svc_runtime.fix import get_text, header_text, set_text

# Tags used here, by name (FIX 4.4).
ACCOUNT, AVG_PX, CL_ORD_ID, CUM_QTY, EXEC_ID, HANDL_INST = 1, 6, 11, 14, 17, 21
LAST_PX, LAST_QTY, MSG_SEQ_NUM, MSG_TYPE, ORDER_ID, ORDER_QTY = 31, 32, 34, 35, 37, 38
ORD_STATUS, ORD_TYPE, ORIG_CL_ORD_ID, POSS_DUP_FLAG, PRICE, REF_SEQ_NUM = 39, 40, 41, 43, 44, 45
SIDE, SYMBOL, TEXT, TIME_IN_FORCE, TRANSACT_TIME, POSS_RESEND = 54, 55, 58, 59, 60, 97
STOP_PX, ORD_REJ_REASON, EXEC_TYPE, LEAVES_QTY, REF_MSG_TYPE = 99, 103, 150, 151, 372
BUSINESS_REJECT_REF_ID, MASS_STATUS_REQ_ID, MASS_STATUS_REQ_TYPE = 379, 584, 585
ORD_STATUS_REQ_ID, TOT_NUM_REPORTS, LAST_RPT_REQUESTED = 790, 911, 912

MASS_STATUS_ALL_ORDERS = "7"
AUTOMATED_PRIVATE = "1"


E = TypeVar("E", bound=Enum)


class MalformedMessage(ValueError):
    """An incoming message svc_exec cannot read (its text says why)."""

    def __init__(self, tag: int, text: str) -> None:
        super().__init__(text)
        self.tag = tag


def utc_timestamp(when: datetime | None = None) -> str:
    """FIX UTCTimestamp with milliseconds."""
    when = when or datetime.now(UTC)
    return when.strftime("%Y%m%d-%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def parse_utc_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    for fmt in ("%Y%m%d-%H:%M:%S.%f", "%Y%m%d-%H:%M:%S"):
        try:
            # FIX allows up to nanoseconds; strptime takes at most microseconds.
            head, _, fraction = text.partition(".")
            trimmed = f"{head}.{fraction[:6]}" if fraction else head
            return datetime.strptime(trimmed, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _message(msg_type: str) -> fix.Message:
    message = fix.Message()
    set_text(message.getHeader(), MSG_TYPE, msg_type)
    return message


def _order_fields(
    message: fix.Message,
    *,
    symbol: str,
    side: Side,
    quantity: int,
) -> None:
    set_text(message, SYMBOL, symbol)
    set_text(message, SIDE, side.value)
    set_text(message, ORDER_QTY, quantity)
    set_text(message, TRANSACT_TIME, utc_timestamp())


def new_order_single(cl_ord_id: str, order: NewOrder) -> fix.Message:
    message = _message("D")
    set_text(message, CL_ORD_ID, cl_ord_id)
    # The client code, as Indian exchanges require (and their self-trade checks use).
    set_text(message, ACCOUNT, order.meta.user_id)
    set_text(message, HANDL_INST, AUTOMATED_PRIVATE)
    _order_fields(message, symbol=order.symbol, side=order.side, quantity=order.quantity)
    set_text(message, ORD_TYPE, order.ord_type.value)
    set_text(message, TIME_IN_FORCE, order.time_in_force.value)
    if order.limit_price is not None:
        set_text(message, PRICE, order.limit_price)
    if order.stop_price is not None:
        set_text(message, STOP_PX, order.stop_price)
    return message


def cancel_request(cl_ord_id: str, orig_cl_ord_id: str, order: CancelOrder | ReplaceOrder) -> fix.Message:
    message = _message("F")
    set_text(message, CL_ORD_ID, cl_ord_id)
    set_text(message, ORIG_CL_ORD_ID, orig_cl_ord_id)
    set_text(message, ACCOUNT, order.meta.user_id)
    _order_fields(message, symbol=order.symbol, side=order.side, quantity=order.quantity)
    return message


def replace_request(cl_ord_id: str, orig_cl_ord_id: str, order: ReplaceOrder) -> fix.Message:
    message = _message("G")
    set_text(message, CL_ORD_ID, cl_ord_id)
    set_text(message, ORIG_CL_ORD_ID, orig_cl_ord_id)
    set_text(message, ACCOUNT, order.meta.user_id)
    set_text(message, HANDL_INST, AUTOMATED_PRIVATE)
    _order_fields(message, symbol=order.symbol, side=order.side, quantity=order.quantity)
    set_text(message, ORD_TYPE, order.ord_type.value)
    set_text(message, TIME_IN_FORCE, order.time_in_force.value)
    if order.limit_price is not None:
        set_text(message, PRICE, order.limit_price)
    if order.stop_price is not None:
        set_text(message, STOP_PX, order.stop_price)
    return message


def status_request(cl_ord_id: str, symbol: str, side: Side, request_id: str) -> fix.Message:
    message = _message("H")
    set_text(message, CL_ORD_ID, cl_ord_id)
    set_text(message, SYMBOL, symbol)
    set_text(message, SIDE, side.value)
    set_text(message, ORD_STATUS_REQ_ID, request_id)
    return message


def mass_status_request(request_id: str) -> fix.Message:
    message = _message("AF")
    set_text(message, MASS_STATUS_REQ_ID, request_id)
    set_text(message, MASS_STATUS_REQ_TYPE, MASS_STATUS_ALL_ORDERS)
    return message


# --- incoming ------------------------------------------------------------------------------
def _shares(message: fix.Message, tag: int) -> int:
    text = get_text(message, tag)
    if not text:
        return 0
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise MalformedMessage(tag, f"tag {tag} is not a number: {text!r}") from error
    if value != value.to_integral_value() or value < 0:
        raise MalformedMessage(tag, f"tag {tag} is not a whole number of shares: {text!r}")
    return int(value)


def _price(message: fix.Message, tag: int) -> Decimal | None:
    text = get_text(message, tag)
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation as error:
        raise MalformedMessage(tag, f"tag {tag} is not a price: {text!r}") from error


def _enum(enum: type[E], text: str | None, tag: int) -> E | None:
    if not text:
        return None
    try:
        return enum(text)
    except ValueError as error:
        raise MalformedMessage(tag, f"tag {tag} has unsupported value {text!r}") from error


def execution_report(message: fix.Message) -> Report | None:
    """An ExecutionReport (35=8), or None for exec types the broker does not act on."""
    exec_type = get_text(message, EXEC_TYPE)
    try:
        kind = ExecKind(exec_type or "")
    except ValueError:
        return None
    return Report(
        kind=kind,
        exec_id=get_text(message, EXEC_ID) or "",
        cl_ord_id=get_text(message, CL_ORD_ID) or "",
        status=_enum(OrdStatus, get_text(message, ORD_STATUS), ORD_STATUS),
        orig_cl_ord_id=get_text(message, ORIG_CL_ORD_ID) or "",
        exchange_order_id=get_text(message, ORDER_ID) or "",
        symbol=get_text(message, SYMBOL) or "",
        side=_enum(Side, get_text(message, SIDE), SIDE),
        order_qty=_shares(message, ORDER_QTY),
        last_qty=_shares(message, LAST_QTY) if kind is ExecKind.TRADE else 0,
        last_px=_price(message, LAST_PX) if kind is ExecKind.TRADE else None,
        cum_qty=_shares(message, CUM_QTY),
        leaves_qty=_shares(message, LEAVES_QTY),
        avg_px=_price(message, AVG_PX),
        limit_px=_price(message, PRICE),
        text=get_text(message, TEXT) or "",
        transact_time=parse_utc_timestamp(get_text(message, TRANSACT_TIME)),
        possible_duplicate=_possible_duplicate(message),
        status_request_id=get_text(message, ORD_STATUS_REQ_ID) or "",
        mass_status_request_id=get_text(message, MASS_STATUS_REQ_ID) or "",
        mass_status_total=int(get_text(message, TOT_NUM_REPORTS) or 0),
        last_of_mass_status=get_text(message, LAST_RPT_REQUESTED) == "Y",
        unknown_order=kind is ExecKind.ORDER_STATUS
        and get_text(message, ORD_STATUS) == OrdStatus.REJECTED.value
        and get_text(message, ORD_REJ_REASON, UNKNOWN_ORDER_REASON) == UNKNOWN_ORDER_REASON,
    )


def cancel_reject(message: fix.Message) -> Report:
    """An OrderCancelReject (35=9): the cancel or replace was refused; the order is unchanged."""
    return Report(
        kind=ExecKind.CANCEL_REJECTED,
        exec_id="",
        cl_ord_id=get_text(message, CL_ORD_ID) or "",
        status=_enum(OrdStatus, get_text(message, ORD_STATUS), ORD_STATUS),
        orig_cl_ord_id=get_text(message, ORIG_CL_ORD_ID) or "",
        exchange_order_id=get_text(message, ORDER_ID) or "",
        text=get_text(message, TEXT) or "",
        transact_time=parse_utc_timestamp(get_text(message, TRANSACT_TIME)),
        possible_duplicate=_possible_duplicate(message),
    )


def rejection(message: fix.Message, referenced: fix.Message | None) -> MessageRejected:
    """A BusinessMessageReject (j) or session Reject (3) of one of our messages; the
    referenced message (from our store) supplies its ClOrdID and request ids."""
    ref_msg_type = get_text(message, REF_MSG_TYPE) or ""
    cl_ord_id = ref_id = ""
    if referenced is not None:
        ref_msg_type = ref_msg_type or header_text(referenced, MSG_TYPE) or ""
        cl_ord_id = get_text(referenced, CL_ORD_ID) or ""
        ref_id = get_text(referenced, ORD_STATUS_REQ_ID) or get_text(referenced, MASS_STATUS_REQ_ID) or ""
    ref_id = get_text(message, BUSINESS_REJECT_REF_ID) or ref_id
    if not cl_ord_id and ref_msg_type in ("D", "F", "G", "H"):
        cl_ord_id = ref_id
    return MessageRejected(
        ref_msg_type=ref_msg_type, cl_ord_id=cl_ord_id, ref_id=ref_id, text=get_text(message, TEXT) or ""
    )


def _possible_duplicate(message: fix.Message) -> bool:
    return header_text(message, POSS_DUP_FLAG) == "Y" or header_text(message, POSS_RESEND) == "Y"


def seq_num(message: fix.Message) -> int:
    return int(header_text(message, MSG_SEQ_NUM) or 0)


def msg_type(message: fix.Message) -> str:
    return header_text(message, MSG_TYPE) or ""
