"""The order executor's vocabulary. It speaks FIX 4.4, so enum values are the FIX codes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum


class Side(Enum):
    BUY = "1"
    SELL = "2"


class OrdType(Enum):
    MARKET = "1"
    LIMIT = "2"
    STOP = "3"
    STOP_LIMIT = "4"

    @property
    def has_limit_price(self) -> bool:
        return self in (OrdType.LIMIT, OrdType.STOP_LIMIT)

    @property
    def has_stop_price(self) -> bool:
        return self in (OrdType.STOP, OrdType.STOP_LIMIT)


class TimeInForce(Enum):
    DAY = "0"
    GTC = "1"
    IOC = "3"
    FOK = "4"
    GTD = "6"  # with ExpireDate (432)


class ExecKind(Enum):
    """What a report reports: FIX ExecType (tag 150) values, plus the cancel reject."""

    NEW = "0"
    CANCELED = "4"
    REPLACED = "5"
    PENDING_CANCEL = "6"
    REJECTED = "8"
    EXPIRED = "C"
    PENDING_REPLACE = "E"
    TRADE = "F"
    ORDER_STATUS = "I"
    TRIGGERED = "L"
    CANCEL_REJECTED = "9"  # FIX MsgType 9, OrderCancelReject: no ExecType of its own
    # Not FIX: the venue said something about the order that svc_exec could not interpret,
    # or refused to say anything; an operator must look (see `VenueIncident`).
    NEEDS_ATTENTION = "attention"


class OrdStatus(Enum):
    """The order's state at the exchange (FIX OrdStatus, tag 39)."""

    NEW = "0"
    PARTIALLY_FILLED = "1"
    FILLED = "2"
    CANCELED = "4"
    PENDING_CANCEL = "6"
    REJECTED = "8"
    EXPIRED = "C"
    PENDING_REPLACE = "E"
    PENDING_NEW = "A"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED, OrdStatus.EXPIRED})

# The report that announces each terminal status, for reports inferred from a status answer.
TERMINAL_KIND = {
    OrdStatus.CANCELED: ExecKind.CANCELED,
    OrdStatus.EXPIRED: ExecKind.EXPIRED,
    OrdStatus.REJECTED: ExecKind.REJECTED,
}

# FIX OrdRejReason (tag 103) 5: the exchange does not know the order.
UNKNOWN_ORDER_REASON = "5"
# FIX CxlRejReason (tag 102) 1: a cancel or replace refused because the order is unknown.
UNKNOWN_ORDER_CXL_REJ_REASON = "1"


@dataclass(frozen=True, slots=True)
class Report:
    """One execution report or cancel reject as received from the exchange (or inferred)."""

    kind: ExecKind
    exec_id: str
    cl_ord_id: str
    status: OrdStatus | None = None
    orig_cl_ord_id: str = ""
    exchange_order_id: str = ""
    symbol: str = ""
    side: Side | None = None
    order_qty: int = 0
    last_qty: int = 0
    last_px: Decimal | None = None
    cum_qty: int = 0
    leaves_qty: int = 0
    avg_px: Decimal | None = None
    limit_px: Decimal | None = None
    text: str = ""
    transact_time: datetime | None = None
    possible_duplicate: bool = False
    # Correlation of answers to our questions.
    status_request_id: str = ""
    mass_status_request_id: str = ""
    mass_status_total: int = 0
    last_of_mass_status: bool = False
    # A status answer, or a cancel reject, saying the venue does not know the order.
    unknown_order: bool = False
    raw: str = ""  # status answers keep their FIX text, for an incident if they need one

    @property
    def msg_id(self) -> str:
        """The JetStream dedup id: the exchange's ExecID, or a derived id for messages that
        carry none (cancel rejects) or whose ExecID venues do not keep unique (status
        answers, which many venues send with ExecID 0)."""
        if self.kind is ExecKind.CANCEL_REJECTED:
            return f"cxlrej-{self.cl_ord_id}"
        if self.kind is ExecKind.ORDER_STATUS:
            status = self.status.value if self.status else "-"
            return f"status-{self.cl_ord_id}-{status}-{self.cum_qty}-{self.leaves_qty}-{self.order_qty}"
        return self.exec_id


@dataclass(frozen=True, slots=True)
class Addressed:
    """A report resolved to the broker's order: ready to publish."""

    report: Report
    order_id: str
    user_id: str
    request_id: str
    # W3C traceparent of svc_exec's span for the report, when tracing is on.
    traceparent: str = ""

    @property
    def msg_id(self) -> str:
        return self.report.msg_id


@dataclass(frozen=True)
class MessageRejected:
    """The exchange refused one of our messages outright: a session-level Reject (35=3) or a
    BusinessMessageReject (35=j). Nothing about the order changed at the exchange."""

    ref_msg_type: str
    cl_ord_id: str  # of the refused message, when it had one
    ref_id: str  # BusinessRejectRefID or the refused message's request id
    text: str
    session_level: bool = False  # 35=3 (else 35=j)
    reason_code: str = ""  # SessionRejectReason (373) or BusinessRejectReason (380)
    raw: str = ""
    referenced_raw: str = ""

    def incident(self) -> VenueIncident:
        kind = "session_reject_received" if self.session_level else "business_reject"
        return VenueIncident(
            kind=kind,
            reason=f"{self.ref_msg_type or '?'}:{self.reason_code or '?'}",
            text=self.text or "refused",
            raw=f"{self.raw} refers to {self.referenced_raw}" if self.referenced_raw else self.raw,
            cl_ord_id=self.cl_ord_id,
            ref_msg_type=self.ref_msg_type,
        )

    def as_report(self) -> Report | None:
        """How the broker hears of it: a refused order is rejected, a refused cancel or
        replace is a cancel reject; refused queries concern only whoever asked."""
        if not self.cl_ord_id:
            return None
        text = f"refused by the exchange: {self.text}" if self.text else "refused by the exchange"
        if self.ref_msg_type == "D":
            return Report(
                kind=ExecKind.REJECTED,
                exec_id=f"msgrej-{self.cl_ord_id}",
                cl_ord_id=self.cl_ord_id,
                status=OrdStatus.REJECTED,
                text=text,
            )
        if self.ref_msg_type in ("F", "G"):
            return Report(kind=ExecKind.CANCEL_REJECTED, exec_id="", cl_ord_id=self.cl_ord_id, text=text)
        return None


@dataclass(frozen=True)
class VenueIncident:
    """Something the venue and svc_exec did not agree on: a session-level Reject sent or
    received (35=3), a BusinessMessageReject (35=j), a report svc_exec cannot map, a status
    request refused, an order the venue denies knowing. Never dropped: logged with the raw
    message, counted, stored, and the order it concerns (if any) flagged as needing
    attention."""

    kind: str  # session_reject_sent, session_reject_received, business_reject, unmappable, ...
    reason: str  # short label for the metric
    text: str
    raw: str = ""  # the message concerned, as FIX text (SOH shown as |)
    cl_ord_id: str = ""
    ref_msg_type: str = ""
    ref_seq: int | None = None
    # The venue's OrderID, when the message concerned carried one: status requests name it.
    exchange_order_id: str = ""

    @property
    def key(self) -> str:
        """Stable across replays of the same message (a resend after a crash)."""
        return hashlib.sha1(f"{self.kind}|{self.raw}|{self.text}".encode()).hexdigest()[:20]

    def attention_report(self, order_id: str) -> Report:
        """The report that flags the order as needing attention."""
        return Report(
            kind=ExecKind.NEEDS_ATTENTION,
            exec_id=f"attention-{order_id}-{self.key}",
            cl_ord_id=self.cl_ord_id,
            text=f"needs attention ({self.kind}: {self.reason}): {self.text}"[:500],
        )


Inbound = Report | MessageRejected | VenueIncident
