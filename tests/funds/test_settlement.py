"""Settlement of execution reports from JetStream, and the portfolio it builds: svc_funds
against real PostgreSQL and NATS, reports published as svc_exec publishes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import grpc
import pytest

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.funds.v1 import funds_pb2, portfolio_pb2
from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from brokermesh.type.v1 import trading_pb2
from svc_funds.adapters.exec_reports import DURABLE
from svc_funds.domain.model import trading_day
from svc_runtime import tls
from svc_runtime.market_clock import Calendar
from tests.funds.conftest import StartFunds
from tests.funds.support import FundsClient, Reports, dec, report
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


async def block_state(funds: FundsClient, user: str, order_id: str) -> funds_pb2.Block:
    return await funds.get_block(user, order_id)


async def test_fills_settle_once_and_the_leftover_is_released_when_filled(funds: FundsClient) -> None:
    user = await funds.open_account("10000.00")
    await funds.block_funds(user, "ord_f", 10, "100.00")
    async with Reports(funds.nats_url, funds.namespace) as reports:
        await reports.publish(
            report("x-new", "ord_f", user, exec_type=er.EXEC_TYPE_NEW, ord_status=er.ORD_STATUS_NEW),
            report("x-1", "ord_f", user, quantity=4, price="99.00", cumulative=4),
        )
        # The same fill again: once with the same Nats-Msg-Id (JetStream drops it) and once
        # with another (a republish after the dedup window): svc_funds must drop it itself.
        await reports.publish(report("x-1", "ord_f", user, quantity=4, price="99.00", cumulative=4))
        await reports.publish(
            report("x-1", "ord_f", user, quantity=4, price="99.00", cumulative=4), msg_id="again"
        )
        await reports.publish(
            report(
                "x-2",
                "ord_f",
                user,
                quantity=6,
                price="98.50",
                cumulative=10,
                ord_status=er.ORD_STATUS_FILLED,
            )
        )

    async def closed() -> funds_pb2.Block | None:
        block = await block_state(funds, user, "ord_f")
        return block if block.state == funds_pb2.BLOCK_STATE_CLOSED else None

    block = await eventually(closed)
    assert (block.filled_quantity, block.released.value, block.close_reason) == (10, "13.00", "FILLED")
    balance = await funds.get_funds(user)
    assert (balance.available.value, balance.blocked.value) == ("9013.00", "0.00")  # 10000 − 396 − 591
    assert (await funds.sql("SELECT count(*) FROM fills WHERE order_id = 'ord_f'"))[0][0] == 2
    entries = await funds.entries(user)
    assert [e.kind for e in entries].count("FILL") == 4  # the cash and the shares side of each fill
    release = sorted((e.account, e.amount.value) for e in entries if e.kind == "RELEASE")
    assert release == [("cash", "13.00"), ("cash_blocked", "-13.00")]
    portfolio = await funds.portfolio.GetPortfolio(
        portfolio_pb2.GetPortfolioRequest(name=f"users/{user}/portfolio")
    )
    [position] = portfolio.positions
    assert (
        position.symbol,
        position.net_quantity,
        position.average_price.value,
        position.buy_value.value,
    ) == (
        "INFY",
        10,
        "98.70",
        "987.00",
    )
    assert await funds.violations() == []


async def test_a_cancel_that_overtakes_its_last_fill_waits_for_it(funds: FundsClient) -> None:
    user = await funds.open_account("1000.00")
    await funds.block_funds(user, "ord_c", 10, "100.00")
    async with Reports(funds.nats_url, funds.namespace) as reports:
        # The exchange filled 3 and then cancelled the rest; the cancel arrives first.
        await reports.publish(
            report(
                "c-cxl",
                "ord_c",
                user,
                exec_type=er.EXEC_TYPE_CANCELED,
                ord_status=er.ORD_STATUS_CANCELED,
                cumulative=3,
            )
        )

        async def cancel_seen() -> bool:
            return (await funds.sql("SELECT terminal_quantity FROM blocks WHERE order_id = 'ord_c'"))[0][
                0
            ] == 3

        await eventually(cancel_seen)
        block = await block_state(funds, user, "ord_c")
        assert block.state == funds_pb2.BLOCK_STATE_ACTIVE and block.remaining.value == "1000.00"
        await reports.publish(report("c-1", "ord_c", user, quantity=3, price="100.00", cumulative=3))

    async def released() -> bool:
        return (await block_state(funds, user, "ord_c")).state == funds_pb2.BLOCK_STATE_CLOSED

    await eventually(released)
    balance = await funds.get_funds(user)
    assert (balance.available.value, balance.blocked.value) == ("700.00", "0.00")
    assert (await block_state(funds, user, "ord_c")).close_reason == "CANCELED"
    assert await funds.violations() == []


async def test_a_refused_cancel_keeps_the_block_of_the_working_order(funds: FundsClient) -> None:
    """A cancel reject is never the order's end, even when it says the exchange does not
    know the order (OrdStatus 8): svc_orders keeps such an order working, so its block stays."""
    user = await funds.open_account("1000.00")
    await funds.block_funds(user, "ord_k", 5, "100.00")
    async with Reports(funds.nats_url, funds.namespace) as reports:
        await reports.publish(
            report("k-ack", "ord_k", user, exec_type=er.EXEC_TYPE_NEW, ord_status=er.ORD_STATUS_NEW),
            report("k-cxlrej-unknown", "ord_k", user, exec_type=er.EXEC_TYPE_CANCEL_REJECTED,
                   ord_status=er.ORD_STATUS_REJECTED),
            report("k-cxlrej-late", "ord_k", user, exec_type=er.EXEC_TYPE_CANCEL_REJECTED,
                   ord_status=er.ORD_STATUS_NEW),
        )  # fmt: skip

        async def all_settled() -> bool:
            info = await reports.nc.jetstream().consumer_info(reports.topology.exec_reports_stream, DURABLE)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(all_settled)
    block = await block_state(funds, user, "ord_k")
    assert (block.state, block.remaining.value) == (funds_pb2.BLOCK_STATE_ACTIVE, "500.00")
    terminal = await funds.sql("SELECT terminal_quantity FROM blocks WHERE order_id = 'ord_k'")
    assert terminal[0][0] is None
    assert (await funds.get_funds(user)).blocked.value == "500.00"
    assert await funds.violations() == []


async def test_a_fill_after_an_order_service_release_is_still_applied(funds: FundsClient) -> None:
    user = await funds.open_account("1000.00")
    await funds.block_funds(user, "ord_r", 5, "100.00")
    await funds.funds.ReleaseBlock(
        funds_pb2.ReleaseBlockRequest(name=f"users/{user}/blocks/ord_r", reason="REJECTED")
    )
    async with Reports(funds.nats_url, funds.namespace) as reports:
        await reports.publish(report("r-1", "ord_r", user, quantity=2, price="100.00", cumulative=2))

    async def applied() -> bool:
        return (await funds.get_funds(user)).available.value == "800.00"

    await eventually(applied)
    assert (await block_state(funds, user, "ord_r")).filled_quantity == 2
    assert await funds.violations() == []


async def test_reports_that_cannot_be_applied_are_parked_and_settlement_goes_on(funds: FundsClient) -> None:
    funds.audit_at_teardown = False  # parked reports are violations (I4) until resolved
    user = await funds.open_account("1000.00")
    await funds.block_funds(user, "ord_p", 1, "100.00")
    async with Reports(funds.nats_url, funds.namespace) as reports:
        await reports.publish_raw(b"\xff\x00 not a protobuf", "garbage-1")
        await reports.publish(report("p-ghost", "ord_x", "u_GHOST", quantity=1, price="10.00", cumulative=1))
        await reports.publish(
            report(
                "p-ok",
                "ord_p",
                user,
                quantity=1,
                price="100.00",
                cumulative=1,
                ord_status=er.ORD_STATUS_FILLED,
            )
        )

    async def settled() -> bool:
        return (await block_state(funds, user, "ord_p")).state == funds_pb2.BLOCK_STATE_CLOSED

    await eventually(settled)
    parked = await eventually(
        lambda: funds.sql("SELECT exec_id, reason FROM parked_reports ORDER BY exec_id")
    )
    assert [(r["exec_id"], r["reason"]) for r in parked] == [
        ("garbage-1", "unreadable message"),
        ("p-ghost", "unknown user u_GHOST"),
    ]
    violations = await funds.violations()
    assert len(violations) == 2 and all(v.startswith("I4") and "parked" in v for v in violations)


class FakeMarketData(marketdata_pb2_grpc.MarketDataServiceServicer):
    """A price service that knows INFY only."""

    async def BatchGetQuotes(self, request, context):  # type: ignore[no-untyped-def]
        quotes = [
            marketdata_pb2.Quote(symbol=s, last_price=dec("1520.00")) for s in request.symbols if s == "INFY"
        ]
        return marketdata_pb2.BatchGetQuotesResponse(
            quotes=quotes, unknown_symbols=[s for s in request.symbols if s != "INFY"]
        )


@pytest.fixture
async def marketdata() -> AsyncIterator[str]:
    server = grpc.aio.server()
    marketdata_pb2_grpc.add_MarketDataServiceServicer_to_server(FakeMarketData(), server)
    port = tls.add_port(server, "127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_portfolio_marks_to_last_prices_and_end_of_day_settles_once(
    start_funds: StartFunds, marketdata: str
) -> None:
    funds = await start_funds(marketdata_target=marketdata)
    user = await funds.open_account("100000.00")
    await funds.deposit_shares(user, "INFY", 20, "1480.25")
    await funds.deposit_shares(user, "TCS", 1, "3500.00")
    await funds.funds.BlockHoldings(
        funds_pb2.BlockHoldingsRequest(parent=f"users/{user}", order_id="sell", symbol="INFY", quantity=5)
    )
    await funds.block_funds(user, "buy", 3, "1500.00")
    async with Reports(funds.nats_url, funds.namespace) as reports:
        await reports.publish(
            report(
                "pf-s",
                "sell",
                user,
                side=trading_pb2.SIDE_SELL,
                quantity=5,
                price="1550.00",
                cumulative=5,
                ord_status=er.ORD_STATUS_FILLED,
            ),
            report(
                "pf-b",
                "buy",
                user,
                quantity=3,
                price="1500.00",
                cumulative=3,
                ord_status=er.ORD_STATUS_FILLED,
            ),
        )

    async def both_settled() -> bool:
        return (await funds.sql("SELECT count(*) FROM fills"))[0][0] == 2

    await eventually(both_settled)
    name = f"users/{user}/portfolio"
    portfolio = await funds.portfolio.GetPortfolio(portfolio_pb2.GetPortfolioRequest(name=name))
    infy, tcs = portfolio.holdings
    assert (infy.symbol, infy.quantity, infy.invested_value.value, infy.last_price.value) == (
        "INFY",
        20,
        "29605.00",
        "1520.00",
    )
    assert (infy.current_value.value, infy.unrealized_pnl.value) == ("30400.00", "795.00")
    assert tcs.symbol == "TCS" and not tcs.HasField("last_price") and not tcs.HasField("unrealized_pnl")
    [position] = portfolio.positions
    assert (position.net_quantity, position.realized_pnl.value, position.unrealized_pnl.value) == (
        -2,
        "150.00",
        "60.00",
    )
    assert position.trading_day == trading_day(datetime.now(UTC)).isoformat()
    settles = Calendar().settlement_date(date.fromisoformat(position.trading_day))
    assert position.settlement_date == settles.isoformat()  # T+1 in trading days
    assert "average-cost" in portfolio.pnl_basis
    assert not portfolio.daily_realized_pnl

    first = await funds.portfolio.RunEndOfDay(portfolio_pb2.RunEndOfDayRequest())
    again = await funds.portfolio.RunEndOfDay(portfolio_pb2.RunEndOfDayRequest(trading_day=first.trading_day))
    assert (first.positions_settled, first.already_closed) == (1, False)
    assert (again.positions_settled, again.already_closed) == (0, True)
    after = await funds.portfolio.GetPortfolio(portfolio_pb2.GetPortfolioRequest(name=name))
    assert not after.positions
    infy = after.holdings[0]
    # 2 of 20 left at the holding's cost (2960.50) for 2 × 1550 = 3100: 139.50 realized.
    assert (infy.quantity, infy.invested_value.value, infy.realized_pnl.value) == (18, "26644.50", "139.50")
    # The day's realized P&L outlives its position: the round trip's 150.00 and the sale's 139.50.
    [closed_day] = after.daily_realized_pnl
    assert (closed_day.trading_day, closed_day.realized_pnl.value) == (first.trading_day, "289.50")
    assert await funds.violations() == []


async def test_without_the_price_service_the_portfolio_still_answers(funds: FundsClient) -> None:
    user = await funds.open_account()
    await funds.deposit_shares(user, "INFY", 2, "1000.00")
    portfolio = await funds.portfolio.GetPortfolio(
        portfolio_pb2.GetPortfolioRequest(name=f"users/{user}/portfolio")
    )
    [holding] = portfolio.holdings
    assert (
        holding.quantity == 2
        and not holding.HasField("last_price")
        and not holding.HasField("unrealized_pnl")
    )


async def test_end_of_day_runs_by_itself_at_the_configured_time(start_funds: StartFunds) -> None:
    from datetime import timedelta

    from svc_funds.domain.model import EXCHANGE_TZ

    soon = (datetime.now(UTC) + timedelta(seconds=5)).astimezone(EXCHANGE_TZ)
    funds = await start_funds(end_of_day_at=soon.time().replace(microsecond=0))
    user = await funds.open_account("1000.00")
    await funds.block_funds(user, "ord_eod", 2, "100.00")
    async with Reports(funds.nats_url, funds.namespace) as reports:
        await reports.publish(
            report(
                "eod-1",
                "ord_eod",
                user,
                quantity=2,
                price="100.00",
                cumulative=2,
                ord_status=er.ORD_STATUS_FILLED,
            )
        )
    runs = await eventually(
        lambda: funds.sql("SELECT trading_day, positions_settled FROM eod_runs"), timeout=30
    )
    assert [(r["trading_day"], r["positions_settled"]) for r in runs] == [(soon.date(), 1)]
    portfolio = await funds.portfolio.GetPortfolio(
        portfolio_pb2.GetPortfolioRequest(name=f"users/{user}/portfolio")
    )
    assert [(h.symbol, h.quantity) for h in portfolio.holdings] == [("INFY", 2)] and not portfolio.positions
