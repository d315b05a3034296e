"""Operators' risk limits per user and per segment, and the kill switch's cancel-all.

The limits live in PostgreSQL (`risk_limits`), one row per scope. Each replica caches them
for the order path and refreshes with the trading controls (NOTIFY, and periodically). The
account's state a limit needs — working orders, the symbol's position, today's P&L — is
read only when a limit that needs it applies to the user, so users without such limits pay
nothing for them.

Placing checks the limits that count working orders (open orders, position) as the order is
recorded, under a lock of the user's (`ReservationGuard`): read earlier, a user's concurrent
placements would each see room for one more and together overshoot the limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from svc_orders.app import metrics
from svc_orders.app.controls import check_mask
from svc_orders.app.ports import AuditEntry, ReservationGuard, WorkingOrders
from svc_orders.domain import limits, validation
from svc_orders.domain.limits import Exposure, LimitSet, RiskCheck
from svc_orders.domain.model import Actor, Order, OrderSpec, Product
from svc_runtime import context
from svc_runtime.errors import InvalidArgument, ServiceError

log = logging.getLogger(__name__)

UPDATABLE = (*limits.LIMIT_FIELDS, "trading_halted")
_SEGMENTS = {f"segments/{p.value}": p for p in Product}


class RiskLimitStore(Protocol):
    async def load_risk_limits(self) -> list[LimitSet]: ...

    async def update_risk_limits(
        self, scope: str, changes: dict[str, Any], request_id: str, audit: AuditEntry
    ) -> LimitSet: ...

    async def exposure(self, user_id: str, symbol: str, product: str) -> WorkingOrders: ...

    async def working_orders(self, user_id: str | None, product: str | None) -> list[Order]: ...


@dataclass(frozen=True)
class Standing:
    """The user's shares of one symbol (holdings and today's positions) and today's P&L."""

    position: int
    day_pnl: Decimal


class PortfolioPort(Protocol):
    async def standing(self, user_id: str, symbol: str) -> Standing: ...


def parse_scope(name: str) -> str:
    """`users/{user}/riskLimits` or `segments/{segment}/riskLimits` → the scope."""
    scope = name.removesuffix("/riskLimits")
    if scope != name:
        if scope in _SEGMENTS:
            return scope
        if scope.startswith("users/"):
            validation.user_id(scope.removeprefix("users/"), field="name")
            return scope
    raise InvalidArgument(
        "name must be users/{user}/riskLimits or segments/{CNC|INTRADAY}/riskLimits",
        reason="INVALID_NAME",
        field="name",
    )


def scope_filter(scope: str) -> tuple[str | None, str | None]:
    """The (user, product) whose working orders a scope's kill switch cancels."""
    if scope in _SEGMENTS:
        return None, _SEGMENTS[scope].value
    return scope.removeprefix("users/"), None


@dataclass
class RiskLimitBook:
    store: RiskLimitStore
    portfolio: PortfolioPort
    by_scope: dict[str, LimitSet] = field(default_factory=dict)

    async def refresh(self) -> None:
        self.by_scope = {s.scope: s for s in await self.store.load_risk_limits()}

    def get(self, scope: str) -> LimitSet:
        return self.by_scope.get(scope) or LimitSet(scope=scope)

    def sets_for(self, user_id: str, product: Product) -> list[LimitSet]:
        found = (
            self.by_scope.get(limits.segment_scope(product)),
            self.by_scope.get(limits.user_scope(user_id)),
        )
        return [s for s in found if s is not None]

    async def check(self, user_id: str, spec: OrderSpec, value: Decimal | None) -> list[RiskCheck]:
        """The operators' limits for this order, checked (a scope's kill switch raises)."""
        sets = self.sets_for(user_id, spec.product)
        if not sets:
            return []
        limits.check_halts(sets)
        exposure = await self._exposure(user_id, spec) if limits.needs_state(sets) else None
        return limits.evaluate(spec, value, sets, exposure)

    async def check_placement(
        self, user_id: str, spec: OrderSpec, value: Decimal | None
    ) -> tuple[list[RiskCheck], ReservationGuard | None]:
        """The per-order limits checked now, and a guard that checks those depending on the
        account's state when the order is recorded (None when none applies)."""
        sets = self.sets_for(user_id, spec.product)
        if not sets:
            return [], None
        limits.check_halts(sets)
        checks = limits.evaluate(spec, value, sets, None)
        if not limits.needs_state(sets) or limits.first_refusal(checks) is not None:
            return checks, None
        # The portfolio changes with fills, not with placements: read once, outside the lock.
        standing = await self.portfolio.standing(user_id, spec.symbol)

        def guard(working: WorkingOrders) -> None:
            stateful = limits.evaluate(spec, value, sets, _exposure(working, standing), limits.STATEFUL)
            refusal = limits.first_refusal(stateful)
            if refusal is not None:
                raise refusal

        return checks, guard

    async def check_modification(self, user_id: str, spec: OrderSpec, value: Decimal | None) -> None:
        """A modification meets the scope's kill switch and per-order limits (a changed
        order is not a new working order, so the stateful rules are left to placement)."""
        sets = self.sets_for(user_id, spec.product)
        limits.check_halts(sets)
        refusal = limits.first_refusal(limits.evaluate(spec, value, sets, None))
        if refusal is not None:
            raise refusal

    async def _exposure(self, user_id: str, spec: OrderSpec) -> Exposure:
        working, standing = await asyncio.gather(
            self.store.exposure(user_id, spec.symbol, spec.product.value),
            self.portfolio.standing(user_id, spec.symbol),
        )
        return _exposure(working, standing)

    async def update(self, scope: str, requested: LimitSet, paths: list[str], request_id: str) -> LimitSet:
        """Change the fields named by `paths` (all when empty), once per request id."""
        check_mask(paths, UPDATABLE)
        changes = {name: getattr(requested, name) for name in paths or UPDATABLE}
        for name, value in changes.items():
            if name != "trading_halted" and value is not None and value < 0:
                raise InvalidArgument(f"{name} must not be negative", field=f"risk_limits.{name}")
        ctx = context.current()
        audit = AuditEntry(
            action="RISK_LIMITS",
            actor=ctx.actor or Actor.ADMIN.value,
            request_id=ctx.request_id,
            client_ip=ctx.client_ip,
        )
        updated = await self.store.update_risk_limits(scope, changes, request_id, audit)
        self.by_scope[scope] = updated
        log.warning("risk limits updated", extra={"scope": scope, "changes": sorted(changes)})
        return updated


def _exposure(working: WorkingOrders, standing: Standing) -> Exposure:
    return Exposure(
        open_orders=working.count,
        open_orders_in_product=working.in_product,
        position=standing.position,
        open_buy_quantity=working.open_buy,
        open_sell_quantity=working.open_sell,
        day_pnl=standing.day_pnl,
    )


# Cancels a kill switch has in flight at once (each holds a database connection briefly).
CANCELS_AT_ONCE = 8


async def cancel_working(
    orders: list[Order], cancel: Callable[[str, str, str], Awaitable[Order]], request_id: str
) -> list[Order]:
    """Ask to cancel each working order (idempotent per order and `request_id`); returns
    those now being cancelled, in the order given. An order that ended meanwhile is skipped;
    one still being accepted is tried again once after a moment."""
    slots = asyncio.Semaphore(CANCELS_AT_ONCE)

    async def one(order: Order) -> Order | None:
        async with slots:
            for attempt in range(2):
                try:
                    asked = await cancel(order.user_id, order.order_id, f"{request_id}-{order.order_id}")
                    metrics.KILL_SWITCH_CANCELS.labels("asked").inc()
                    return asked
                except ServiceError as error:
                    if error.reason == "ORDER_BEING_ACCEPTED" and attempt == 0:
                        await asyncio.sleep(1.0)
                        continue
                    metrics.KILL_SWITCH_CANCELS.labels("refused").inc()
                    log.warning(
                        "kill switch could not cancel an order",
                        extra={"order_id": order.order_id, "reason": error.reason},
                    )
                    return None
            return None

    outcomes = await asyncio.gather(*(one(order) for order in orders))
    return [order for order in outcomes if order is not None]
