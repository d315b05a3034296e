"""The instrument master: what trades on the exchange and by which rules.

Prices are exact decimals at the edges and integer ticks (price / tick size) inside the
matching engine; quantities are integer shares in multiples of the lot size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

HUNDRED = Decimal(100)


class InstrumentError(ValueError):
    """A row of the instrument master is unusable."""


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    name: str
    sector: str
    tick_size: Decimal
    lot_size: int
    previous_close: Decimal
    # Share of the market index (for circuit breakers); 0 when not a constituent.
    index_weight: Decimal = Decimal(0)
    # Daily price band around the previous close, in percent: orders outside it are rejected.
    band_percent: Decimal = Decimal(20)
    band_low_ticks: int = field(init=False)
    band_high_ticks: int = field(init=False)
    previous_close_ticks: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.symbol or not self.symbol.isascii() or self.symbol != self.symbol.strip().upper():
            raise InstrumentError(f"bad symbol {self.symbol!r}")
        if self.tick_size <= 0 or self.lot_size <= 0 or self.previous_close <= 0:
            raise InstrumentError(f"{self.symbol}: tick size, lot size and previous close must be positive")
        if self.previous_close % self.tick_size:
            raise InstrumentError(f"{self.symbol}: previous close is not a multiple of the tick size")
        close_ticks = int(self.previous_close / self.tick_size)
        band = self.previous_close * self.band_percent / HUNDRED
        # The band is inclusive and snapped inwards to the tick grid.
        low = ((self.previous_close - band) / self.tick_size).to_integral_value(rounding=ROUND_CEILING)
        high = ((self.previous_close + band) / self.tick_size).to_integral_value(rounding=ROUND_FLOOR)
        object.__setattr__(self, "previous_close_ticks", close_ticks)
        object.__setattr__(self, "band_low_ticks", max(1, int(low)))
        object.__setattr__(self, "band_high_ticks", int(high))

    def to_ticks(self, price: Decimal) -> int | None:
        """The price in ticks, or None when it is not a positive multiple of the tick size."""
        try:
            ticks, rest = divmod(price, self.tick_size)
        except InvalidOperation:
            return None
        if rest or ticks <= 0:
            return None
        return int(ticks)

    def to_price(self, ticks: int) -> Decimal:
        return self.tick_size * ticks

    @property
    def band_low(self) -> Decimal:
        return self.to_price(self.band_low_ticks)

    @property
    def band_high(self) -> Decimal:
        return self.to_price(self.band_high_ticks)


# Columns of exchange_sim/data/instruments.csv, in order.
COLUMNS = (
    "symbol",
    "name",
    "sector",
    "tick_size",
    "lot_size",
    "previous_close",
    "index_weight",
    "band_percent",
)


def _decimal(row: Mapping[str, str], column: str, line: int) -> Decimal:
    text = (row.get(column) or "").strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InstrumentError(f"line {line}: {column} {text!r} is not a decimal") from None
    if not value.is_finite():
        raise InstrumentError(f"line {line}: {column} {text!r} is not finite")
    return value


def parse_instruments(rows: Iterable[Mapping[str, str]]) -> dict[str, Instrument]:
    """Instruments from CSV rows (as `csv.DictReader` yields them), keyed by symbol."""
    out: dict[str, Instrument] = {}
    for line, row in enumerate(rows, start=2):
        lot = _decimal(row, "lot_size", line)
        if lot != lot.to_integral_value():
            raise InstrumentError(f"line {line}: lot_size must be an integer")
        instrument = Instrument(
            symbol=(row.get("symbol") or "").strip(),
            name=(row.get("name") or "").strip(),
            sector=(row.get("sector") or "").strip(),
            tick_size=_decimal(row, "tick_size", line),
            lot_size=int(lot),
            previous_close=_decimal(row, "previous_close", line),
            index_weight=_decimal(row, "index_weight", line) if row.get("index_weight") else Decimal(0),
            band_percent=_decimal(row, "band_percent", line) if row.get("band_percent") else Decimal(20),
        )
        if instrument.symbol in out:
            raise InstrumentError(f"line {line}: duplicate symbol {instrument.symbol}")
        out[instrument.symbol] = instrument
    return out
