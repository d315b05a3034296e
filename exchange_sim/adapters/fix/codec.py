"""FIX 4.4 messages ↔ the app's requests and reports.

Inbound: the raw text of each tag (quickfix has already validated the message against
FIX44.xml), so the app can give a business reason for anything it refuses. Outbound: every
price and quantity is written as exact text with `svc_runtime.fix.set_text`; quickfix's
typed (double) fields are never used for them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import quickfix as fix
import quickfix44 as fix44

from exchange_sim.app import messages as m
from exchange_sim.domain import market_data as md
from exchange_sim.domain.instruments import Instrument
from svc_runtime.fix import get_text, header_text, set_text

BEGIN_STRING = "FIX.4.4"

# Tags, by name, for readability.
ACCOUNT = 1
AVG_PX = 6
CL_ORD_ID = 11
CUM_QTY = 14
CURRENCY = 15
EXEC_ID = 17
LAST_PX = 31
LAST_QTY = 32
ORDER_ID = 37
ORDER_QTY = 38
ORD_STATUS = 39
ORD_TYPE = 40
ORIG_CL_ORD_ID = 41
POSS_DUP = 43
PRICE = 44
SYMBOL = 55
SIDE = 54
TEXT = 58
TIME_IN_FORCE = 59
EXPIRE_TIME = 126
EXPIRE_DATE = 432
MAX_FLOOR = 111  # the display quantity of an iceberg order
TRANSACT_TIME = 60
POSS_RESEND = 97
STOP_PX = 99
CXL_REJ_REASON = 102
ORD_REJ_REASON = 103
SECURITY_DESC = 107
EXEC_RESTATEMENT_REASON = 378
NO_RELATED_SYM = 146
EXEC_TYPE = 150
LEAVES_QTY = 151
MD_REQ_ID = 262
SUBSCRIPTION_REQUEST_TYPE = 263
MARKET_DEPTH = 264
MD_UPDATE_TYPE = 265
NO_MD_ENTRY_TYPES = 267
NO_MD_ENTRIES = 268
MD_ENTRY_TYPE = 269
MD_ENTRY_PX = 270
MD_ENTRY_SIZE = 271
MD_ENTRY_DATE = 272
MD_ENTRY_TIME = 273
MD_UPDATE_ACTION = 279
MD_REQ_REJ_REASON = 281
MD_ENTRY_POSITION_NO = 290
SECURITY_REQ_ID = 320
SECURITY_RESPONSE_ID = 322
NUMBER_OF_ORDERS = 346
TOT_NO_RELATED_SYM = 393
CXL_REJ_RESPONSE_TO = 434
SECONDARY_EXEC_ID = 527
SECURITY_LIST_REQUEST_TYPE = 559
SECURITY_REQUEST_RESULT = 560
ROUND_LOT = 561
MIN_TRADE_VOL = 562
MASS_STATUS_REQ_ID = 584
MASS_STATUS_REQ_TYPE = 585
ORD_STATUS_REQ_ID = 790
LAST_LIQUIDITY_IND = 851
EVENT_TYPE = 865
EVENT_DATE = 866
EVENT_PX = 867
EVENT_TEXT = 868
LAST_FRAGMENT = 893
TOT_NUM_REPORTS = 911
LAST_RPT_REQUESTED = 912
SECURITY_TYPE = 167
STIPULATION_TYPE = 233
STIPULATION_VALUE = 234


def utc_timestamp(moment: datetime) -> str:
    """FIX UTCTimestamp with milliseconds."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%d-%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _text(message: fix.Message, tag: int) -> str:
    return get_text(message, tag, "") or ""


def _optional(message: fix.Message, tag: int) -> str | None:
    value = get_text(message, tag)
    return value or None


def _possible_duplicate(message: fix.Message) -> bool:
    return header_text(message, POSS_DUP) == "Y" or header_text(message, POSS_RESEND) == "Y"


# ---- inbound ------------------------------------------------------------------------------


def new_order(message: fix.Message) -> m.NewOrderRequest:
    return m.NewOrderRequest(
        cl_ord_id=_text(message, CL_ORD_ID),
        symbol=_text(message, SYMBOL),
        side=_text(message, SIDE),
        quantity=_text(message, ORDER_QTY),
        order_type=_text(message, ORD_TYPE),
        price=_optional(message, PRICE),
        stop_price=_optional(message, STOP_PX),
        time_in_force=_optional(message, TIME_IN_FORCE),
        account=_text(message, ACCOUNT),
        possible_duplicate=_possible_duplicate(message),
        expire_date=_optional(message, EXPIRE_DATE),
        expire_time=_optional(message, EXPIRE_TIME),
        max_floor=_optional(message, MAX_FLOOR),
    )


def cancel(message: fix.Message) -> m.CancelRequest:
    return m.CancelRequest(
        cl_ord_id=_text(message, CL_ORD_ID),
        orig_cl_ord_id=_text(message, ORIG_CL_ORD_ID),
        symbol=_text(message, SYMBOL),
        side=_text(message, SIDE),
        order_id=_text(message, ORDER_ID),
        possible_duplicate=_possible_duplicate(message),
    )


def replace(message: fix.Message) -> m.ReplaceRequest:
    return m.ReplaceRequest(
        cl_ord_id=_text(message, CL_ORD_ID),
        orig_cl_ord_id=_text(message, ORIG_CL_ORD_ID),
        symbol=_text(message, SYMBOL),
        side=_text(message, SIDE),
        quantity=_text(message, ORDER_QTY),
        order_type=_text(message, ORD_TYPE),
        price=_optional(message, PRICE),
        stop_price=_optional(message, STOP_PX),
        time_in_force=_optional(message, TIME_IN_FORCE),
        order_id=_text(message, ORDER_ID),
        possible_duplicate=_possible_duplicate(message),
        max_floor=_optional(message, MAX_FLOOR),
    )


def status(message: fix.Message) -> m.StatusRequest:
    return m.StatusRequest(
        cl_ord_id=_text(message, CL_ORD_ID),
        symbol=_text(message, SYMBOL),
        side=_text(message, SIDE),
        order_id=_text(message, ORDER_ID),
        status_request_id=_text(message, ORD_STATUS_REQ_ID),
    )


def mass_status(message: fix.Message) -> m.MassStatusRequest:
    return m.MassStatusRequest(
        mass_status_request_id=_text(message, MASS_STATUS_REQ_ID),
        request_type=_text(message, MASS_STATUS_REQ_TYPE),
        symbol=_text(message, SYMBOL),
        account=_text(message, ACCOUNT),
    )


def market_data_request(message: fix.Message) -> m.MarketDataRequest:
    entry_types: list[str] = []
    group = fix44.MarketDataRequest.NoMDEntryTypes()
    for i in range(1, int(_text(message, NO_MD_ENTRY_TYPES) or 0) + 1):
        message.getGroup(i, group)
        entry_types.append(_text(group, MD_ENTRY_TYPE))
    symbols: list[str] = []
    related = fix44.MarketDataRequest.NoRelatedSym()
    for i in range(1, int(_text(message, NO_RELATED_SYM) or 0) + 1):
        message.getGroup(i, related)
        symbols.append(_text(related, SYMBOL))
    return m.MarketDataRequest(
        md_req_id=_text(message, MD_REQ_ID),
        subscription_type=_text(message, SUBSCRIPTION_REQUEST_TYPE),
        depth=int(_text(message, MARKET_DEPTH) or 0),
        update_type=_text(message, MD_UPDATE_TYPE),
        entry_types=tuple(entry_types),
        symbols=tuple(symbols),
    )


def security_list_request(message: fix.Message) -> m.SecurityListRequest:
    return m.SecurityListRequest(
        security_req_id=_text(message, SECURITY_REQ_ID),
        request_type=_text(message, SECURITY_LIST_REQUEST_TYPE),
        symbol=_text(message, SYMBOL),
    )


# What each session role accepts; anything else is answered with a BusinessMessageReject.
ORDER_ENTRY_PARSERS: dict[str, Callable[[fix.Message], object]] = {
    "D": new_order,
    "F": cancel,
    "G": replace,
    "H": status,
    "AF": mass_status,
    "x": security_list_request,
}
MARKET_DATA_PARSERS: dict[str, Callable[[fix.Message], object]] = {
    "V": market_data_request,
    "x": security_list_request,
}


# ---- outbound -----------------------------------------------------------------------------


def _new(msg_type: str) -> fix.Message:
    message = fix.Message()
    message.getHeader().setField(fix.MsgType(msg_type))
    return message


def _decimal_text(value: Decimal) -> str:
    text = format(value, "f")
    return text if text != "-0" else "0"


def execution_report(report: m.ExecutionReport) -> fix.Message:
    message = _new("8")
    set_text(message, ORDER_ID, report.exchange_order_id)
    if report.cl_ord_id:
        set_text(message, CL_ORD_ID, report.cl_ord_id)
    if report.orig_cl_ord_id:
        set_text(message, ORIG_CL_ORD_ID, report.orig_cl_ord_id)
    set_text(message, EXEC_ID, report.exec_id)
    set_text(message, EXEC_TYPE, report.exec_type)
    set_text(message, ORD_STATUS, report.ord_status)
    if report.account:
        set_text(message, ACCOUNT, report.account)
    set_text(message, SYMBOL, report.symbol)
    set_text(message, SIDE, report.side)
    if report.quantity:
        set_text(message, ORDER_QTY, report.quantity)
    if report.order_type:
        set_text(message, ORD_TYPE, report.order_type)
    if report.price is not None:
        set_text(message, PRICE, _decimal_text(report.price))
    if report.stop_price is not None:
        set_text(message, STOP_PX, _decimal_text(report.stop_price))
    if report.time_in_force:
        set_text(message, TIME_IN_FORCE, report.time_in_force)
    if report.expire_date:
        set_text(message, EXPIRE_DATE, report.expire_date)
    if report.max_floor:
        set_text(message, MAX_FLOOR, report.max_floor)
    if report.last_price is not None:
        set_text(message, LAST_QTY, report.last_qty)
        set_text(message, LAST_PX, _decimal_text(report.last_price))
    set_text(message, LEAVES_QTY, report.leaves)
    set_text(message, CUM_QTY, report.cum)
    set_text(message, AVG_PX, _decimal_text(report.average_price))
    set_text(message, TRANSACT_TIME, utc_timestamp(report.transact_time))
    if report.text:
        set_text(message, TEXT, report.text)
    if report.reject_reason is not None:
        set_text(message, ORD_REJ_REASON, report.reject_reason)
    if report.restatement_reason is not None:
        set_text(message, EXEC_RESTATEMENT_REASON, report.restatement_reason)
    if report.match_id:
        set_text(message, SECONDARY_EXEC_ID, report.match_id)
    if report.liquidity:
        set_text(message, LAST_LIQUIDITY_IND, report.liquidity)
    if report.status_request_id:
        set_text(message, ORD_STATUS_REQ_ID, report.status_request_id)
    if report.mass_status_request_id:
        set_text(message, MASS_STATUS_REQ_ID, report.mass_status_request_id)
        set_text(message, TOT_NUM_REPORTS, report.total_reports or 0)
        set_text(message, LAST_RPT_REQUESTED, "Y" if report.last_report else "N")
    return message


def cancel_reject(reject: m.CancelReject) -> fix.Message:
    message = _new("9")
    set_text(message, ORDER_ID, reject.exchange_order_id)
    set_text(message, CL_ORD_ID, reject.cl_ord_id)
    set_text(message, ORIG_CL_ORD_ID, reject.orig_cl_ord_id or "NONE")
    set_text(message, ORD_STATUS, reject.ord_status)
    set_text(message, CXL_REJ_RESPONSE_TO, reject.response_to)
    set_text(message, CXL_REJ_REASON, reject.reason)
    set_text(message, TRANSACT_TIME, utc_timestamp(reject.transact_time))
    if reject.text:
        set_text(message, TEXT, reject.text)
    return message


# ---- market data and the instrument master ------------------------------------------------

OPEN_CLOSE_SETTL_FLAG = 286
PREVIOUS_BUSINESS_DAY = "4"  # OpenCloseSettlFlag: entry from the previous business day
NO_STIPULATIONS = 232
NO_EVENTS = 864
CURRENCY_INR = "INR"
COMMON_STOCK = "CS"
EVENT_OTHER = "99"
PREVIOUS_CLOSE_EVENT = "PREVIOUS_CLOSE"


def _entry_time(group: fix.Group, time_ns: int) -> None:
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    set_text(group, MD_ENTRY_DATE, moment.strftime("%Y%m%d"))
    set_text(group, MD_ENTRY_TIME, moment.strftime("%H:%M:%S.") + f"{nanos // 1_000_000:03d}")


def _md_fields(group: fix.Group, entry: md.Entry) -> None:
    set_text(group, MD_ENTRY_TYPE, entry.entry_type)
    if entry.price is not None:
        set_text(group, MD_ENTRY_PX, _decimal_text(entry.price))
    if entry.size is not None:
        set_text(group, MD_ENTRY_SIZE, entry.size)
    if entry.time_ns:
        _entry_time(group, entry.time_ns)
    if entry.previous_day:
        set_text(group, OPEN_CLOSE_SETTL_FLAG, PREVIOUS_BUSINESS_DAY)
    if entry.orders is not None:
        set_text(group, NUMBER_OF_ORDERS, entry.orders)
    if entry.position is not None:
        set_text(group, MD_ENTRY_POSITION_NO, entry.position)


def market_data_snapshot(md_req_id: str, symbol: str, entries: list[md.Entry]) -> fix.Message:
    message = _new("W")
    set_text(message, MD_REQ_ID, md_req_id)
    set_text(message, SYMBOL, symbol)
    group = fix44.MarketDataSnapshotFullRefresh.NoMDEntries()
    for entry in entries:
        group.clear()
        _md_fields(group, entry)
        message.addGroup(group)
    return message


def market_data_incremental(md_req_id: str, entries: list[md.Entry]) -> fix.Message:
    """Entries of many symbols in one message; every entry names its symbol."""
    message = _new("X")
    set_text(message, MD_REQ_ID, md_req_id)
    group = fix44.MarketDataIncrementalRefresh.NoMDEntries()
    for entry in entries:
        group.clear()
        set_text(group, MD_UPDATE_ACTION, entry.action)
        set_text(group, SYMBOL, entry.symbol)
        _md_fields(group, entry)
        message.addGroup(group)
    return message


def market_data_reject(md_req_id: str, reason: str, text: str) -> fix.Message:
    message = _new("Y")
    set_text(message, MD_REQ_ID, md_req_id)
    set_text(message, MD_REQ_REJ_REASON, reason)
    set_text(message, TEXT, text)
    return message


def security_list(
    request_id: str,
    *,
    response_id: str,
    result: str,
    instruments: list[Instrument],
    total: int,
    last: bool,
) -> fix.Message:
    """The instrument master. FIX 4.4 has no MinPriceIncrement (969, FIX 5.0) nor a previous
    close in a SecurityList, so: tick size = Stipulation MININCR, sector = Stipulation SECTOR
    and Text (58), previous close = an instrument event (EventType 99, EventPx,
    EventText PREVIOUS_CLOSE). See the README for the whole mapping."""
    message = _new("y")
    set_text(message, SECURITY_REQ_ID, request_id)
    set_text(message, SECURITY_RESPONSE_ID, response_id)
    set_text(message, SECURITY_REQUEST_RESULT, result)
    set_text(message, TOT_NO_RELATED_SYM, total)
    set_text(message, LAST_FRAGMENT, "Y" if last else "N")
    related = fix44.SecurityList.NoRelatedSym()
    event = fix44.SecurityList.NoRelatedSym.NoEvents()
    stipulation = fix44.SecurityList.NoRelatedSym.NoStipulations()
    for instrument in instruments:
        related.clear()
        set_text(related, SYMBOL, instrument.symbol)
        set_text(related, SECURITY_TYPE, COMMON_STOCK)
        set_text(related, SECURITY_DESC, instrument.name)
        event.clear()
        set_text(event, EVENT_TYPE, EVENT_OTHER)
        set_text(event, EVENT_PX, _decimal_text(instrument.previous_close))
        set_text(event, EVENT_TEXT, PREVIOUS_CLOSE_EVENT)
        related.addGroup(event)
        set_text(related, CURRENCY, CURRENCY_INR)
        for kind, value in (("SECTOR", instrument.sector), ("MININCR", _decimal_text(instrument.tick_size))):
            stipulation.clear()
            set_text(stipulation, STIPULATION_TYPE, kind)
            set_text(stipulation, STIPULATION_VALUE, value)
            related.addGroup(stipulation)
        set_text(related, ROUND_LOT, instrument.lot_size)
        set_text(related, MIN_TRADE_VOL, instrument.lot_size)
        set_text(related, TEXT, instrument.sector)
        message.addGroup(related)
    return message
