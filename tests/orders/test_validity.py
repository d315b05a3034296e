"""I7 on a real OMS and PostgreSQL, with a fast market clock and a venue that never expires
anything: a DAY order still working after the close is reported; its expiry clears it; a
GTC order is left alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.orders.v1 import orders_pb2
from brokermesh.type.v1 import trading_pb2
from svc_runtime import market_clock as mc
from tests.orders.conftest import Oms
from tests.support.polling import eventually

pytestmark = pytest.mark.slow

CLOSE = datetime(2026, 12, 7, 15, 30, tzinfo=mc.IST)  # a Monday's close


async def test_a_day_order_working_after_the_close_breaks_i7_until_it_expires(
    start_own_oms: Callable[..., Awaitable[Oms]],
) -> None:
    # The close comes 25 wall seconds from now: time for the OMS to start and take orders.
    epoch = time.time() + 25
    oms = await start_own_oms(
        {
            **mc.fast_env(48, CLOSE, epoch=epoch),
            "BROKERMESH_SQUARE_OFF_AT": "off",
            "BROKERMESH_ORDERS_VALIDITY_GRACE_SECONDS": "1",
        }
    )
    user = oms.new_user()
    day = await oms.place(user)
    gtc = await oms.place(user, time_in_force=trading_pb2.TIME_IN_FORCE_GTC)
    assert time.time() < epoch, "the OMS took too long to start: the orders came after the close"
    for order in (day, gtc):
        await oms.ack(order)
        await oms.wait_status(order, orders_pb2.ORDER_STATUS_OPEN)
    assert await oms.invariants() == []

    await asyncio.sleep(max(0.0, epoch + 1.5 - time.time()))
    [violation] = await eventually(oms.invariants, timeout=10)
    assert violation.invariant == "I7" and day.order_id in violation.detail and "DAY" in violation.detail

    await oms.report(
        day, er.EXEC_TYPE_EXPIRED, ord_status=er.ORD_STATUS_EXPIRED, text="day order expired at the close"
    )
    expired = await oms.wait_status(day, orders_pb2.ORDER_STATUS_EXPIRED)
    assert expired.status_reason == "day order expired at the close"
    assert await eventually(lambda: _clean(oms), timeout=10)


async def _clean(oms: Oms) -> bool:
    return await oms.invariants() == []
