"""The instrument master file (CSV) shipped with the simulator, or one an operator names."""

from __future__ import annotations

import csv
from pathlib import Path

from exchange_sim.domain.instruments import Instrument, parse_instruments

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "data" / "instruments.csv"


def load_instruments(path: Path = DEFAULT_FILE) -> dict[str, Instrument]:
    with path.open(newline="", encoding="utf-8") as handle:
        return parse_instruments(csv.DictReader(handle))
