"""Deferred svc_funds calls: releasing the block of an order the broker rejected, and
resizing a block after a modification. They are written in the same transaction as the
change that needs them and retried until svc_funds has done them; every call is
idempotent (keyed by the order, or by the action's id)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from svc_orders.app import metrics
from svc_orders.app.ports import FundsPort
from svc_orders.domain.model import FundsAction
from svc_runtime import aio, context
from svc_runtime.errors import (
    Aborted,
    DeadlineExceeded,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)


class DueAction(Protocol):
    action_id: str
    action: FundsAction
    attempts: int


class FundsActionQueue(Protocol):
    async def process_funds_actions(
        self, handler: Callable[[DueAction], Awaitable[str | None]], limit: int = 50
    ) -> int: ...


log = logging.getLogger(__name__)

TRANSIENT = (Unavailable, DeadlineExceeded, Aborted, ResourceExhausted)


@dataclass
class FundsActionWorker:
    queue: FundsActionQueue
    funds: FundsPort
    interval: float = 0.5

    async def run(self, stop: asyncio.Event) -> None:
        await aio.every(self.interval, stop, self.run_once, what="funds actions", log=log)

    async def run_once(self) -> int:
        return await self.queue.process_funds_actions(self._perform)

    async def _perform(self, due: DueAction) -> str | None:
        """None when done; else the error, and the action is retried later."""
        action = due.action
        with context.bind(request_id=due.action_id, actor="system"):
            try:
                if action.kind == "RELEASE":
                    await self.funds.release_block(action.user_id, action.order_id, action.reason)
                else:
                    assert action.quantity is not None
                    await self.funds.adjust_block(
                        action.user_id, action.order_id, action.quantity, action.price, due.action_id
                    )
            except NotFound:
                # No block to release or adjust (it never came to exist): nothing to do.
                metrics.FUNDS_ACTIONS.labels(action.kind, "no_block").inc()
                return None
            except TRANSIENT as error:
                metrics.FUNDS_ACTIONS.labels(action.kind, "retry").inc()
                log.warning(
                    "funds action failed; will retry",
                    extra={"action_id": due.action_id, "attempts": due.attempts, "error": error.message},
                )
                return f"{error.reason}: {error.message}"
            except ServiceError as error:
                if error.reason == "BLOCK_CLOSED":
                    # Already released: svc_funds closes a block itself on a terminal report.
                    metrics.FUNDS_ACTIONS.labels(action.kind, "already_closed").inc()
                    return None
                # svc_funds refuses for good: retrying cannot help, so an operator is told.
                metrics.FUNDS_ACTIONS.labels(action.kind, "refused").inc()
                log.error(
                    "funds action refused",
                    extra={"action_id": due.action_id, "reason": error.reason, "error": error.message},
                )
                return None
        metrics.FUNDS_ACTIONS.labels(action.kind, "done").inc()
        return None
