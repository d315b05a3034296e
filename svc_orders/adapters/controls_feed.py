"""The trading controls and risk limits as PostgreSQL tells of their changes: a trigger
NOTIFYs `orders_trading_controls` on every change (migrations 001 and 004)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from svc_orders.app.controls import TradingControlsView
from svc_orders.app.risk_limits import RiskLimitBook
from svc_runtime import db

log = logging.getLogger(__name__)

CONTROLS_CHANNEL = "orders_trading_controls"


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def follow_controls(
    database_url: str,
    controls: TradingControlsView,
    risk_limits: RiskLimitBook,
    stop: asyncio.Event,
    period: float = 5.0,
) -> None:
    """Refresh the cached controls and risk limits when they change (NOTIFY), and every few
    seconds anyway."""
    changed = asyncio.Event()
    listener: asyncpg.Connection | None = None
    while not stop.is_set():
        changed.clear()
        try:
            if listener is None or listener.is_closed():
                listener = await asyncpg.connect(db.asyncpg_dsn(database_url))
                await listener.add_listener(CONTROLS_CHANNEL, lambda *_: changed.set())
            await controls.refresh()
            await risk_limits.refresh()
        except Exception:
            log.warning("could not refresh trading controls", exc_info=True)
            listener = None
        await _wait_any(changed, stop, timeout=period)
    if listener is not None:
        await listener.close()
