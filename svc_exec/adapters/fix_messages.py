"""FIX 4.4 and 4.2 messages to and from the exchange, built and read through raw tag text.

Only standard FIX messages and tags: NewOrderSingle (D), OrderCancelRequest (F),
OrderCancelReplaceRequest (G), OrderStatusRequest (H), OrderMassStatusRequest (AF) out;
ExecutionReport (8), OrderCancelReject (9), BusinessMessageReject (j) and session Reject (3)
in. Prices and quantities never touch quickfix's double-typed fields. What an
ExecutionReport means is decided by `svc_exec.domain.dialect` (the venue's FIX version and
dialect), nowhere else.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import TypeVar

import quickfix as fix

from svc_exec.domain.commands import CancelOrder, NewOrder, ReplaceOrder
from svc_exec.domain.dialect import Acknowledged, Speech, Unmappable, fill_status, interpret
from svc_exec.domain.model import (
    UNKNOWN_ORDER_CXL_REJ_REASON,
    UNKNOWN_ORDER_REASON,
    ExecKind,
    MessageRejected,
    OrdStatus,
    Report,
    Side,
    VenueIncident,
)
from svc_runtime.decimals import format_decimal

# Tags used here, by name (FIX 4.4).
ACCOUNT, AVG_PX, CL_ORD_ID, CUM_QTY, EXEC_ID, HANDL_INST = 1, 6, 11, 14, 17, 21
LAST_PX, LAST_QTY, MSG_SEQ_NUM, MSG_TYPE, ORDER_ID, ORDER_QTY = 31, 32, 34, 35, 37, 38
ORD_STATUS, ORD_TYPE, ORIG_CL_ORD_ID, POSS_DUP_FLAG, PRICE, REF_SEQ_NUM = 39, 40, 41, 43, 44, 45
SIDE, SYMBOL, TEXT, TIME_IN_FORCE, TRANSACT_TIME, POSS_RESEND = 54, 55, 58, 59, 60, 97
STOP_PX, ORD_REJ_REASON, EXEC_TYPE, LEAVES_QTY, REF_MSG_TYPE = 99, 103, 150, 151, 372
EXPIRE_DATE = 432
MAX_FLOOR = 111  # an iceberg's display quantity: the most shown on the exchange at a time
BUSINESS_REJECT_REF_ID, MASS_STATUS_REQ_ID, MASS_STATUS_REQ_TYPE = 379, 584, 585
ORD_STATUS_REQ_ID, TOT_NUM_REPORTS, LAST_RPT_REQUESTED = 790, 911, 912
EXEC_RESTATEMENT_REASON = 378
CXL_REJ_REASON = 102
EXEC_TRANS_TYPE, REF_TAG_ID, BUSINESS_REJECT_REASON, SESSION_REJECT_REASON = 20, 371, 380, 373

STANDARD_44 = Speech()

MASS_STATUS_ALL_ORDERS = "7"
AUTOMATED_PRIVATE = "1"


E = TypeVar("E", bound=Enum)


class MalformedMessage(ValueError):
    """An incoming message svc_exec cannot read (its text says why)."""

    def __init__(self, tag: int, text: str) -> None:
        super().__init__(text)
        self.tag = tag


@functools.lru_cache(maxsize=4)
def _second_text(second: int) -> str:
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(second))


def utc_timestamp(when: datetime | None = None) -> str:
    """FIX UTCTimestamp with milliseconds (each second is formatted once)."""
    if when is not None:
        return when.strftime("%Y%m%d-%H:%M:%S.") + f"{when.microsecond // 1000:03d}"
    second, millis = divmod(time.time_ns() // 1_000_000, 1000)
    return f"{_second_text(second)}.{millis:03d}"


def parse_utc_timestamp(text: str | None) -> datetime | None:
    """YYYYMMDD-HH:MM:SS[.fraction] (FIX allows up to nanoseconds; kept to microseconds)."""
    if not text or len(text) < 17 or text[8] != "-":
        return None
    try:
        fraction = text[18:24] if len(text) > 18 and text[17] == "." else ""
        return datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[9:11]),
            int(text[12:14]),
            int(text[15:17]),
            int(fraction.ljust(6, "0")) if fraction.isdigit() else 0,
            tzinfo=UTC,
        )
    except ValueError:
        return None


Fields = dict[int, str]
SOH = "\x01"


def _message(msg_type: str, body: list[tuple[int, object]]) -> fix.Message:
    """A message from its body fields, built as FIX text and parsed once by quickfix (one
    call into the binding instead of one per field; the session fills in the header)."""
    text = SOH.join(f"{tag}={format_decimal(v) if isinstance(v, Decimal) else v}" for tag, v in body)
    payload = f"35={msg_type}{SOH}{text}{SOH}"
    return fix.Message(f"8=FIX.4.4{SOH}9={len(payload)}{SOH}{payload}10=000{SOH}", False)


def _prices(order: NewOrder | ReplaceOrder) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    if order.limit_price is not None:
        out.append((PRICE, order.limit_price))
    if order.stop_price is not None:
        out.append((STOP_PX, order.stop_price))
    if order.display_quantity:
        out.append((MAX_FLOOR, order.display_quantity))
    return out


def new_order_single(cl_ord_id: str, order: NewOrder) -> fix.Message:
    return _message(
        "D",
        [
            (CL_ORD_ID, cl_ord_id),
            # The client code, as Indian exchanges require (and their self-trade checks use).
            (ACCOUNT, order.meta.user_id),
            (HANDL_INST, AUTOMATED_PRIVATE),
            (SYMBOL, order.symbol),
            (SIDE, order.side.value),
            (TRANSACT_TIME, utc_timestamp()),
            (ORDER_QTY, order.quantity),
            (ORD_TYPE, order.ord_type.value),
            (TIME_IN_FORCE, order.time_in_force.value),
            *_prices(order),
            *([(EXPIRE_DATE, order.expire_date.strftime("%Y%m%d"))] if order.expire_date else []),
        ],
    )


def cancel_request(cl_ord_id: str, orig_cl_ord_id: str, order: CancelOrder | ReplaceOrder) -> fix.Message:
    return _message(
        "F",
        [
            (ORIG_CL_ORD_ID, orig_cl_ord_id),
            (CL_ORD_ID, cl_ord_id),
            (ACCOUNT, order.meta.user_id),
            (SYMBOL, order.symbol),
            (SIDE, order.side.value),
            (TRANSACT_TIME, utc_timestamp()),
            (ORDER_QTY, order.quantity),
        ],
    )


def replace_request(cl_ord_id: str, orig_cl_ord_id: str, order: ReplaceOrder) -> fix.Message:
    return _message(
        "G",
        [
            (ORIG_CL_ORD_ID, orig_cl_ord_id),
            (CL_ORD_ID, cl_ord_id),
            (ACCOUNT, order.meta.user_id),
            (HANDL_INST, AUTOMATED_PRIVATE),
            (SYMBOL, order.symbol),
            (SIDE, order.side.value),
            (TRANSACT_TIME, utc_timestamp()),
            (ORDER_QTY, order.quantity),
            (ORD_TYPE, order.ord_type.value),
            (TIME_IN_FORCE, order.time_in_force.value),
            *_prices(order),
        ],
    )


def status_request(
    cl_ord_id: str,
    symbol: str,
    side: Side,
    request_id: str,
    *,
    exchange_order_id: str = "",
    account: str = "",
    with_request_id: bool = True,
) -> fix.Message:
    """OrderStatusRequest: ClOrdID, Symbol and Side are required by FIX 4.2 and 4.4; many
    venues look orders up by their own OrderID, so it goes too when known, and the client
    code (Account) as on the order. OrdStatusReqID exists only from FIX 4.3 on."""
    body: list[tuple[int, object]] = []
    if exchange_order_id and exchange_order_id != "NONE":
        body.append((ORDER_ID, exchange_order_id))
    body.append((CL_ORD_ID, cl_ord_id))
    if account:
        body.append((ACCOUNT, account))
    body += [(SYMBOL, symbol), (SIDE, side.value)]
    if with_request_id:
        body.append((ORD_STATUS_REQ_ID, request_id))
    return _message("H", body)


def mass_status_request(request_id: str) -> fix.Message:
    return _message("AF", [(MASS_STATUS_REQ_ID, request_id), (MASS_STATUS_REQ_TYPE, MASS_STATUS_ALL_ORDERS)])


# --- incoming ------------------------------------------------------------------------------
def fields_of(message: fix.Message | str) -> Fields:
    """Every field of a message by tag (header, body and trailer), read from its FIX text in
    one pass: one call into the binding rather than two per field. Messages svc_exec reads
    have no repeating groups, so a tag appears once."""
    text = message if isinstance(message, str) else message.toString()
    fields: Fields = {}
    for pair in text.split(SOH):
        tag, _, value = pair.partition("=")
        if tag.isdigit():
            fields[int(tag)] = value
    return fields


def _shares(fields: Fields, tag: int) -> int:
    text = fields.get(tag)
    if not text:
        return 0
    if text.isdigit():  # the usual form, read without a Decimal
        return int(text)
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise MalformedMessage(tag, f"tag {tag} is not a number: {text!r}") from error
    if value != value.to_integral_value() or value < 0:
        raise MalformedMessage(tag, f"tag {tag} is not a whole number of shares: {text!r}")
    return int(value)


def _price(fields: Fields, tag: int) -> Decimal | None:
    text = fields.get(tag)
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise MalformedMessage(tag, f"tag {tag} is not a price: {text!r}") from error
    if not value.is_finite():
        raise MalformedMessage(tag, f"tag {tag} is not a price: {text!r}")
    return value


def _enum(enum: type[E], text: str | None, tag: int) -> E | None:
    if not text:
        return None
    try:
        return enum(text)
    except ValueError as error:
        raise MalformedMessage(tag, f"tag {tag} has unsupported value {text!r}") from error


def _count(fields: Fields, tag: int) -> int:
    text = fields.get(tag) or "0"
    if not text.isdigit():
        raise MalformedMessage(tag, f"tag {tag} is not a count: {text!r}")
    return int(text)


def raw_text(fields: Fields | str) -> str:
    """A message as FIX text with SOH shown as `|`, for logs and the incident table."""
    if isinstance(fields, str):
        return fields.replace(SOH, "|")
    return "|".join(f"{tag}={value}" for tag, value in fields.items()) + "|"


def execution_report(
    fields: Fields, *, exec_id_scope: str = "VENUE", speech: Speech = STANDARD_44
) -> Report | VenueIncident | None:
    """An ExecutionReport (35=8) as the broker reads it: a report, None for an
    acknowledgement the broker has no use for, or an incident for one it cannot map.

    `exec_id_scope` says how far the venue's ExecIDs can be trusted: VENUE, unique for good;
    ORDER, unique only within an order's day (counters that restart), so they are qualified
    by the ClOrdID, which is unique forever; NONE, repeated even within an order (ExecID 0 on
    every report), so the id is derived from the ClOrdID, the ExecType and the cumulative
    quantity, which only grows with each fill."""
    meaning = interpret(
        speech,
        fields.get(EXEC_TYPE, ""),
        fields.get(EXEC_TRANS_TYPE, ""),
        restatement_reason=fields.get(EXEC_RESTATEMENT_REASON, ""),
        ord_type=fields.get(ORD_TYPE, ""),
    )
    if isinstance(meaning, Acknowledged):
        return None
    if isinstance(meaning, Unmappable):
        return VenueIncident(
            kind="unmappable",
            reason=meaning.reason,
            text=meaning.detail,
            raw=raw_text(fields),
            cl_ord_id=fields.get(CL_ORD_ID, ""),
            ref_msg_type="8",
            exchange_order_id=fields.get(ORDER_ID, ""),
        )
    kind = meaning.kind
    status_text = fields.get(ORD_STATUS)
    exec_id = fields.get(EXEC_ID, "")
    if exec_id_scope == "ORDER" and exec_id:
        exec_id = f"{fields.get(CL_ORD_ID, '')}/{exec_id}"
    elif exec_id_scope == "NONE":
        exec_id = f"{fields.get(CL_ORD_ID, '')}/{kind.value}/{_shares(fields, CUM_QTY)}"
    status = _enum(OrdStatus, status_text, ORD_STATUS)
    if kind is ExecKind.TRADE:
        status = fill_status(status, _shares(fields, CUM_QTY), _shares(fields, ORDER_QTY))
    return Report(
        kind=kind,
        exec_id=exec_id,
        cl_ord_id=fields.get(CL_ORD_ID, ""),
        status=status,
        orig_cl_ord_id=fields.get(ORIG_CL_ORD_ID, ""),
        exchange_order_id=fields.get(ORDER_ID, ""),
        symbol=fields.get(SYMBOL, ""),
        side=_enum(Side, fields.get(SIDE), SIDE),
        order_qty=_shares(fields, ORDER_QTY),
        last_qty=_shares(fields, LAST_QTY) if kind is ExecKind.TRADE else 0,
        last_px=_price(fields, LAST_PX) if kind is ExecKind.TRADE else None,
        cum_qty=_shares(fields, CUM_QTY),
        leaves_qty=_shares(fields, LEAVES_QTY),
        avg_px=_price(fields, AVG_PX),
        limit_px=_price(fields, PRICE),
        text=fields.get(TEXT, ""),
        transact_time=parse_utc_timestamp(fields.get(TRANSACT_TIME)),
        possible_duplicate=possible_duplicate(fields),
        status_request_id=fields.get(ORD_STATUS_REQ_ID, ""),
        mass_status_request_id=fields.get(MASS_STATUS_REQ_ID, ""),
        mass_status_total=_count(fields, TOT_NUM_REPORTS),
        last_of_mass_status=fields.get(LAST_RPT_REQUESTED) == "Y",
        unknown_order=kind is ExecKind.ORDER_STATUS
        and status_text == OrdStatus.REJECTED.value
        and (
            fields.get(ORD_REJ_REASON, UNKNOWN_ORDER_REASON) == UNKNOWN_ORDER_REASON
            # Venues that give another reason code still say so in words.
            or "unknown order" in fields.get(TEXT, "").lower()
        ),
        raw=raw_text(fields) if kind is ExecKind.ORDER_STATUS else "",
    )


def cancel_reject(fields: Fields) -> Report:
    """An OrderCancelReject (35=9): the cancel or replace was refused; the order is unchanged."""
    return Report(
        kind=ExecKind.CANCEL_REJECTED,
        exec_id="",
        cl_ord_id=fields.get(CL_ORD_ID, ""),
        status=_enum(OrdStatus, fields.get(ORD_STATUS), ORD_STATUS),
        orig_cl_ord_id=fields.get(ORIG_CL_ORD_ID, ""),
        exchange_order_id=fields.get(ORDER_ID, ""),
        text=fields.get(TEXT, ""),
        transact_time=parse_utc_timestamp(fields.get(TRANSACT_TIME)),
        possible_duplicate=possible_duplicate(fields),
        # CxlRejReason 1: the venue does not know the order (the order itself, not the cancel).
        unknown_order=fields.get(CXL_REJ_REASON) == UNKNOWN_ORDER_CXL_REJ_REASON
        or "unknown order" in fields.get(TEXT, "").lower(),
    )


def rejection(fields: Fields, referenced: Fields | None) -> MessageRejected:
    """A BusinessMessageReject (j) or session Reject (3) of one of our messages; the
    referenced message (from our store) supplies its ClOrdID and request ids."""
    ref_msg_type = fields.get(REF_MSG_TYPE, "")
    cl_ord_id = ref_id = ""
    if referenced is not None:
        ref_msg_type = ref_msg_type or referenced.get(MSG_TYPE, "")
        cl_ord_id = referenced.get(CL_ORD_ID, "")
        ref_id = referenced.get(ORD_STATUS_REQ_ID) or referenced.get(MASS_STATUS_REQ_ID) or ""
    ref_id = fields.get(BUSINESS_REJECT_REF_ID) or ref_id
    if not cl_ord_id and ref_msg_type in ("D", "F", "G", "H"):
        cl_ord_id = ref_id
    session_level = fields.get(MSG_TYPE) == "3"
    reason_tag = SESSION_REJECT_REASON if session_level else BUSINESS_REJECT_REASON
    ref_tag = fields.get(REF_TAG_ID, "")
    return MessageRejected(
        ref_msg_type=ref_msg_type,
        cl_ord_id=cl_ord_id,
        ref_id=ref_id,
        text=fields.get(TEXT, "") or (f"tag {ref_tag}" if ref_tag else ""),
        session_level=session_level,
        reason_code=fields.get(reason_tag, ""),
        raw=raw_text(fields),
        referenced_raw=raw_text(referenced) if referenced is not None else "",
    )


def possible_duplicate(fields: Fields) -> bool:
    return fields.get(POSS_DUP_FLAG) == "Y" or fields.get(POSS_RESEND) == "Y"
