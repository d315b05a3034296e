"""The invariant audit of DESIGN.md §4 across a running stack.

Each service checks what it alone can see (svc_funds: I1, I2 and its side of I3; svc_orders:
I4 and I6). This module adds the checks that span services — I3 (every working order has
an active block and every active block a working order) and I5 (the broker's view of every
order equals the exchange's) — using only the services' public RPCs. Cross-service checks
are retried until they agree or `settle_seconds` pass, since execution reports reach
svc_orders and svc_funds asynchronously.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from brokermesh.exchange.v1 import exchange_admin_pb2, exchange_admin_pb2_grpc
from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
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


@dataclass
class AuditReport:
    violations: list[tuple[str, str, str]] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        lines = [f"checked: {', '.join(f'{k}={v}' for k, v in self.checked.items())}"]
        if self.ok:
            lines.append("all invariants hold (I1–I6)")
        for invariant, user_id, detail in self.violations:
            lines.append(f"VIOLATION {invariant} user={user_id or '-'}: {detail}")
        return "\n".join(lines)


async def _all_pages(call: Any, request: Any, items: str) -> list[Any]:
    out: list[Any] = []
    while True:
        page = await call(request, timeout=30)
        out.extend(getattr(page, items))
        if not page.next_page_token:
            return out
        request.page_token = page.next_page_token


async def _cross_checks(
    funds: Any, orders: Any, exchange: Any
) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    violations: list[tuple[str, str, str]] = []
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
        if order_id not in active_blocks:
            violations.append(
                ("I3", order.user_id, f"working order {order_id} ({order.status}) has no active block")
            )
    for order_id, block in active_blocks.items():
        if order_id not in working:
            violations.append(
                ("I3", block.user_id, f"active block for {order_id} but the order is not working")
            )

    exchange_orders = (
        await exchange.ListExchangeOrders(exchange_admin_pb2.ListExchangeOrdersRequest(), timeout=30)
    ).orders
    by_exchange_id = {o.exchange_order_id: o for o in exchange_orders}
    for order in all_orders:
        if not order.exchange_order_id:
            continue
        theirs = by_exchange_id.get(order.exchange_order_id)
        if theirs is None:
            violations.append(
                ("I5", order.user_id, f"{order.order_id}: exchange has no order {order.exchange_order_id}")
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
    return violations, {
        "orders": len(all_orders),
        "active_blocks": len(blocks),
        "exchange_orders": len(exchange_orders),
    }


async def run(description: dict[str, Any], *, signer: Signer, settle_seconds: float = 10.0) -> AuditReport:
    """Check the invariants, calling as `signer` (an operator; read-only is enough)."""
    targets = description["grpc"]
    report = AuditReport()
    async with (
        channel(targets["svc_funds"], signer=signer) as funds_ch,
        channel(targets["svc_orders"], signer=signer) as orders_ch,
        channel(targets["exchange_sim"], signer=signer) as exchange_ch,
    ):
        funds = funds_pb2_grpc.FundsServiceStub(funds_ch)
        orders = orders_pb2_grpc.OrdersServiceStub(orders_ch)
        exchange = exchange_admin_pb2_grpc.ExchangeAdminServiceStub(exchange_ch)
        deadline = time.monotonic() + settle_seconds
        while True:
            violations: list[tuple[str, str, str]] = []
            funds_check = await funds.CheckInvariants(funds_pb2.CheckInvariantsRequest(), timeout=60)
            violations += [(v.invariant, v.user_id, v.detail) for v in funds_check.violations]
            orders_check = await orders.CheckInvariants(orders_pb2.CheckInvariantsRequest(), timeout=60)
            violations += [(v.invariant, v.user_id, v.detail) for v in orders_check.violations]
            cross, counts = await _cross_checks(funds, orders, exchange)
            violations += cross
            report.checked = {
                "accounts": funds_check.accounts_checked,
                "orders_checked": orders_check.orders_checked,
                **counts,
            }
            if not violations or time.monotonic() > deadline:
                report.violations = violations
                return report
            await asyncio.sleep(0.5)
