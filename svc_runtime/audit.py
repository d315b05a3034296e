"""The invariant audit (I1–I9, docs/architecture.md §5) across a running stack.

Each service checks what it alone can see (svc_funds: I1, I2 and its side of I3; svc_orders:
I4 and I6). This module adds the checks that span services — I3 (every working order has
an active block and every active block a working order) and I5 (the broker's view of every
order equals the exchange's) — using only the services' public RPCs. Cross-service checks
are retried until they agree or `settle_seconds` pass, since execution reports reach
svc_orders and svc_funds asynchronously.

I5 checks only what the exchange can still answer for. The exchange never forgets a working
order, but keeps finished ones only for a while (and knows nothing from before its order
journal began): it says since when its list is complete (`answers_since`). A finished order
of the broker that the exchange no longer lists and that ended before then cannot be
checked; it is counted as unverified, named, and never passed off as checked. So is an
order the broker ended because the venue no longer held it (a venue that lost its book:
svc_exec ends such orders, see svc_runtime/reports.py): the venue cannot answer for it by
definition. Everything else is a violation, order by order: a working order the exchange does not hold, a finished
order it should still know, and any order whose fills or status differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc

from brokermesh.exchange.v1 import exchange_admin_pb2, exchange_admin_pb2_grpc
from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc, execution_report_pb2
from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from svc_runtime import reports
from svc_runtime.auth import Signer
from svc_runtime.grpc_client import channel

NON_TERMINAL = (
    orders_pb2.ORDER_STATUS_PENDING_EXCHANGE,
    orders_pb2.ORDER_STATUS_OPEN,
    orders_pb2.ORDER_STATUS_PARTIALLY_FILLED,
    orders_pb2.ORDER_STATUS_PENDING_CANCEL,
    orders_pb2.ORDER_STATUS_PENDING_REPLACE,
    orders_pb2.ORDER_STATUS_TRIGGER_PENDING,
)

# The exchange's OrdStatus (tag 39) that each settled broker status must match.
EXCHANGE_STATUS = {
    orders_pb2.ORDER_STATUS_OPEN: {"0"},
    orders_pb2.ORDER_STATUS_PARTIALLY_FILLED: {"1"},
    orders_pb2.ORDER_STATUS_FILLED: {"2"},
    orders_pb2.ORDER_STATUS_CANCELLED: {"4"},
    orders_pb2.ORDER_STATUS_REJECTED: {"8"},
    orders_pb2.ORDER_STATUS_EXPIRED: {"C"},
}


Finding = tuple[str, str, str]  # (invariant, user id, detail)


@dataclass
class AuditReport:
    violations: list[Finding] = field(default_factory=list)
    # What could not be checked, and why (the exchange no longer answers for the order).
    unverified: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No violation (some orders may still be unverified)."""
        return not self.violations

    @property
    def complete(self) -> bool:
        """No violation and nothing left unchecked."""
        return self.ok and not self.unverified

    def exit_code(self, *, strict: bool = False) -> int:
        """1 on any violation; with `strict`, also when anything could not be checked."""
        return 0 if (self.complete if strict else self.ok) else 1

    def render(self) -> str:
        lines = [f"checked: {', '.join(f'{k}={v}' for k, v in self.checked.items())}"]
        if self.complete:
            lines.append("all invariants hold (I1–I9)")
        elif self.ok:
            lines.append(f"no violations; unverified: {len(self.unverified)} orders")
        for invariant, user_id, detail in self.violations:
            lines.append(f"VIOLATION {invariant} user={user_id or '-'}: {detail}")
        for invariant, user_id, detail in self.unverified:
            lines.append(f"UNVERIFIED {invariant} user={user_id or '-'}: {detail}")
        return "\n".join(lines)


async def _all_pages(call: Any, request: Any, items: str) -> list[Any]:
    out: list[Any] = []
    while True:
        page = await call(request, timeout=30)
        out.extend(getattr(page, items))
        if not page.next_page_token:
            return out
        request.page_token = page.next_page_token


def check_exchange_view(
    broker_orders: Iterable[orders_pb2.Order],
    exchange_orders: Iterable[exchange_admin_pb2.ExchangeOrder],
    answers_since: datetime | None,
) -> tuple[list[Finding], list[Finding]]:
    """I5: the broker's view of every order the exchange can answer for equals the
    exchange's. Returns (violations, unverified). `answers_since`: the exchange lists every
    order working at or finished after it (None: it makes no such promise, so a missing
    finished order cannot be checked either)."""
    violations: list[Finding] = []
    unverified: list[Finding] = []
    by_exchange_id = {o.exchange_order_id: o for o in exchange_orders}
    for order in broker_orders:
        if not order.exchange_order_id:
            continue  # never reached the exchange
        theirs = by_exchange_id.get(order.exchange_order_id)
        if theirs is None:
            finished = order.status not in NON_TERMINAL
            ended = order.update_time.ToDatetime(tzinfo=UTC)
            if finished and order.status_reason.startswith(reports.NOT_HELD_BY_VENUE):
                unverified.append(
                    (
                        "I5",
                        order.user_id,
                        f"{order.order_id}: {orders_pb2.OrderStatus.Name(order.status)} at {ended.isoformat()}, "
                        f"ended because the venue no longer held it ({order.status_reason})",
                    )
                )
            elif finished and (answers_since is None or ended < answers_since):
                since = answers_since.isoformat() if answers_since else "the exchange's start"
                unverified.append(
                    (
                        "I5",
                        order.user_id,
                        f"{order.order_id}: {orders_pb2.OrderStatus.Name(order.status)} at {ended.isoformat()}, "
                        f"before what the exchange answers for ({since})",
                    )
                )
            else:
                violations.append(
                    (
                        "I5",
                        order.user_id,
                        f"{order.order_id}: exchange has no order {order.exchange_order_id}",
                    )
                )
            continue
        if theirs.filled_quantity != order.filled_quantity:
            violations.append(
                (
                    "I5",
                    order.user_id,
                    f"{order.order_id}: filled {order.filled_quantity} here, {theirs.filled_quantity} at the exchange",
                )
            )
        expected = EXCHANGE_STATUS.get(order.status)
        if expected is not None and theirs.ord_status not in expected:
            violations.append(
                (
                    "I5",
                    order.user_id,
                    f"{order.order_id}: {orders_pb2.OrderStatus.Name(order.status)} here, "
                    f"OrdStatus {theirs.ord_status} at the exchange",
                )
            )
    return violations, unverified


# What a venue may answer to a status request about an order the broker holds as working.
_VENUE_WORKING = {
    execution_report_pb2.ORD_STATUS_NEW,
    execution_report_pb2.ORD_STATUS_PARTIALLY_FILLED,
    execution_report_pb2.ORD_STATUS_PENDING_CANCEL,
    execution_report_pb2.ORD_STATUS_PENDING_REPLACE,
    execution_report_pb2.ORD_STATUS_PENDING_NEW,
}
# At most this many working orders are asked about per audit; the rest are unverified.
VENUE_STATUS_QUERIES = 500


def check_venue_answer(
    order: orders_pb2.Order, answer: execution_report_pb2.ExecutionReport
) -> list[Finding]:
    """I5 against a venue reached only over FIX: its answer to an OrderStatusRequest about an
    order the broker holds as working must say working, with the same filled quantity."""
    found: list[Finding] = []
    status = execution_report_pb2.OrdStatus.Name(answer.ord_status)
    if answer.ord_status not in _VENUE_WORKING:
        found.append(
            (
                "I5",
                order.user_id,
                f"{order.order_id}: {orders_pb2.OrderStatus.Name(order.status)} here, {status} at the venue"
                + (f" ({answer.text})" if answer.text else ""),
            )
        )
    elif answer.cumulative_quantity != order.filled_quantity:
        found.append(
            (
                "I5",
                order.user_id,
                f"{order.order_id}: filled {order.filled_quantity} here, {answer.cumulative_quantity} at the venue",
            )
        )
    return found


async def _ask_the_venue(
    executor: Any, all_orders: list[orders_pb2.Order]
) -> tuple[list[Finding], list[Finding]]:
    """I5 through svc_exec's OrderStatusRequests, for a venue without an order list to read:
    each working order is asked about; finished ones are not (venues answer for working
    orders, and only for the day), so they are counted as unverified, never as checked."""
    violations: list[Finding] = []
    unverified: list[Finding] = []
    working = [o for o in all_orders if o.status in NON_TERMINAL and o.exchange_order_id]
    finished = sum(1 for o in all_orders if o.status not in NON_TERMINAL and o.exchange_order_id)
    if finished:
        unverified.append(
            ("I5", "", f"{finished} finished orders not asked about (the venue answers for working ones)")
        )
    if len(working) > VENUE_STATUS_QUERIES:
        unverified.append(
            (
                "I5",
                "",
                f"{len(working) - VENUE_STATUS_QUERIES} working orders beyond the audit's {VENUE_STATUS_QUERIES} questions",
            )
        )
    gate = asyncio.Semaphore(8)

    async def ask(order: orders_pb2.Order) -> None:
        async with gate:
            try:
                answer = await executor.GetExchangeOrderStatus(
                    exec_pb2.GetExchangeOrderStatusRequest(order_id=order.order_id, timeout_ms=3000),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                unverified.append(
                    ("I5", order.user_id, f"{order.order_id}: the venue gave no answer ({error.code().name})")
                )
                return
        violations.extend(check_venue_answer(order, answer))

    asked = working[:VENUE_STATUS_QUERIES]
    await asyncio.gather(*(ask(o) for o in asked))
    return violations, unverified, len(asked)


def _covered_by_its_group(order: Any, active_blocks: dict[str, Any]) -> bool:
    """A STOP_LOSS sells the shares its group's TARGET blocked (it blocks none itself);
    once it is being cancelled it needs no block at all."""
    if order.leg != orders_pb2.LEG_STOP_LOSS:
        return False
    return order.oco_group_id in active_blocks or order.status == orders_pb2.ORDER_STATUS_PENDING_CANCEL


async def _cross_checks(
    funds: Any, orders: Any, exchange: Any | None, executor: Any | None = None
) -> tuple[list[Finding], list[Finding], dict[str, int]]:
    violations: list[Finding] = []
    all_orders = await _all_pages(
        orders.ListOrders, orders_pb2.ListOrdersRequest(parent="users/-", page_size=500), "orders"
    )
    blocks = await _all_pages(
        funds.ListBlocks,
        funds_pb2.ListBlocksRequest(parent="users/-", state=funds_pb2.BLOCK_STATE_ACTIVE, page_size=1000),
        "blocks",
    )
    active_blocks = {b.order_id: b for b in blocks}
    working = {o.order_id: o for o in all_orders if o.status in NON_TERMINAL}
    for order_id, order in working.items():
        if order_id not in active_blocks and not _covered_by_its_group(order, active_blocks):
            violations.append(
                ("I3", order.user_id, f"working order {order_id} ({order.status}) has no active block")
            )
    for order_id, block in active_blocks.items():
        if order_id not in working:
            violations.append(
                ("I3", block.user_id, f"active block for {order_id} but the order is not working")
            )

    if exchange is None:  # another venue: no order list to read, so ask it order by order
        counts = {"orders": len(all_orders), "active_blocks": len(blocks)}
        if executor is None:
            sent = sum(1 for o in all_orders if o.exchange_order_id)
            return (
                violations,
                [("I5", "", f"no executor to ask the venue: {sent} orders not checked")],
                counts,
            )
        i5, unverified, asked = await _ask_the_venue(executor, all_orders)
        return violations + i5, unverified, {**counts, "venue_status_queries": asked}
    listed = await exchange.ListExchangeOrders(exchange_admin_pb2.ListExchangeOrdersRequest(), timeout=30)
    exchange_orders = listed.orders
    answers_since = listed.answers_since.ToDatetime(tzinfo=UTC) if listed.HasField("answers_since") else None
    i5, unverified = check_exchange_view(all_orders, exchange_orders, answers_since)
    violations += i5
    return (
        violations,
        unverified,
        {"orders": len(all_orders), "active_blocks": len(blocks), "exchange_orders": len(exchange_orders)},
    )


async def run(description: dict[str, Any], *, signer: Signer, settle_seconds: float = 10.0) -> AuditReport:
    """Check the invariants, calling as `signer` (an operator; read-only is enough)."""
    targets = description["grpc"]
    report = AuditReport()
    async with contextlib.AsyncExitStack() as channels:
        funds = funds_pb2_grpc.FundsServiceStub(
            await channels.enter_async_context(channel(targets["svc_funds"], signer=signer))
        )
        orders = orders_pb2_grpc.OrdersServiceStub(
            await channels.enter_async_context(channel(targets["svc_orders"], signer=signer))
        )
        exchange = (
            exchange_admin_pb2_grpc.ExchangeAdminServiceStub(
                await channels.enter_async_context(channel(targets["exchange_sim"], signer=signer))
            )
            if "exchange_sim" in targets
            else None
        )
        executor = (
            exec_pb2_grpc.ExecutionServiceStub(
                await channels.enter_async_context(channel(targets["svc_exec"], signer=signer))
            )
            if exchange is None and "svc_exec" in targets
            else None
        )
        deadline = time.monotonic() + settle_seconds
        while True:
            violations: list[tuple[str, str, str]] = []
            funds_check = await funds.CheckInvariants(funds_pb2.CheckInvariantsRequest(), timeout=60)
            violations += [(v.invariant, v.user_id, v.detail) for v in funds_check.violations]
            orders_check = await orders.CheckInvariants(orders_pb2.CheckInvariantsRequest(), timeout=60)
            violations += [(v.invariant, v.user_id, v.detail) for v in orders_check.violations]
            cross, unverified, counts = await _cross_checks(funds, orders, exchange, executor)
            violations += cross
            report.checked = {
                "accounts": funds_check.accounts_checked,
                "orders_checked": orders_check.orders_checked,
                **counts,
            }
            if not violations or time.monotonic() > deadline:
                report.violations = violations
                report.unverified = unverified
                return report
            await asyncio.sleep(0.5)
