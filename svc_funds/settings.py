"""svc_funds' settings, read from the environment (the shared ones are in svc_runtime.config)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from pathlib import Path

from svc_funds.domain.charges import (
    BUILT_IN,
    DEFAULT_SCHEDULE,
    ChargesSchedule,
    ScheduleError,
    schedule_from_dict,
)
from svc_runtime import config
from svc_runtime.market_clock import MarketClock

# svc_funds' own settings (the shared ones are in svc_runtime.config).
CHARGES = "BROKERMESH_FUNDS_CHARGES"  # `zero`, `india-equity` (default) or a JSON file's path
WRITERS = "BROKERMESH_FUNDS_WRITERS"  # concurrent ledger transactions (default 2)
MAX_BATCH = "BROKERMESH_FUNDS_MAX_BATCH"  # commands per ledger transaction (default 1000)
POOL_SIZE = "BROKERMESH_FUNDS_POOL_SIZE"  # PostgreSQL connections (default 8)
END_OF_DAY = "BROKERMESH_FUNDS_END_OF_DAY"  # `HH:MM` exchange time to close each day; unset: on request only
LINGER_MS = "BROKERMESH_FUNDS_LINGER_MS"  # longest a ledger writer waits for a batch to fill (default 1)
# The simulated payout bank: account numbers it refuses (comma-separated), and how long it
# takes to answer (milliseconds, default 500).
BANK_SIM_FAILING = "BROKERMESH_FUNDS_BANK_SIM_FAILING"
BANK_SIM_DELAY_MS = "BROKERMESH_FUNDS_BANK_SIM_DELAY_MS"


def load_schedule(spec: str) -> ChargesSchedule:
    """A built-in charges schedule by name, or a JSON file of the same shape by path."""
    spec = spec.strip()
    if not spec:
        return DEFAULT_SCHEDULE
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    path = Path(spec)
    if not path.is_file():
        raise ScheduleError(f"charges schedule {spec!r} is neither one of {sorted(BUILT_IN)} nor a JSON file")
    try:
        return schedule_from_dict(json.loads(path.read_text(), parse_float=Decimal))
    except json.JSONDecodeError as exc:
        raise ScheduleError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class FundsSettings:
    common: config.CommonSettings
    marketdata_target: str
    schedule: ChargesSchedule
    writers: int
    max_batch: int
    pool_size: int
    linger_ms: float = 1.0
    end_of_day_at: time | None = None
    market_clock: MarketClock = field(default_factory=MarketClock)
    bank_failing_accounts: tuple[str, ...] = ()
    bank_delay_ms: float = 500.0

    @classmethod
    def from_env(cls) -> FundsSettings:
        market = MarketClock.from_env()
        return cls(
            common=config.CommonSettings.from_env(),
            marketdata_target=os.environ.get(config.MARKETDATA_TARGET, ""),
            schedule=load_schedule(config.env(CHARGES, DEFAULT_SCHEDULE.name)),
            writers=config.env_int(WRITERS, 2),
            max_batch=config.env_int(MAX_BATCH, 1000),
            pool_size=config.env_int(POOL_SIZE, 8),
            linger_ms=config.env_float(LINGER_MS, 1.0),
            end_of_day_at=_end_of_day_at(market),
            market_clock=market,
            bank_failing_accounts=tuple(
                a.strip() for a in os.environ.get(BANK_SIM_FAILING, "").split(",") if a.strip()
            ),
            bank_delay_ms=config.env_float(BANK_SIM_DELAY_MS, 500.0),
        )


def _end_of_day_at(market: MarketClock) -> time | None:
    """`HH:MM` exchange time; by default 16:00 when the market has sessions (a fast clock),
    else none (run on request)."""
    text = os.environ.get(END_OF_DAY) or ("16:00" if market.fast else "")
    return time.fromisoformat(text) if text and text != "off" else None
