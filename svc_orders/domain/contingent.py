"""Contingent orders: brackets and OCO groups, as pure functions over orders.

A bracket's ENTRY carries its exit terms. When the entry is over with shares filled, the
broker creates its two exits as children: a TARGET (SELL LIMIT at the target price) and a
STOP_LOSS (SELL STOP at the stop price) for the filled quantity, one OCO group. An OCO
placed by a client is its TARGET, and its STOP_LOSS sibling is created with it.

The TARGET blocks the shares both exits sell; the STOP_LOSS blocks nothing (`LEGS`). The
first fill of either leg cancels the other in the same transaction that records the fill,
so no crash can leave a filled leg with a live sibling that the broker has not asked the
exchange to cancel. The exchange may still fill the sibling before that cancel reaches it:
the shares sold beyond the TARGET's are `oversold`, and the broker buys them back.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from svc_orders.domain.model import (
    LEGS,
    NO_EXIT,
    Contingency,
    Leg,
    Order,
    OrderSpec,
    Side,
    Status,
    TimeInForce,
)
from svc_orders.domain.state_machine import SIBLING_FILLED_REASON, TARGET_ENDED_REASON


def leg_of(spec: OrderSpec) -> Leg:
    """The role of an order a client places."""
    if spec.exit.contingency is Contingency.BRACKET:
        return Leg.ENTRY
    if spec.exit.contingency is Contingency.OCO:
        return Leg.TARGET
    return Leg.SINGLE


def brings_its_stop_loss(before: Order, after: Order) -> bool:
    """An OCO placed by a client gets its STOP_LOSS when its TARGET is accepted (once: only
    the change out of FUNDS_PENDING does)."""
    return (
        after.leg is Leg.TARGET
        and not after.parent_order_id
        and after.exit.contingency is Contingency.OCO
        and before.status is Status.FUNDS_PENDING
        and after.status is Status.PENDING_EXCHANGE
    )


def spawns_exits(before: Order, after: Order) -> bool:
    """The change that ends a bracket's entry with shares filled creates its exits (once:
    only the change into a terminal status does)."""
    return (
        after.leg is Leg.ENTRY
        and after.status.terminal
        and not before.status.terminal
        and after.filled_quantity > 0
    )


def _child(parent: Order, leg: Leg, order_id: str, now: datetime, oco_group: str) -> Order:
    rules = LEGS[leg]
    assert rules.type is not None
    exit_terms = parent.exit
    is_target = leg is Leg.TARGET
    return Order(
        order_id=order_id,
        user_id=parent.user_id,
        # Derived, so the (user, key) constraint makes creating the legs twice impossible.
        client_order_id=f"{parent.order_id}:{leg.value.lower()}",
        fingerprint=f"{parent.fingerprint}:{leg.value.lower()}",
        symbol=parent.symbol,
        side=Side.SELL,
        type=rules.type,
        time_in_force=TimeInForce.DAY,
        product=parent.product,
        quantity=parent.filled_quantity,
        limit_price=exit_terms.target_price if is_target else None,
        stop_price=None if is_target else exit_terms.stop_price,
        protection_price=None if is_target else exit_terms.stop_protection,
        status=Status.FUNDS_PENDING,
        create_time=now,
        update_time=now,
        request_id=parent.request_id,
        client_ip=parent.client_ip,
        leg=leg,
        parent_order_id=parent.order_id,
        oco_group=oco_group,
    )


def bracket_exits(entry: Order, target_id: str, stop_id: str, now: datetime) -> tuple[Order, Order]:
    """The TARGET and STOP_LOSS children of a bracket's entry, waiting for the target's
    share block (FUNDS_PENDING)."""
    return (
        _child(entry, Leg.TARGET, target_id, now, oco_group=target_id),
        _child(entry, Leg.STOP_LOSS, stop_id, now, oco_group=target_id),
    )


def oco_stop_loss(target: Order, stop_id: str, now: datetime) -> Order:
    """The STOP_LOSS sibling of an OCO placed by a client (the client's order is the
    TARGET and heads the group). It is not a child: its group names the target."""
    stop = _child(
        replace(target, filled_quantity=target.quantity), Leg.STOP_LOSS, stop_id, now, target.order_id
    )
    return replace(stop, parent_order_id="", exit=NO_EXIT)


def withdraws_siblings(before: Order, after: Order) -> str:
    """Why the change makes the order's OCO siblings go ('' when it does not): a leg's first
    fill, or the group's block holder (the TARGET) ending with nothing filled — the others
    would then sell shares nothing blocks."""
    if not LEGS[after.leg].one_cancels_other or not after.oco_group:
        return ""
    if before.filled_quantity == 0 and after.filled_quantity > 0:
        return SIBLING_FILLED_REASON
    if (
        LEGS[after.leg].own_block
        and after.status.terminal
        and not before.status.terminal
        and after.filled_quantity == 0
    ):
        return TARGET_ENDED_REASON
    return ""


def oversold(group: list[Order]) -> int:
    """Shares the legs of an OCO group sold beyond what its TARGET blocked (the group's
    size): more than none only when the exchange filled a second leg before the broker's
    cancel reached it."""
    holder = next((o for o in group if o.leg is Leg.TARGET), None)
    if holder is None:
        return 0
    sold = sum(o.filled_quantity for o in group if LEGS[o.leg].one_cancels_other)
    return max(0, sold - holder.quantity)


def close_out_key(oco_group: str, bought_back: int) -> str:
    """The key of the broker's order buying back an OCO group's oversold shares, after
    `bought_back` shares were asked for before: a repeated attempt finds its order."""
    return f"{CLOSE_OUT_PREFIX}{oco_group}-{bought_back}"


CLOSE_OUT_PREFIX = "closeout-"
