"""Trading sessions end to end, through REST, on a fast market clock (a market day in
BROKERMESH_MARKET_DAY_SECONDS): an INTRADAY position is squared off by the broker before the
close; a DAY order expires at the close with its block released, a GTC order survives the
close, a GTD order expires at the close of its date; the invariant audit is clean afterwards.
One scenario over two market days, so that the suite waits for as few closes as it can."""

from __future__ import annotations

import asyncio
import contextlib
import time as wall
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import httpx
import pytest

from svc_runtime import audit
from svc_runtime import market_clock as mc
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.e2e.conftest import exact_json, login, open_account
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

pytestmark = pytest.mark.slow

# A market hour in two wall seconds: a session of 12.5 s, a night of 35.5 s.
DAY_SECONDS = 48.0
# Sunday night: the stack starts while the market is shut, and Monday's pre-open follows.
START = datetime(2026, 12, 6, 23, 0, tzinfo=mc.IST)
SQUARE_OFF_AT = time(13, 0)
END_OF_DAY = time(16, 0)  # svc_funds' default under a fast clock
CALENDAR = mc.Calendar()


@pytest.fixture(scope="module")
async def fast_stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = await new_stack(
        infra,
        tmp_path_factory.mktemp("sessions"),
        extra_env={
            **mc.fast_env(DAY_SECONDS, START),
            "BROKERMESH_SQUARE_OFF_AT": SQUARE_OFF_AT.isoformat("minutes"),
        },
    )
    yield stack
    with contextlib.suppress(Exception):
        await stack.stop()


def clock_of(stack: Stack) -> mc.MarketClock:
    env = stack.plan.extra_env
    return mc.MarketClock.fast_clock(
        float(env[mc.FAST_DAY_SECONDS]),
        datetime.fromisoformat(env[mc.CLOCK_START]),
        float(env[mc.CLOCK_EPOCH]),
    )


async def until(clock: mc.MarketClock, moment: datetime, *, after: float = 0.0) -> None:
    """Sleep until the market clock shows `moment`, then `after` wall seconds more."""
    await asyncio.sleep(max(0.0, clock.wall_at(moment) - wall.time()) + after)


async def in_session(clock: mc.MarketClock, market_hours_left: float) -> date:
    """The trading day whose session runs now with at least that long before its close, or
    else the next one, once it has opened."""
    now = clock.now()
    day = now.astimezone(mc.IST).date()
    if CALENDAR.phase(now) is mc.Phase.OPEN and CALENDAR.close_of(day) - now >= timedelta(
        hours=market_hours_left
    ):
        return day
    if not CALENDAR.is_trading_day(day) or now >= CALENDAR.at(day, CALENDAR.open):
        day = CALENDAR.next_trading_day(day)
    await until(clock, CALENDAR.at(day, CALENDAR.open), after=0.5)
    return day


async def place(client: httpx.AsyncClient, auth: dict[str, str], **order: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/orders", json=order, headers={**auth, "Idempotency-Key": str(uuid.uuid4())}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def status_of(client: httpx.AsyncClient, auth: dict[str, str], order_id: str) -> dict[str, Any]:
    return exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))


async def blocked(client: httpx.AsyncClient, auth: dict[str, str]) -> Decimal:
    return exact_json(await client.get("/v1/funds", headers=auth))["blocked"]


async def test_square_off_before_the_close_day_orders_expire_gtc_survives_and_gtd_expires_on_its_date(
    fast_stack: Stack,
) -> None:
    clock = clock_of(fast_stack)
    username, password, _ = await open_account(fast_stack, "1000000.00")
    async with httpx.AsyncClient(base_url=fast_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        day = await in_session(clock, market_hours_left=4)
        intraday = await place(
            client, auth, symbol="TCS", side="BUY", type="MARKET", quantity=2, product="INTRADAY"
        )
        delivery = await place(client, auth, symbol="TCS", side="BUY", type="MARKET", quantity=1)
        for order in (intraday, delivery):
            await eventually(lambda o=order: _has_status(client, auth, o["orderId"], "FILLED"), timeout=10)
        await eventually(lambda: _nothing_blocked(client, auth), timeout=10)
        quotes = exact_json(await client.get("/v1/quotes", params={"symbols": "INFY"}, headers=auth))
        quote = quotes["quotes"][0]
        reference = quote["ltp"] or quote["previousClose"]
        # 3 % under the market: rests in the book, inside the daily band.
        tick = Decimal("0.05")
        price = (Decimal(reference) * Decimal("0.97") / tick).to_integral_value(rounding=ROUND_DOWN) * tick
        limit = {"symbol": "INFY", "side": "BUY", "type": "LIMIT", "quantity": 3, "limitPrice": str(price)}
        next_day = CALENDAR.next_trading_day(day)

        day_order = await place(client, auth, **limit)
        gtc = await place(client, auth, **limit, timeInForce="GTC")
        gtd = await place(client, auth, **limit, timeInForce="GTD", expireDate=next_day.isoformat())
        assert (gtc["timeInForce"], gtd["timeInForce"], gtd["expireDate"]) == (
            "GTC",
            "GTD",
            next_day.isoformat(),
        )
        for order in (day_order, gtc, gtd):
            await eventually(lambda o=order: _has_status(client, auth, o["orderId"], "OPEN"), timeout=10)
        three_blocks = await blocked(client, auth)
        assert three_blocks > 0

        # The square-off: the broker sells the INTRADAY shares with an order of its own.
        await until(clock, CALENDAR.at(day, SQUARE_OFF_AT))
        square_off = await eventually(lambda: _square_off_order(client, auth), timeout=15)
        assert (square_off["side"], square_off["type"], square_off["product"]) == (
            "SELL",
            "MARKET",
            "INTRADAY",
        )
        assert square_off["filledQuantity"] == 2
        flat = await eventually(lambda: _intraday_position(client, auth, "TCS"), timeout=15)
        assert flat["netQuantity"] == 0
        # Dated by the market's clock, settling T+1.
        assert (flat["tradingDay"], flat["settlementDate"]) == (day.isoformat(), next_day.isoformat())

        # The close: the DAY order expires (the venue's ExecType C), its block goes back.
        await until(clock, CALENDAR.close_of(day), after=0.5)
        expired = await eventually(
            lambda: _has_status(client, auth, day_order["orderId"], "EXPIRED"), timeout=15
        )
        assert "close" in expired["statusReason"]
        assert expired["leavesQuantity"] == 0
        for order in (gtc, gtd):
            assert (await status_of(client, auth, order["orderId"]))["status"] == "OPEN"
        two_blocks = await eventually(lambda: _blocked_below(client, auth, three_blocks), timeout=15)
        assert two_blocks == (three_blocks * 2 / 3).quantize(Decimal("0.01"))

        # The stack's own end of day (16:00): the squared-off position leaves, its day's
        # realized P&L stays.
        await until(clock, CALENDAR.at(day, END_OF_DAY), after=0.5)
        closed = await eventually(lambda: _closed_days(client, auth), timeout=15)
        assert closed == [
            {"tradingDay": day.isoformat(), "realizedPnl": flat["sellValue"] - flat["buyValue"]}
        ]
        portfolio = exact_json(await client.get("/v1/portfolio", headers=auth))
        assert not [p for p in portfolio["positions"] if p["symbol"] == "TCS"]
        # The delivery buy is held now, and settles T+1.
        [held] = [h for h in portfolio["holdings"] if h["symbol"] == "TCS"]
        assert (held["quantity"], held["t1Quantity"]) == (1, 1)

        # The next day's close: the GTD order's date has come.
        await until(clock, CALENDAR.close_of(next_day), after=0.5)
        await eventually(lambda: _has_status(client, auth, gtd["orderId"], "EXPIRED"), timeout=15)
        portfolio = exact_json(await client.get("/v1/portfolio", headers=auth))
        assert [(h["quantity"], h["t1Quantity"]) for h in portfolio["holdings"] if h["symbol"] == "TCS"] == [
            (1, 0)
        ]
        assert (await status_of(client, auth, gtc["orderId"]))["status"] == "OPEN"
        one_block = await eventually(lambda: _blocked_below(client, auth, two_blocks), timeout=15)
        assert one_block == (three_blocks / 3).quantize(Decimal("0.01"))

        cancelled = await client.post(
            f"/v1/orders/{gtc['orderId']}:cancel", headers={**auth, "Idempotency-Key": str(uuid.uuid4())}
        )
        assert cancelled.status_code == 200, cancelled.text
        await eventually(lambda: _has_status(client, auth, gtc["orderId"], "CANCELLED"), timeout=15)
        await eventually(lambda: _nothing_blocked(client, auth), timeout=15)

    report = await audit.run(
        fast_stack.plan.describe(), signer=fast_stack.plan.operator_signer("auditor"), settle_seconds=20
    )
    assert report.complete, report.render()


async def _has_status(client: httpx.AsyncClient, auth: dict[str, str], order_id: str, status: str) -> Any:
    order = await status_of(client, auth, order_id)
    return order if order["status"] == status else None


async def _blocked_below(client: httpx.AsyncClient, auth: dict[str, str], before: Decimal) -> Decimal | None:
    now = await blocked(client, auth)
    return now if now < before else None


async def _nothing_blocked(client: httpx.AsyncClient, auth: dict[str, str]) -> bool:
    return await blocked(client, auth) == 0


async def _square_off_order(client: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, Any] | None:
    orders = exact_json(await client.get("/v1/orders", headers=auth))["orders"]
    done = [o for o in orders if o["clientOrderId"].startswith("sqoff-") and o["status"] == "FILLED"]
    return done[0] if done else None


async def _intraday_position(
    client: httpx.AsyncClient, auth: dict[str, str], symbol: str
) -> dict[str, Any] | None:
    portfolio = exact_json(await client.get("/v1/portfolio", headers=auth))
    rows = [p for p in portfolio["positions"] if p["symbol"] == symbol and p["product"] == "INTRADAY"]
    return rows[0] if rows and rows[0]["netQuantity"] == 0 else None


async def _closed_days(client: httpx.AsyncClient, auth: dict[str, str]) -> list[dict[str, Any]] | None:
    portfolio = exact_json(await client.get("/v1/portfolio", headers=auth))
    return portfolio["dailyRealizedPnl"] or None
