"""What an ExecutionReport means to the broker, venue dialect by venue dialect.

One table, one interpretation: every ExecutionReport svc_exec accepts maps to exactly one
broker outcome — a report kind to publish, nothing to publish (an acknowledgement that
changes nothing for the broker), or *unmappable*, which is never dropped: the order is
flagged as needing attention.

Dialects:
- STANDARD: the venue follows the FIX version of the session. FIX 4.4 reports a fill as
  ExecType F (Trade) and a status answer as I; FIX 4.2 reports a fill as ExecType 1/2
  (partial fill / fill) and a status answer with ExecTransType 3 (Status).
- TOLERANT: a FIX 4.4 session with a venue that still speaks FIX 4.2 in places (common):
  ExecType 1/2 are fills, ExecTransType 3 is a status answer, as in FIX 4.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from svc_exec.domain.model import ExecKind, OrdStatus


class Dialect(Enum):
    STANDARD = "STANDARD"
    TOLERANT = "TOLERANT"


class FixVersion(Enum):
    FIX42 = "FIX.4.2"
    FIX44 = "FIX.4.4"


@dataclass(frozen=True)
class Speech:
    """How a venue speaks: its session's FIX version and its dialect."""

    version: FixVersion = FixVersion.FIX44
    dialect: Dialect = Dialect.STANDARD

    @property
    def fills_as_4_2(self) -> bool:
        return self.version is FixVersion.FIX42 or self.dialect is Dialect.TOLERANT

    @property
    def has_mass_status(self) -> bool:
        # OrderMassStatusRequest (AF) arrived with FIX 4.3.
        return self.version is not FixVersion.FIX42

    @property
    def has_status_request_id(self) -> bool:
        # OrdStatusReqID (790) arrived with FIX 4.3 too.
        return self.version is not FixVersion.FIX42


@dataclass(frozen=True)
class Publish:
    kind: ExecKind


@dataclass(frozen=True)
class Acknowledged:
    """The venue says something the broker has no use for (e.g. Pending New)."""

    why: str


@dataclass(frozen=True)
class Unmappable:
    reason: str  # a short label (the metric's `reason`)
    detail: str


Meaning = Publish | Acknowledged | Unmappable

# ExecType values every dialect reads the same way.
_COMMON: dict[str, Meaning] = {
    "0": Publish(ExecKind.NEW),
    "4": Publish(ExecKind.CANCELED),
    "5": Publish(ExecKind.REPLACED),
    "6": Publish(ExecKind.PENDING_CANCEL),
    "8": Publish(ExecKind.REJECTED),
    "C": Publish(ExecKind.EXPIRED),
    "E": Publish(ExecKind.PENDING_REPLACE),
    "A": Acknowledged("pending new: the New report follows"),
    "B": Acknowledged("calculated: nothing changed for the order"),
    "3": Unmappable("done_for_day", "ExecType 3 (done for day): the order's fate is not stated"),
    "7": Unmappable("stopped", "ExecType 7 (stopped): a price guarantee the broker does not model"),
    "9": Unmappable("suspended", "ExecType 9 (suspended)"),
    "D": Unmappable("restated", "ExecType D (restated): the venue changed the order on its own"),
}
_FIX44: dict[str, Meaning] = {
    "F": Publish(ExecKind.TRADE),
    "I": Publish(ExecKind.ORDER_STATUS),
    "L": Publish(ExecKind.TRIGGERED),
    "G": Unmappable("trade_correct", "ExecType G (trade correction)"),
    "H": Unmappable("trade_cancel", "ExecType H (trade bust)"),
}
_FILLS_4_2: dict[str, Meaning] = {"1": Publish(ExecKind.TRADE), "2": Publish(ExecKind.TRADE)}

# FIX 4.2 ExecTransType (tag 20).
_TRANS_NEW, _TRANS_CANCEL, _TRANS_CORRECT, _TRANS_STATUS = "0", "1", "2", "3"


# FIX 4.4 has no ExecType for a stop's trigger: a venue restates the order (150=D) for the
# reason "Market (Exchange) option" (378=8), the venue's own rule; on a stop order (40=3/4)
# that restatement is its trigger, in every dialect.
_RESTATED, _MARKET_OPTION, _STOP_ORDER_TYPES = "D", "8", ("3", "4")


def interpret(
    speech: Speech,
    exec_type: str,
    exec_trans_type: str = "",
    *,
    restatement_reason: str = "",
    ord_type: str = "",
) -> Meaning:
    """The broker outcome of an ExecutionReport with this ExecType (150) and, in FIX 4.2
    style, ExecTransType (20); ExecRestatementReason (378) and OrdType (40) tell a stop's
    trigger from other restatements."""
    if exec_type == _RESTATED and restatement_reason == _MARKET_OPTION and ord_type in _STOP_ORDER_TYPES:
        return Publish(ExecKind.TRIGGERED)
    if speech.fills_as_4_2 and exec_trans_type:
        if exec_trans_type == _TRANS_STATUS:
            return Publish(ExecKind.ORDER_STATUS)
        if exec_trans_type in (_TRANS_CANCEL, _TRANS_CORRECT):
            return Unmappable(
                "trade_correction", f"ExecTransType {exec_trans_type}: a fill was busted or corrected"
            )
        if exec_trans_type != _TRANS_NEW:
            return Unmappable("exec_trans_type", f"ExecTransType {exec_trans_type!r} is not a FIX value")
    table = dict(_COMMON)
    if speech.version is FixVersion.FIX44:
        table.update(_FIX44)
    if speech.fills_as_4_2:
        table.update(_FILLS_4_2)
    meaning = table.get(exec_type)
    if meaning is None:
        return Unmappable(
            "exec_type",
            f"ExecType {exec_type!r} is not one {speech.version.value} ({speech.dialect.value}) reports",
        )
    return meaning


def fill_status(reported: OrdStatus | None, cum_qty: int, order_qty: int) -> OrdStatus:
    """The order's status after a fill, for venues that send a 4.2-style fill without a
    consistent OrdStatus: FILLED once the cumulative quantity reaches the order's."""
    if reported is OrdStatus.PARTIALLY_FILLED and order_qty and cum_qty >= order_qty:
        return OrdStatus.FILLED
    if reported in (OrdStatus.FILLED, OrdStatus.PARTIALLY_FILLED, OrdStatus.CANCELED, OrdStatus.EXPIRED):
        return reported
    if order_qty and cum_qty >= order_qty:
        return OrdStatus.FILLED
    return OrdStatus.PARTIALLY_FILLED
