"""The instrument master from a file, for a venue without a market-data session (the
venue's daily security master, exported as CSV):

    symbol,company_name,isin,lot_size,tick_size,previous_close,sector

Only `symbol` and `company_name` are required; the rest default as in the FIX master.
"""

from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation
from pathlib import Path

from svc_marketdata.domain.instruments import DEFAULT_TICK_SIZE, Instrument


def load_instruments(path: Path) -> list[Instrument]:
    instruments = []
    with path.open(newline="") as file:
        for line, row in enumerate(csv.DictReader(file), start=2):
            try:
                symbol, name = row["symbol"].strip().upper(), row["company_name"].strip()
                if not symbol or not name:
                    raise ValueError("symbol and company_name are required")
                close = (row.get("previous_close") or "").strip()
                instruments.append(
                    Instrument(
                        symbol=symbol,
                        company_name=name,
                        sector=(row.get("sector") or "").strip(),
                        tick_size=Decimal((row.get("tick_size") or "").strip() or DEFAULT_TICK_SIZE),
                        lot_size=int((row.get("lot_size") or "").strip() or 1),
                        previous_close=Decimal(close) if close else None,
                        isin=(row.get("isin") or "").strip(),
                    )
                )
            except (KeyError, ValueError, InvalidOperation) as error:
                raise ValueError(f"{path}:{line}: {error}") from error
    return instruments
