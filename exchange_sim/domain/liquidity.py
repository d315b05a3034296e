"""Liquidity agents: a random-walk fair price per symbol, market makers quoting around it,
and noise traders taking liquidity so that prices and volumes move.

Everything is integer ticks and shares; random draws are the only floats, and each is turned
into whole ticks or shares at once. The fair price is kept in thousandths of a tick so that
cheap stocks (a few hundred ticks) still drift smoothly. Each symbol has its own generator,
seeded from the session seed and the symbol, so its path depends on nothing else.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from exchange_sim.domain.matching import BUY, SELL

MILLI = 1000


@dataclass(frozen=True)
class LiquidityConfig:
    # Standard deviation of the fair price's move per second, in basis points.
    volatility_bps: float = 2.0
    # Fraction of the distance to the reference close the fair price recovers per hour.
    reversion_per_hour: float = 0.5
    # Market makers: ticks between their best bid and best ask, levels per side, ticks
    # between levels, and the size of each level in lots (drawn between the two).
    spread_ticks: int = 2
    levels: int = 5
    level_gap_ticks: int = 1
    min_lots: int = 50
    max_lots: int = 500
    # Noise traders: marketable orders per symbol per minute, and their largest size in lots.
    trades_per_minute: float = 6.0
    max_trade_lots: int = 100


@dataclass(frozen=True)
class Activity:
    """How busy the liquid symbols (the index constituents) are beside the rest.

    `normal` leaves every symbol as `LiquidityConfig` says (reproducible tests rely on it);
    `demo` steps each liquid symbol several times per symbol period and lets its noise
    trader trade a few times a second, so a watchlist of liquid names visibly moves.
    """

    liquid_steps_per_period: int = 1
    liquid_trades_per_minute: float | None = None


ACTIVITY_LEVELS = {
    "normal": Activity(),
    "demo": Activity(liquid_steps_per_period=4, liquid_trades_per_minute=150.0),
}


@dataclass(frozen=True, slots=True)
class Quote:
    side: int
    price: int
    quantity: int


class SymbolAgent:
    """The fair price of one symbol and the decisions of its market maker and noise trader."""

    def __init__(
        self,
        symbol: str,
        *,
        reference_ticks: int,
        band: tuple[int, int],
        lot: int,
        seed: int | str,
        config: LiquidityConfig,
    ) -> None:
        self.symbol = symbol
        self.reference = reference_ticks
        self.band_low, self.band_high = band
        self.lot = lot
        self.config = config
        self.rng = random.Random(f"{seed}:{symbol}")
        # Quotes never sit on the band's edges, so the walk stays a little inside it.
        self.fair_milli = reference_ticks * MILLI

    @property
    def fair(self) -> int:
        return (self.fair_milli + MILLI // 2) // MILLI

    def step(self, seconds: float) -> int:
        """Move the fair price by one random step of `seconds`; returns it in ticks."""
        sigma = self.fair_milli * self.config.volatility_bps / 10_000 * math.sqrt(seconds)
        pull = (self.reference * MILLI - self.fair_milli) * self.config.reversion_per_hour * seconds / 3600
        self.fair_milli += round(self.rng.gauss(0.0, sigma) + pull)
        self._clamp()
        return self.fair

    def shock(self, percent: float) -> int:
        self.fair_milli += round(self.fair_milli * percent / 100)
        self._clamp()
        return self.fair

    def _clamp(self) -> None:
        margin = self.config.spread_ticks + self.config.levels * self.config.level_gap_ticks
        low = (self.band_low + margin) * MILLI
        high = (self.band_high - margin) * MILLI
        if low > high:  # a band too narrow for the quotes: stay at its middle
            low = high = (self.band_low + self.band_high) // 2 * MILLI
        self.fair_milli = min(max(self.fair_milli, low), high)

    def quotes(self) -> list[Quote]:
        """The market maker's ladder around the fair price, inside the band."""
        config = self.config
        fair = self.fair
        best_bid = fair - config.spread_ticks // 2
        best_ask = best_bid + max(1, config.spread_ticks)
        out: list[Quote] = []
        for level in range(config.levels):
            offset = level * config.level_gap_ticks
            for side, price in ((BUY, best_bid - offset), (SELL, best_ask + offset)):
                if self.band_low <= price <= self.band_high:
                    lots = self.rng.randint(config.min_lots, config.max_lots)
                    out.append(Quote(side, price, lots * self.lot))
        return out

    def noise_trade(self, seconds: float, last: int) -> Quote | None:
        """Maybe a marketable order (price 0: at market). Buyers are likelier when the last
        trade is below the fair price, sellers when above, so trades follow the fair price."""
        chance = self.config.trades_per_minute * seconds / 60
        if self.rng.random() >= chance:
            return None
        lean = (
            0.0
            if not last
            else max(-0.4, min(0.4, (self.fair - last) / max(1, self.config.spread_ticks) / 10))
        )
        side = BUY if self.rng.random() < 0.5 + lean else SELL
        lots = self.rng.randint(1, max(1, self.config.max_trade_lots))
        return Quote(side, 0, lots * self.lot)
