"""The order state machine (docs/architecture.md §4): one explicit transition table, and the pure
functions that apply broker actions and exchange reports to an order.

Every change bumps the order's version by one and names the event clients see. A pair
(status, trigger) missing from the table is not allowed: a client request gets
FAILED_PRECONDITION, an exchange report is recorded and ignored (and logged). Fills are
the exception: a fill is a fact at the exchange, so it applies in every state the exchange
can have seen, including after a cancel request and after a terminal state.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from svc_orders.domain.model import (
    LEGS,
    STOP_TYPES,
    EventType,
    ExchangeReport,
    ExecType,
    Fill,
    FundsAction,
    Order,
    PendingChange,
    Side,
    Status,
    Transition,
)
from svc_orders.domain.validation import Modification
from svc_runtime import reports
from svc_runtime.errors import FailedPrecondition


class Trigger(StrEnum):
    # Broker actions.
    ACCEPT = "ACCEPT"  # funds are blocked: the order goes to the exchange
    BROKER_REJECT = "BROKER_REJECT"  # the broker gives up on an order the exchange never took
    CANCEL_REQUEST = "CANCEL_REQUEST"
    MODIFY_REQUEST = "MODIFY_REQUEST"
    # Exchange reports (ExecType), ORDER_STATUS being mapped to one of these first.
    NEW = "NEW"
    TRIGGERED = "TRIGGERED"
    TRADE = "TRADE"
    CANCELED = "CANCELED"
    REPLACED = "REPLACED"
    PENDING_CANCEL = "PENDING_CANCEL"
    PENDING_REPLACE = "PENDING_REPLACE"
    CANCEL_REJECTED = "CANCEL_REJECTED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    # The executor flags the order (ExecType NEEDS_ATTENTION): status unchanged.
    NEEDS_ATTENTION = "NEEDS_ATTENTION"
    # The order's OCO group no longer needs it (a sibling filled, or the TARGET holding the
    # group's block ended unfilled): the broker withdraws it.
    OCO_WITHDRAW = "OCO_WITHDRAW"


class Rule(StrEnum):
    """Targets computed from the order rather than fixed."""

    WORKING = "WORKING"  # TRIGGER_PENDING, OPEN or PARTIALLY_FILLED from the trigger and fills
    FILL = "FILL"  # record the fill: FILLED when complete, else keep a pending/terminal status
    REPLACE = "REPLACE"  # take the new terms, then WORKING
    RESUME = "RESUME"  # a cancel/modify was refused: back to the working status
    SAME = "SAME"  # status unchanged: an acknowledgement already reflected


S, T, R = Status, Trigger, Rule
Target = Status | Rule

# What an exchange report can do to an order that is working at the exchange.
_AT_EXCHANGE: dict[Trigger, Target] = {
    T.NEW: R.SAME,
    T.TRIGGERED: R.WORKING,
    T.TRADE: R.FILL,
    T.CANCELED: S.CANCELLED,
    T.EXPIRED: S.EXPIRED,
    T.REJECTED: S.REJECTED,
    T.REPLACED: R.REPLACE,
    T.PENDING_CANCEL: R.SAME,
    T.PENDING_REPLACE: R.SAME,
    T.CANCEL_REJECTED: R.SAME,
    T.CANCEL_REQUEST: S.PENDING_CANCEL,
    T.MODIFY_REQUEST: S.PENDING_REPLACE,
    T.OCO_WITHDRAW: S.PENDING_CANCEL,
}

TRANSITIONS: dict[Status, dict[Trigger, Target]] = {
    S.FUNDS_PENDING: {
        T.ACCEPT: S.PENDING_EXCHANGE,
        T.BROKER_REJECT: S.REJECTED,
        T.OCO_WITHDRAW: S.CANCELLED,
    },
    S.PENDING_EXCHANGE: {
        T.NEW: R.WORKING,
        T.TRIGGERED: R.WORKING,
        T.TRADE: R.FILL,
        T.CANCELED: S.CANCELLED,
        T.REJECTED: S.REJECTED,
        T.EXPIRED: S.EXPIRED,
        T.PENDING_CANCEL: R.SAME,
        T.CANCEL_REJECTED: R.SAME,
        T.CANCEL_REQUEST: S.PENDING_CANCEL,
        T.BROKER_REJECT: S.REJECTED,
        T.OCO_WITHDRAW: S.PENDING_CANCEL,
    },
    S.OPEN: dict(_AT_EXCHANGE),
    S.TRIGGER_PENDING: dict(_AT_EXCHANGE),
    S.PARTIALLY_FILLED: {**_AT_EXCHANGE, T.TRIGGERED: R.SAME},
    S.PENDING_CANCEL: {
        T.NEW: R.SAME,
        T.TRIGGERED: R.SAME,
        T.TRADE: R.FILL,  # fills after a cancel request are real
        T.CANCELED: S.CANCELLED,
        T.EXPIRED: S.EXPIRED,
        T.REJECTED: S.REJECTED,
        T.PENDING_CANCEL: R.SAME,
        T.CANCEL_REJECTED: R.RESUME,
        T.CANCEL_REQUEST: R.SAME,  # already asked: nothing new to send
        T.OCO_WITHDRAW: R.SAME,
    },
    S.PENDING_REPLACE: {
        T.NEW: R.SAME,
        T.TRIGGERED: R.SAME,
        T.TRADE: R.FILL,
        T.REPLACED: R.REPLACE,
        T.PENDING_REPLACE: R.SAME,
        T.CANCEL_REJECTED: R.RESUME,
        T.CANCELED: S.CANCELLED,
        T.EXPIRED: S.EXPIRED,
        # The exchange ending the order while a change is pending: the order is over, as
        # svc_funds reads the same report (svc_runtime.reports).
        T.REJECTED: S.REJECTED,
        T.OCO_WITHDRAW: S.PENDING_CANCEL,
    },
    # Terminal: only late fills (reordered or racing a cancel) still apply.
    S.FILLED: {T.TRADE: R.FILL},
    S.CANCELLED: {T.TRADE: R.FILL},
    S.EXPIRED: {T.TRADE: R.FILL},
    S.REJECTED: {T.TRADE: R.FILL},
}

EVENTS: dict[Trigger, EventType] = {
    T.ACCEPT: EventType.ACCEPTED,
    T.BROKER_REJECT: EventType.REJECTED,
    T.CANCEL_REQUEST: EventType.CANCEL_REQUESTED,
    T.MODIFY_REQUEST: EventType.MODIFY_REQUESTED,
    T.NEW: EventType.OPENED,
    T.TRIGGERED: EventType.TRIGGERED,
    T.TRADE: EventType.FILLED,
    T.CANCELED: EventType.CANCELLED,
    T.REPLACED: EventType.MODIFIED,
    T.PENDING_CANCEL: EventType.CANCEL_REQUESTED,
    T.PENDING_REPLACE: EventType.MODIFY_REQUESTED,
    T.CANCEL_REJECTED: EventType.AMEND_REJECTED,
    T.REJECTED: EventType.REJECTED,
    T.EXPIRED: EventType.EXPIRED,
    T.NEEDS_ATTENTION: EventType.NEEDS_ATTENTION,
    T.OCO_WITHDRAW: EventType.CANCEL_REQUESTED,
}

# Why the edges that are not plain reading of a report or a request exist. A test keeps
# every edge of an added trigger explained here.
EDGE_REASONS: dict[tuple[Status, Trigger], str] = {
    (S.FUNDS_PENDING, T.OCO_WITHDRAW): (
        "an OCO leg not yet sent is withdrawn on the spot: the exchange never saw it, nothing to ask"
    ),
    (S.PENDING_EXCHANGE, T.OCO_WITHDRAW): "sent but unacknowledged: the cancel follows the new order",
    (S.OPEN, T.OCO_WITHDRAW): "the sibling filled: one cancels the other",
    (S.TRIGGER_PENDING, T.OCO_WITHDRAW): "a waiting stop-loss whose target filled is withdrawn",
    (S.PARTIALLY_FILLED, T.OCO_WITHDRAW): "both legs traded in a race: what is left of this one goes",
    (S.PENDING_CANCEL, T.OCO_WITHDRAW): "a cancel is already on its way: nothing more to send",
    (S.PENDING_REPLACE, T.OCO_WITHDRAW): (
        "a leg being modified is cancelled all the same: the exchange answers the cancel after the replace"
    ),
    (S.PENDING_EXCHANGE, T.TRADE): "a fill can overtake the acknowledgement of its order",
    (S.PENDING_CANCEL, T.TRADE): "fills after a cancel request are real",
    (S.FILLED, T.TRADE): "a late fill (reordered, or racing a cancel) is a fact at the exchange",
    (S.CANCELLED, T.TRADE): "a late fill (reordered, or racing a cancel) is a fact at the exchange",
    (S.EXPIRED, T.TRADE): "a late fill (reordered, or racing a cancel) is a fact at the exchange",
    (S.REJECTED, T.TRADE): "a late fill (reordered, or racing a cancel) is a fact at the exchange",
}


class ReportNotApplicable(Exception):
    """The report cannot be applied yet (it arrived before one it depends on); the caller
    retries it later rather than dropping a fact."""


def allowed(status: Status, trigger: Trigger) -> bool:
    return trigger in TRANSITIONS[status]


def trigger_of(report: ExchangeReport) -> Trigger | None:
    """The report's step, as svc_funds reads it too (`svc_runtime.reports`): a status answer
    is the step that would have led to the status it states; fills are never inferred from
    it, they arrive as their own reports (svc_exec replays missed ones on reconciliation)."""
    step = reports.read(report.exec_type.value, report.ord_status.value).step
    return Trigger(step) if step is not None else None


def _working(order: Order) -> Status:
    if order.filled_quantity >= order.quantity:
        return S.FILLED
    if order.filled_quantity > 0:
        return S.PARTIALLY_FILLED
    if order.type in STOP_TYPES and not order.triggered:
        return S.TRIGGER_PENDING
    return S.OPEN


def _resume(order: Order) -> Status:
    """Where a refused cancel or modification leaves the order."""
    if (
        order.resume_status is S.PENDING_EXCHANGE
        and not order.exchange_order_id
        and order.filled_quantity == 0
    ):
        return S.PENDING_EXCHANGE
    return _working(order)


def _material(order: Order) -> tuple[object, ...]:
    """Everything a client can see change (not the timestamps or the version)."""
    return (
        order.status,
        order.quantity,
        order.limit_price,
        order.stop_price,
        order.protection_price,
        order.filled_quantity,
        order.filled_value,
        order.exchange_order_id,
        order.status_reason,
        order.triggered,
        order.pending,
        order.resume_status,
    )


def _finish(
    before: Order,
    after: Order,
    trigger: Trigger,
    now: datetime,
    *,
    fill: Fill | None = None,
    funds_action: FundsAction | None = None,
    anomaly: str = "",
) -> Transition:
    if _material(after) == _material(before):
        return Transition(before=before, after=before, trigger=trigger, anomaly=anomaly)
    after = replace(after, version=before.version + 1, update_time=now)
    return Transition(
        before=before,
        after=after,
        trigger=trigger,
        event=EVENTS[trigger],
        fill=fill,
        funds_action=funds_action,
        anomaly=anomaly,
    )


def _require(order: Order, trigger: Trigger, *, reason: str, what: str) -> Target:
    target = TRANSITIONS[order.status].get(trigger)
    if target is None:
        raise FailedPrecondition(
            f"cannot {what} an order that is {order.status.public}",
            reason=reason,
            metadata={"status": order.status.public.value},
        )
    return target


# --- broker actions ---------------------------------------------------------------------
def accept(order: Order, now: datetime) -> Transition:
    """Funds are blocked: the order is on its way to the exchange."""
    _require(order, T.ACCEPT, reason="ORDER_NOT_PENDING", what="accept")
    return _finish(order, replace(order, status=S.PENDING_EXCHANGE), T.ACCEPT, now)


def broker_reject(order: Order, reason: str, now: datetime) -> Transition:
    """The broker gives up on an order the exchange never took, and releases its block."""
    _require(order, T.BROKER_REJECT, reason="ORDER_NOT_PENDING", what="reject")
    after = replace(order, status=S.REJECTED, status_reason=reason, pending=None, resume_status=None)
    release = FundsAction(kind="RELEASE", order_id=order.order_id, user_id=order.user_id, reason="REJECTED")
    return _finish(order, after, T.BROKER_REJECT, now, funds_action=release)


def request_cancel(order: Order, request_id: str, now: datetime) -> Transition:
    """PENDING_CANCEL until the exchange answers; already pending → unchanged."""
    target = _require(order, T.CANCEL_REQUEST, reason="ORDER_NOT_CANCELLABLE", what="cancel")
    if target is R.SAME:
        return Transition(before=order, after=order, trigger=T.CANCEL_REQUEST)
    after = replace(
        order,
        status=S.PENDING_CANCEL,
        pending=PendingChange(kind="CANCEL", request_id=request_id),
        resume_status=order.status,
    )
    return _finish(order, after, T.CANCEL_REQUEST, now)


def block_basis(side: Side, quantity: int, block_price: Decimal | None) -> Decimal:
    """What an order's block is proportional to: cash (quantity × price) for a BUY,
    shares for a SELL."""
    if side is Side.BUY and block_price is not None:
        return block_price * quantity
    return Decimal(quantity)


def request_modify(
    order: Order,
    modification: Modification,
    protection_price: Decimal | None,
    request_id: str,
    now: datetime,
    *,
    block_raised: bool,
) -> Transition:
    """PENDING_REPLACE until the exchange answers. `block_raised`: the block was already
    raised to the new terms (a bigger order), so a refusal must lower it again."""
    _require(order, T.MODIFY_REQUEST, reason="ORDER_NOT_MODIFIABLE", what="modify")
    pending = PendingChange(
        kind="REPLACE",
        request_id=request_id,
        quantity=modification.quantity,
        limit_price=modification.limit_price,
        stop_price=modification.stop_price,
        protection_price=protection_price,
        block_raised=block_raised,
    )
    after = replace(order, status=S.PENDING_REPLACE, pending=pending, resume_status=order.status)
    return _finish(order, after, T.MODIFY_REQUEST, now)


SIBLING_FILLED_REASON = "OCO: a sibling leg filled"
TARGET_ENDED_REASON = "OCO: the target leg ended unfilled, and with it the block of the shares this leg sells"
# The cancel request of a withdrawn OCO leg is named after the leg that caused it.
_SIBLING_CANCEL = "oco-"


def withdraw_sibling(
    order: Order, cause_order_id: str, now: datetime, reason: str = SIBLING_FILLED_REASON
) -> Transition:
    """The order's OCO group no longer needs it (`reason`). Not yet sent → CANCELLED at once; working at
    the exchange → PENDING_CANCEL (the caller sends the cancel in the same commit);
    already over or already being cancelled → unchanged."""
    target = TRANSITIONS[order.status].get(T.OCO_WITHDRAW)
    if target is None or target is R.SAME:
        return Transition(before=order, after=order, trigger=T.OCO_WITHDRAW)
    if target is S.CANCELLED:
        after = replace(order, status=S.CANCELLED, status_reason=reason, pending=None, resume_status=None)
        # A leg with a block of its own may have got it before the sibling filled.
        release = (
            FundsAction(kind="RELEASE", order_id=order.order_id, user_id=order.user_id, reason="CANCELLED")
            if LEGS[order.leg].own_block
            else None
        )
        return _finish(order, after, T.OCO_WITHDRAW, now, funds_action=release)
    after = replace(
        order,
        status=S.PENDING_CANCEL,
        status_reason=reason,
        pending=PendingChange(kind="CANCEL", request_id=f"{_SIBLING_CANCEL}{cause_order_id}"),
        resume_status=order.status if order.status is not S.PENDING_REPLACE else order.resume_status,
    )
    return _finish(order, after, T.OCO_WITHDRAW, now)


def needs_attention(order: Order, text: str, now: datetime) -> Transition:
    """The executor could not interpret what the venue said about the order (or the venue
    refused to say, or denies knowing it). Nothing is known to have changed, so the status
    stays; the reason tells clients and operators the order is not simply healthy."""
    after = replace(order, status_reason=f"needs attention: {text}"[:500])
    return _finish(order, after, T.NEEDS_ATTENTION, now)


# --- exchange reports -------------------------------------------------------------------
def _fill_of(order: Order, report: ExchangeReport, now: datetime) -> Fill:
    if report.last_quantity <= 0 or report.last_price is None or report.last_price <= 0:
        raise ValueError(f"fill {report.exec_id} has no quantity or price")
    cumulative = report.cumulative_quantity or order.filled_quantity + report.last_quantity
    return Fill(
        exec_id=report.exec_id,
        order_id=order.order_id,
        quantity=report.last_quantity,
        price=report.last_price,
        cumulative_quantity=cumulative,
        execute_time=report.transact_time or now,
    )


def _block_price(order: Order, limit: Decimal | None, protection: Decimal | None) -> Decimal | None:
    return limit if limit is not None else protection


def apply_report(order: Order, report: ExchangeReport, now: datetime) -> Transition:
    """Apply one execution report. Duplicates are screened out before (by exec id and by
    cumulative quantity), so every fill reaching here is new."""
    trigger = trigger_of(report)
    if trigger is None:
        return Transition(
            before=order, after=order, trigger=str(report.exec_type), anomaly="status not actionable"
        )
    target = TRANSITIONS[order.status].get(trigger)
    if target is None and trigger is T.TRADE:
        # A fill is never dropped: it can only precede the order's acceptance if reports
        # were reordered, so it waits for that.
        raise ReportNotApplicable(f"fill {report.exec_id} for {order.order_id} in status {order.status}")
    if target is None:
        return Transition(
            before=order,
            after=order,
            trigger=trigger,
            anomaly=f"{trigger} ignored in status {order.status}",
        )
    after = order
    if report.exchange_order_id and not order.exchange_order_id:
        after = replace(after, exchange_order_id=report.exchange_order_id)
    if trigger is T.TRIGGERED:
        after = replace(after, triggered=True)

    fill: Fill | None = None
    funds_action: FundsAction | None = None
    anomaly = ""
    if trigger is T.TRADE:
        fill = _fill_of(order, report, now)
        filled = order.filled_quantity + fill.quantity
        if filled > order.quantity:
            # Only possible when a confirmed increase of the quantity has not been applied
            # yet (its report is behind this one): try again later.
            raise ReportNotApplicable(
                f"fill {fill.exec_id} would fill {filled} of {order.quantity} shares of {order.order_id}"
            )
        after = replace(
            after,
            filled_quantity=filled,
            filled_value=order.filled_value + fill.price * fill.quantity,
            triggered=True,
        )
        if report.cumulative_quantity and report.cumulative_quantity != filled:
            anomaly = f"exchange cumulative {report.cumulative_quantity}, recorded {filled}"

    if target is R.FILL:
        if after.filled_quantity >= after.quantity:
            status = S.FILLED
        elif order.status in (S.PENDING_CANCEL, S.PENDING_REPLACE) or order.status.terminal:
            status = order.status
        else:
            status = _working(after)
        after = replace(after, status=status)
    elif target is R.WORKING:
        after = replace(after, status=_working(after))
    elif target is R.SAME:
        pass
    elif target is R.RESUME:
        funds_action = _restore_block(after)
        after = replace(after, status=_resume(after), pending=None, resume_status=None)
    elif target is R.REPLACE:
        after, funds_action = _replaced(after, report)
    else:
        after = replace(after, status=target, pending=None, resume_status=None)
        if target in (S.CANCELLED, S.REJECTED, S.EXPIRED) and not _withdrawn_sibling(order, target):
            after = replace(after, status_reason=report.text or _DEFAULT_REASONS[target])

    if report.exec_type is ExecType.ORDER_STATUS and report.cumulative_quantity > after.filled_quantity:
        anomaly = f"exchange reports {report.cumulative_quantity} filled, recorded {after.filled_quantity}"
    if after.status in (S.PENDING_CANCEL, S.PENDING_REPLACE):
        # Keep the status to fall back to in step with acknowledgements and fills.
        after = replace(after, resume_status=_resume(replace(after, resume_status=order.resume_status)))
    if after.status.terminal:
        after = replace(after, pending=None, resume_status=None)
    return _finish(order, after, trigger, now, fill=fill, funds_action=funds_action, anomaly=anomaly)


def _withdrawn_sibling(order: Order, target: Target) -> bool:
    """A leg the broker withdrew from its OCO group keeps saying why."""
    pending = order.pending
    return target is S.CANCELLED and pending is not None and pending.request_id.startswith(_SIBLING_CANCEL)


_DEFAULT_REASONS = {
    S.CANCELLED: "cancelled at the exchange",
    S.REJECTED: "rejected by the exchange",
    S.EXPIRED: "time in force ended",
}


def _restore_block(order: Order) -> FundsAction | None:
    """A refused modification that had raised the block lowers it back to the order's terms."""
    pending = order.pending
    if pending is None or pending.kind != "REPLACE" or not pending.block_raised:
        return None
    return FundsAction(
        kind="ADJUST",
        order_id=order.order_id,
        user_id=order.user_id,
        reason="MODIFY_REJECTED",
        quantity=order.quantity,
        price=_block_price(order, order.limit_price, order.protection_price)
        if order.side is Side.BUY
        else None,
    )


def _replaced(order: Order, report: ExchangeReport) -> tuple[Order, FundsAction | None]:
    """The exchange applied a modification: take the new terms (its quantity is
    authoritative), and lower the block if the order got smaller."""
    pending = order.pending if order.pending is not None and order.pending.kind == "REPLACE" else None
    quantity = report.order_quantity or (pending.quantity if pending and pending.quantity else order.quantity)
    limit = pending.limit_price if pending else order.limit_price
    stop = pending.stop_price if pending else order.stop_price
    protection = pending.protection_price if pending else order.protection_price
    after = replace(
        order,
        quantity=quantity,
        limit_price=limit,
        stop_price=stop,
        protection_price=protection,
        pending=None,
        resume_status=None,
    )
    after = replace(after, status=_working(after))
    old_basis = block_basis(
        order.side, order.quantity, _block_price(order, order.limit_price, order.protection_price)
    )
    new_basis = block_basis(order.side, quantity, _block_price(order, limit, protection))
    action = None
    if new_basis < old_basis and not (pending and pending.block_raised):
        action = FundsAction(
            kind="ADJUST",
            order_id=order.order_id,
            user_id=order.user_id,
            reason="MODIFIED",
            quantity=quantity,
            price=_block_price(order, limit, protection) if order.side is Side.BUY else None,
        )
    return after, action
