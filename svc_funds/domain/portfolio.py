"""Holdings, positions and their profit and loss, on an average-cost basis.

Definitions (so that figures are safe to sum):
- A *position* is one trading day's trading in one symbol and product. Its P&L has **day**
  scope: realized = matched quantity × (average sell − average buy) of that day; unrealized =
  open net quantity × (last price − average price of the open side). Their sum equals
  sell value − buy value + net quantity × last price.
- A *holding* is settled shares, at the quantity and cost of the last end-of-day run. Its
  unrealized P&L has **net** scope (since purchase): quantity × (last price − average buy
  price). Shares sold today still count in the holding until the end of the day, and the
  sale shows in today's position as a negative net quantity; so holdings' net P&L plus
  positions' day P&L is exactly the P&L of everything owned and traded, with nothing counted
  twice.
- End of day moves each position's net quantity into holdings: bought shares join the
  holding at the position's average buy price (average cost); sold shares leave it at the
  holding's average cost, and the difference to the position's average sell price is the
  holding's realized P&L (net scope).
- The day's *realized P&L* is kept per user, trading day and symbol when the day ends: each
  position's day-scope realized P&L (its matched buys and sells) plus what its net sale
  realized against the holding. So a round trip inside the day (an INTRADAY trade squared
  off) is not lost when its position, netting to zero, leaves for history.
- An INTRADAY position is squared off before the close; one still open at the end of day
  (the square-off failed) is carried into the holding like a delivery trade — the shares are
  real — and reported as an anomaly.

Shares bought today can be sold today (as Indian brokers allow): they are in the user's
share balance as soon as the fill settles; holdings are only the settled view of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from svc_funds.domain.model import Product
from svc_runtime.decimals import round_money

ZERO = Decimal(0)
PRICE_PLACES = Decimal("0.0001")
PNL_BASIS = "average-cost; holdings: net scope (since purchase); positions: day scope"


def average(value: Decimal, quantity: int) -> Decimal | None:
    """value / quantity to 4 places (half up), or None for no quantity."""
    if quantity == 0:
        return None
    return (value / quantity).quantize(PRICE_PLACES, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class PositionRow:
    user_id: str
    trading_day: date
    symbol: str
    product: Product
    buy_quantity: int
    buy_value: Decimal
    sell_quantity: int
    sell_value: Decimal
    charges: Decimal = ZERO  # paid on the position's fills (read with the portfolio only)

    @property
    def net_quantity(self) -> int:
        return self.buy_quantity - self.sell_quantity


@dataclass(frozen=True)
class HoldingRow:
    user_id: str
    symbol: str
    quantity: int
    cost: Decimal  # the cost basis of `quantity`
    realized_pnl: Decimal


@dataclass(frozen=True)
class PositionFigures:
    net_quantity: int
    average_price: Decimal | None
    realized_pnl: Decimal  # before charges
    unrealized_pnl: Decimal | None  # before charges
    charges: Decimal = ZERO
    # realized + unrealized − the charges of the position's fills; None while unrealized
    # P&L is unknown (no last price for an open position)
    pnl_after_charges: Decimal | None = None


@dataclass(frozen=True)
class HoldingFigures:
    average_buy_price: Decimal | None
    invested_value: Decimal
    current_value: Decimal | None
    unrealized_pnl: Decimal | None


def position_figures(p: PositionRow, last_price: Decimal | None) -> PositionFigures:
    """Day-scope figures of a position; unrealized P&L only when the last price is known."""
    matched = min(p.buy_quantity, p.sell_quantity)
    realized = ZERO
    if matched:
        # matched × (sell_value / sell_qty − buy_value / buy_qty), rounded once at the end
        realized = round_money(
            matched * p.sell_value / p.sell_quantity - matched * p.buy_value / p.buy_quantity
        )
    net = p.net_quantity
    if net > 0:
        open_value, open_quantity = p.buy_value, p.buy_quantity
    elif net < 0:
        open_value, open_quantity = p.sell_value, p.sell_quantity
    else:
        open_value, open_quantity = ZERO, 0
    average_price = average(open_value, open_quantity) if net else None
    unrealized: Decimal | None = None
    if last_price is not None:
        unrealized = ZERO
        if net:
            unrealized = round_money(net * last_price - net * open_value / open_quantity)
    after: Decimal | None = None
    if unrealized is not None or not net:
        after = realized + (unrealized or ZERO) - p.charges
    return PositionFigures(net, average_price, realized, unrealized, p.charges, after)


def holding_figures(h: HoldingRow, last_price: Decimal | None) -> HoldingFigures:
    """Net-scope figures of a holding."""
    current = None if last_price is None else round_money(h.quantity * last_price)
    unrealized = None if current is None else current - h.cost
    return HoldingFigures(average(h.cost, h.quantity), h.cost, current, unrealized)


@dataclass
class HoldingState:
    quantity: int
    cost: Decimal
    realized_pnl: Decimal


RealizedKey = tuple[str, date, str]  # (user, trading day, symbol)


@dataclass
class DaySettlement:
    anomalies: list[str] = field(default_factory=list)
    realized: dict[RealizedKey, Decimal] = field(default_factory=dict)


def settle_positions(
    holdings: dict[tuple[str, str], HoldingState], positions: list[PositionRow]
) -> list[str]:
    """End of day: fold positions into `holdings` (mutated in place); returns anomalies."""
    return settle_day(holdings, positions).anomalies


def settle_day(holdings: dict[tuple[str, str], HoldingState], positions: list[PositionRow]) -> DaySettlement:
    """End of day: fold positions into `holdings` (mutated in place); returns anomalies and
    the realized P&L of each user, day and symbol.

    Long positions go first, so that a sale of shares bought the same day (under any
    product) finds them in the holding. A sale of more than is held cannot happen while
    SELL orders need free shares; if a fill did it anyway, the holding stops at zero, the
    shares owed stay in the ledger's dues, and the anomaly is reported.
    """
    result = DaySettlement()
    anomalies = result.anomalies
    for p in sorted(positions, key=lambda p: (p.net_quantity < 0, p.user_id, p.symbol, p.trading_day)):
        key = (p.user_id, p.symbol)
        holding = holdings.setdefault(key, HoldingState(0, ZERO, ZERO))
        net = p.net_quantity
        day_key = (p.user_id, p.trading_day, p.symbol)
        realized = position_figures(p, None).realized_pnl
        result.realized[day_key] = result.realized.get(day_key, ZERO) + realized
        if net and p.product is Product.INTRADAY:
            anomalies.append(
                f"{p.user_id} INTRADAY {p.symbol} of {p.trading_day} not squared off: {net} carried to delivery"
            )
        if net > 0:
            holding.cost += round_money(net * p.buy_value / p.buy_quantity)
            holding.quantity += net
        elif net < 0:
            sold = -net
            if sold > holding.quantity:
                anomalies.append(
                    f"{p.user_id} sold {sold} {p.symbol} on {p.trading_day} but held {holding.quantity}"
                )
                sold = holding.quantity
            if sold == 0:
                continue
            cost_out = (
                holding.cost
                if sold == holding.quantity
                else round_money(holding.cost * sold / holding.quantity)
            )
            proceeds = round_money(sold * p.sell_value / p.sell_quantity)
            holding.realized_pnl += proceeds - cost_out
            result.realized[day_key] += proceeds - cost_out
            holding.cost -= cost_out
            holding.quantity -= sold
    return result
