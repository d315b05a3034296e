"""Average-cost P&L, day and net scopes, and the end-of-day fold: pure domain logic."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from svc_funds.domain.model import Product
from svc_funds.domain.portfolio import (
    HoldingRow,
    HoldingState,
    PositionRow,
    holding_figures,
    position_figures,
    settle_day,
    settle_positions,
)

D = Decimal
DAY = date(2026, 1, 15)


def position(buy_q: int, buy_v: str, sell_q: int, sell_v: str, product: Product = Product.CNC) -> PositionRow:
    return PositionRow("u1", DAY, "INFY", product, buy_q, D(buy_v), sell_q, D(sell_v))


def test_a_long_position_marks_its_open_quantity_to_the_last_price() -> None:
    f = position_figures(position(10, "15000.00", 4, "6200.00"), D("1520.00"))
    assert f.net_quantity == 6
    assert f.average_price == D("1500.0000")
    assert f.realized_pnl == D("200.00")  # 4 × (1550 − 1500)
    assert f.unrealized_pnl == D("120.00")  # 6 × (1520 − 1500)


def test_a_sale_of_held_shares_shows_as_a_short_day_position() -> None:
    f = position_figures(position(0, "0", 5, "6600.50"), D("1300.00"))
    assert f.net_quantity == -5 and f.average_price == D("1320.1000")
    assert f.realized_pnl == 0
    assert f.unrealized_pnl == D("100.50")  # sold at 1320.10, now 1300


def test_day_pnl_equals_sell_value_minus_buy_value_plus_the_open_quantity_at_the_last_price() -> None:
    for p in (
        position(7, "700.35", 3, "330.00"),
        position(2, "200.00", 9, "950.45"),
        position(5, "500", 5, "480"),
    ):
        f = position_figures(p, D("101.05"))
        assert f.realized_pnl + f.unrealized_pnl == (
            p.sell_value - p.buy_value + p.net_quantity * D("101.05")
        ).quantize(D("0.01"))


def test_without_a_last_price_unrealized_pnl_is_unknown_not_zero() -> None:
    assert position_figures(position(1, "100", 0, "0"), None).unrealized_pnl is None
    assert holding_figures(HoldingRow("u1", "INFY", 3, D("300"), D(0)), None).unrealized_pnl is None


def test_holding_figures_have_net_scope() -> None:
    f = holding_figures(HoldingRow("u1", "INFY", 20, D("29605.00"), D(0)), D("1542.35"))
    assert f.average_buy_price == D("1480.2500")
    assert f.invested_value == D("29605.00")
    assert f.current_value == D("30847.00")
    assert f.unrealized_pnl == D("1242.00")


def test_holdings_net_pnl_plus_positions_day_pnl_counts_everything_once() -> None:
    # Held 20 @ 1480.25; today sold 5 @ 1550 and bought 3 @ 1500; last price 1520.
    holding = HoldingRow("u1", "INFY", 20, D("29605.00"), D(0))
    today = position(3, "4500.00", 5, "7750.00")
    last = D("1520.00")
    h, p = holding_figures(holding, last), position_figures(today, last)
    total = h.unrealized_pnl + p.realized_pnl + p.unrealized_pnl
    # Independently: 18 shares now worth 18 × 1520, cash in 7750, cash out 29605 + 4500.
    assert total == 18 * last + D("7750.00") - D("29605.00") - D("4500.00")


def test_end_of_day_folds_buys_at_their_cost_and_sales_at_the_holding_cost() -> None:
    holdings = {("u1", "INFY"): HoldingState(20, D("29605.00"), D(0))}
    anomalies = settle_positions(
        holdings,
        [position(0, "0", 5, "7750.00"), position(10, "15000.00", 0, "0", Product.INTRADAY)],
    )
    # The INTRADAY buy was never squared off: its shares are carried, and that is said.
    assert anomalies == ["u1 INTRADAY INFY of 2026-01-15 not squared off: 10 carried to delivery"]
    h = holdings[("u1", "INFY")]
    # +10 @ 1500 first: 30 shares costing 44605; then 5 leave at 44605 × 5/30 = 7434.17.
    assert h.quantity == 25
    assert h.cost == D("44605.00") - D("7434.17")
    assert h.realized_pnl == D("7750.00") - D("7434.17")


def test_selling_everything_leaves_no_cost_behind() -> None:
    holdings = {("u1", "INFY"): HoldingState(3, D("100.00"), D(0))}
    settle_positions(holdings, [position(0, "0", 3, "120.00")])
    assert holdings[("u1", "INFY")] == HoldingState(0, D("0.00"), D("20.00"))


def test_a_sale_beyond_the_holding_is_reported_not_hidden() -> None:
    holdings: dict[tuple[str, str], HoldingState] = {}
    anomalies = settle_positions(holdings, [position(0, "0", 2, "200.00")])
    assert anomalies and "sold 2" in anomalies[0]
    assert holdings[("u1", "INFY")].quantity == 0


def test_the_daily_end_of_day_runs_at_the_next_close_in_exchange_time() -> None:
    from datetime import UTC, datetime, time

    from svc_funds.app.portfolio import next_run
    from svc_funds.domain.model import EXCHANGE_TZ

    close = time(15, 45)
    morning = datetime(2026, 1, 15, 4, 30, tzinfo=UTC)  # 10:00 IST
    assert next_run(morning, close) == datetime(2026, 1, 15, 15, 45, tzinfo=EXCHANGE_TZ)
    evening = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)  # 16:00 IST
    assert next_run(evening, close) == datetime(2026, 1, 16, 15, 45, tzinfo=EXCHANGE_TZ)


def test_the_days_realized_pnl_is_kept_with_round_trips_and_sales_out_of_holdings() -> None:
    holdings = {("u1", "INFY"): HoldingState(20, D("29605.00"), D(0))}
    squared_off = PositionRow("u1", DAY, "INFY", Product.INTRADAY, 10, D("15000.00"), 10, D("15120.00"))
    sale = position(0, "0", 5, "7750.00")
    other_day = PositionRow("u1", date(2026, 1, 14), "INFY", Product.CNC, 2, D("3000.00"), 2, D("2990.00"))
    settled = settle_day(holdings, [squared_off, sale, other_day])
    assert settled.anomalies == []
    # 10 × (1512 − 1500) from the round trip; 7750 − 29605 × 5/20 = 348.75 from the sale.
    assert settled.realized == {
        ("u1", DAY, "INFY"): D("120.00") + D("348.75"),
        ("u1", date(2026, 1, 14), "INFY"): D("-10.00"),
    }
    # The holding keeps its own (net-scope) realized P&L of the sale only.
    assert holdings[("u1", "INFY")].realized_pnl == D("348.75")
    assert holdings[("u1", "INFY")].quantity == 15


async def test_holdings_say_which_shares_have_not_settled_yet() -> None:
    from datetime import datetime, time

    from svc_funds.app.portfolio import PortfolioApp
    from svc_funds.app.ports import PortfolioRows
    from svc_runtime.market_clock import IST

    friday, monday = date(2026, 12, 11), date(2026, 12, 14)

    class Store:
        async def rows(self, user_id: str, tag: str = "") -> PortfolioRows:
            return PortfolioRows(
                holdings=[
                    HoldingRow("u1", "INFY", 30, D("45000.00"), D(0)),
                    HoldingRow("u1", "TCS", 5, D("1.00"), D(0)),
                ],
                positions=[],
                blocked_shares={},
                recent_buys=[(date(2026, 12, 10), "INFY", 10), (friday, "INFY", 7), (friday, "TCS", -2)],
            )

    class Quotes:
        async def last_prices(self, symbols: list[str]) -> dict[str, Decimal]:
            return {}

    async def exists(user_id: str) -> bool:
        return True

    now = [datetime.combine(date(2026, 12, 12), time(10), tzinfo=IST)]  # Saturday
    app = PortfolioApp(Store(), Quotes(), exists, lambda: now[0])  # type: ignore[arg-type]
    held = {h.row.symbol: h.t1_quantity for h in (await app.portfolio("u1")).holdings}
    # Thursday's buys settled on Friday; Friday's settle on Monday (T+1 skips the weekend).
    assert held == {"INFY": 7, "TCS": 0}
    now[0] = datetime.combine(monday, time(9), tzinfo=IST)
    assert [h.t1_quantity for h in (await app.portfolio("u1")).holdings] == [0, 0]


def test_pnl_is_shown_before_and_after_the_charges_of_the_positions_fills() -> None:
    closed = PositionRow("u1", DAY, "INFY", Product.INTRADAY, 10, D("1000.00"), 10, D("1100.00"), D("3.21"))
    f = position_figures(closed, None)
    assert (f.realized_pnl, f.charges, f.pnl_after_charges) == (D("100.00"), D("3.21"), D("96.79"))
    open_long = PositionRow("u1", DAY, "INFY", Product.CNC, 10, D("1000.00"), 4, D("440.00"), D("1.50"))
    assert position_figures(open_long, None).pnl_after_charges is None  # unrealized P&L unknown
    marked = position_figures(open_long, D("105.00"))
    assert (marked.realized_pnl, marked.unrealized_pnl) == (D("40.00"), D("30.00"))
    assert marked.pnl_after_charges == D("68.50")
