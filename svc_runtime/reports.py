"""What an execution report means for an order: the one reading shared by every service that
acts on reports, so that they can never disagree on whether an order is over.

svc_orders moves the order with it and svc_funds releases the order's block with it; if one
took a report as the order's end and the other did not, an order could work at the exchange
with nothing blocked, or a block could outlive its order. Both read reports only through
`read`.

Pure: no I/O and no wire types. ExecType and OrdStatus are named as in brokermesh.exec.v1,
without their prefix (svc_orders' own enums use the same names).

Rules:
- CANCELED, REJECTED and EXPIRED end the order with that status.
- A TRADE ends it when it leaves the order FILLED.
- An ORDER_STATUS answer is read as the step that would have led to the status it states;
  a final status ends the order. Fills are never inferred from it.
- A CANCEL_REJECTED never ends the order, whatever OrdStatus it carries: the venue refused
  to change the order, which tells nothing about the order itself. An "unknown order"
  answer to a cancel (OrdStatus REJECTED on a cancel reject) is the same: it does not say
  the order is over, only that this venue cannot act on it now.
- Acknowledgements (NEW, TRIGGERED, REPLACED, PENDING_*) never end it.
"""

from __future__ import annotations

from dataclasses import dataclass

# How an order ended because the venue no longer holds it begins its reason (svc_exec ends
# it so, svc_orders keeps the text as the status reason): the audit cannot hold the venue to
# an order it forgot, and says so instead of calling it a disagreement.
NOT_HELD_BY_VENUE = "the venue does not hold the order"

FINAL_STATUSES = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
# Exec types that end an order with the status of the same name.
ENDING_EXEC_TYPES = frozenset({"CANCELED", "REJECTED", "EXPIRED"})
# A status answer as the step that would have led to the status it states.
STATUS_AS_STEP = {
    "NEW": "NEW",
    "PARTIALLY_FILLED": "NEW",
    "FILLED": "NEW",
    "CANCELED": "CANCELED",
    "REJECTED": "REJECTED",
    "EXPIRED": "EXPIRED",
    "PENDING_CANCEL": "PENDING_CANCEL",
    "PENDING_REPLACE": "PENDING_REPLACE",
}
# The steps a report can be; ORDER_STATUS is never one (it is read as one of these).
STEPS = frozenset(
    {
        "NEW",
        "TRIGGERED",
        "TRADE",
        "CANCELED",
        "REPLACED",
        "PENDING_CANCEL",
        "PENDING_REPLACE",
        "CANCEL_REJECTED",
        "REJECTED",
        "EXPIRED",
    }
)


@dataclass(frozen=True, slots=True)
class Reading:
    """`step`: what happened to the order (None: nothing to act on); `final`: the order's
    final status when this report says the order is over, else None."""

    step: str | None
    final: str | None = None

    @property
    def ends_order(self) -> bool:
        return self.final is not None


def read(exec_type: str, ord_status: str) -> Reading:
    """The reading of a report with this ExecType and OrdStatus (names without prefix)."""
    if exec_type == "ORDER_STATUS":
        step = STATUS_AS_STEP.get(ord_status)
        return Reading(step, ord_status if step is not None and ord_status in FINAL_STATUSES else None)
    if exec_type not in STEPS:
        return Reading(None)
    if exec_type in ENDING_EXEC_TYPES:
        return Reading(exec_type, exec_type)
    if exec_type == "TRADE" and ord_status == "FILLED":
        return Reading(exec_type, "FILLED")
    return Reading(exec_type)
