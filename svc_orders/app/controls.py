"""The trading controls: the kill switch and halted symbols.

They live in one database row, so every replica agrees and a restart keeps them. Each
replica caches them for the order path and refreshes on a PostgreSQL notification (and
periodically, in case one was missed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from svc_orders.app.ports import AuditEntry
from svc_orders.domain import validation
from svc_orders.domain.model import Actor
from svc_orders.domain.risk import TradingControls
from svc_runtime import context
from svc_runtime.errors import InvalidArgument

log = logging.getLogger(__name__)

FIELDS = ("trading_halted", "halt_reason", "halted_symbols")


class ControlsStore(Protocol):
    async def load_controls(self) -> TradingControls: ...

    async def update_controls(
        self, changes: dict[str, Any], request_id: str, audit: AuditEntry
    ) -> TradingControls: ...


def check_mask(paths: list[str], allowed: tuple[str, ...]) -> None:
    unknown = [p for p in paths if p not in allowed]
    if unknown:
        raise InvalidArgument(
            f"update_mask names unknown fields {unknown}; allowed: {list(allowed)}",
            reason="INVALID_UPDATE_MASK",
            field="update_mask",
        )


@dataclass
class TradingControlsView:
    store: ControlsStore
    current: TradingControls = field(default_factory=TradingControls)

    async def refresh(self) -> TradingControls:
        latest = await self.store.load_controls()
        if latest.version != self.current.version:
            log.info(
                "trading controls changed",
                extra={
                    "trading_halted": latest.trading_halted,
                    "halted_symbols": sorted(latest.halted_symbols),
                    "controls_version": latest.version,
                },
            )
        self.current = latest
        return latest

    async def update(self, requested: TradingControls, paths: list[str], request_id: str) -> TradingControls:
        """Change the fields named by `paths` (all when empty), once per request id."""
        check_mask(paths, FIELDS)
        changes: dict[str, Any] = {}
        for name in paths or FIELDS:
            value = getattr(requested, name)
            if name == "halted_symbols":
                value = frozenset(validation.symbol(s) for s in value)
            if name == "halt_reason" and len(value) > 500:
                raise InvalidArgument("halt_reason is too long", field="trading_controls.halt_reason")
            changes[name] = value
        ctx = context.current()
        audit = AuditEntry(
            action="TRADING_CONTROLS",
            actor=ctx.actor or Actor.ADMIN.value,
            request_id=ctx.request_id,
            client_ip=ctx.client_ip,
        )
        self.current = await self.store.update_controls(changes, request_id, audit)
        log.warning(
            "trading controls updated",
            extra={
                "trading_halted": self.current.trading_halted,
                "halt_reason": self.current.halt_reason,
                "halted_symbols": sorted(self.current.halted_symbols),
            },
        )
        return self.current
