"""What arrives from and leaves for a FIX counterparty, in the exchange's own terms.

Requests carry the raw tag text the counterparty sent (the app validates and parses it, so
bad input becomes a clear business reject); reports carry exact values that the FIX adapter
renders. FIX code values (ExecType, OrdStatus, reject reasons) are the vocabulary of an
exchange, so they appear here as named constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

# ExecType (150).
EXEC_NEW = "0"
EXEC_CANCELED = "4"
EXEC_REPLACED = "5"
EXEC_REJECTED = "8"
EXEC_EXPIRED = "C"
EXEC_TRADE = "F"
EXEC_ORDER_STATUS = "I"
# FIX 4.4 has no ExecType for a stop order's trigger ("L", Triggered, came with FIX 5.0): the
# exchange restates the order (150=D) with ExecRestatementReason 8, "Market (Exchange) option".
EXEC_RESTATED = "D"

# ExecRestatementReason (378).
RESTATED_MARKET_OPTION = 8

# OrdStatus (39).
STATUS_NEW = "0"
STATUS_PARTIALLY_FILLED = "1"
STATUS_FILLED = "2"
STATUS_CANCELED = "4"
STATUS_REJECTED = "8"
STATUS_EXPIRED = "C"

# OrdRejReason (103).
REJECT_EXCHANGE_OPTION = 0
REJECT_UNKNOWN_SYMBOL = 1
REJECT_EXCHANGE_CLOSED = 2
REJECT_EXCEEDS_LIMIT = 3
REJECT_UNKNOWN_ORDER = 5
REJECT_DUPLICATE_ORDER = 6
REJECT_UNSUPPORTED = 11
REJECT_INCORRECT_QUANTITY = 13
REJECT_OTHER = 99

# CxlRejReason (102).
CXL_TOO_LATE = 0
CXL_UNKNOWN_ORDER = 1
CXL_EXCHANGE_OPTION = 2
CXL_DUPLICATE_CL_ORD_ID = 6
CXL_OTHER = 99

# CxlRejResponseTo (434).
RESPONSE_TO_CANCEL = "1"
RESPONSE_TO_REPLACE = "2"

# MassStatusReqType (585).
MASS_STATUS_SECURITY = "1"
MASS_STATUS_ALL = "7"


@dataclass(frozen=True, slots=True)
class NewOrderRequest:
    cl_ord_id: str
    symbol: str
    side: str
    quantity: str
    order_type: str
    price: str | None = None
    stop_price: str | None = None
    time_in_force: str | None = None
    account: str = ""
    possible_duplicate: bool = False
    expire_date: str | None = None  # ExpireDate (432), LocalMktDate YYYYMMDD, for GTD
    expire_time: str | None = None  # ExpireTime (126), UTCTimestamp, for GTD
    max_floor: str | None = None  # MaxFloor (111): the display quantity of an iceberg


@dataclass(frozen=True, slots=True)
class CancelRequest:
    cl_ord_id: str
    orig_cl_ord_id: str
    symbol: str
    side: str
    order_id: str = ""
    possible_duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReplaceRequest:
    cl_ord_id: str
    orig_cl_ord_id: str
    symbol: str
    side: str
    quantity: str
    order_type: str
    price: str | None = None
    stop_price: str | None = None
    time_in_force: str | None = None
    order_id: str = ""
    possible_duplicate: bool = False
    max_floor: str | None = None  # MaxFloor (111); absent: the order shows in full


@dataclass(frozen=True, slots=True)
class StatusRequest:
    cl_ord_id: str
    symbol: str
    side: str
    order_id: str = ""
    status_request_id: str = ""


@dataclass(frozen=True, slots=True)
class MassStatusRequest:
    mass_status_request_id: str
    request_type: str
    symbol: str = ""
    account: str = ""


@dataclass(slots=True)
class ExecutionReport:
    session: str
    exchange_order_id: str
    cl_ord_id: str
    exec_id: str
    exec_type: str
    ord_status: str
    symbol: str
    side: str  # "1" buy, "2" sell
    order_type: str  # OrdType (40)
    time_in_force: str  # TimeInForce (59)
    quantity: int
    leaves: int
    cum: int
    average_price: Decimal
    transact_time: datetime
    price: Decimal | None = None
    stop_price: Decimal | None = None
    last_qty: int = 0
    last_price: Decimal | None = None
    orig_cl_ord_id: str = ""
    account: str = ""
    text: str = ""
    reject_reason: int | None = None
    restatement_reason: int | None = None
    match_id: str = ""
    # LastLiquidityInd (851): 1 added liquidity (resting), 2 removed it (aggressor).
    liquidity: str = ""
    status_request_id: str = ""
    mass_status_request_id: str = ""
    total_reports: int | None = None
    last_report: bool = False
    expire_date: str = ""  # ExpireDate (432) of a GTD order, YYYYMMDD
    max_floor: int = 0  # MaxFloor (111) of an iceberg order


@dataclass(slots=True)
class CancelReject:
    session: str
    cl_ord_id: str
    orig_cl_ord_id: str
    exchange_order_id: str
    ord_status: str
    response_to: str
    reason: int
    text: str
    transact_time: datetime


@dataclass(frozen=True, slots=True)
class MarketDataRequest:
    md_req_id: str
    subscription_type: str  # 263: 0 snapshot, 1 snapshot + updates, 2 unsubscribe
    depth: int  # 264: 0 full book, 1 top of book, N levels
    entry_types: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    update_type: str = ""  # 265: 0 full refresh, 1 incremental


@dataclass(frozen=True, slots=True)
class SecurityListRequest:
    security_req_id: str
    request_type: str  # 559: 0 one symbol, 4 all securities
    symbol: str = ""
