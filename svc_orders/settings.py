"""svc_orders' settings, read from the environment (the shared ones are in svc_runtime.config)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from decimal import Decimal

from svc_orders.app.square_off import square_off_time
from svc_orders.domain.risk import RiskLimits
from svc_runtime import config
from svc_runtime.market_clock import Calendar, MarketClock

SQUARE_OFF_AT = "BROKERMESH_SQUARE_OFF_AT"


def _decimal_env(name: str, default: str) -> Decimal:
    return Decimal(config.env(name, default))


@dataclass(frozen=True)
class OrdersSettings:
    common: config.CommonSettings
    funds_target: str
    marketdata_target: str
    exec_target: str
    limits: RiskLimits
    sweep_after_seconds: float
    sweep_interval_seconds: float
    db_pool_size: int
    stream_queue_size: int
    park_after_deliveries: int
    max_placing: int
    market_clock: MarketClock
    # Market time of the daily INTRADAY square-off; None: none (real time, unless set).
    square_off_at: time | None

    @classmethod
    def from_env(cls) -> OrdersSettings:
        return cls(
            common=config.CommonSettings.from_env(default_grpc_listen="127.0.0.1:50051"),
            funds_target=config.env(config.FUNDS_TARGET, "127.0.0.1:50052"),
            marketdata_target=config.env(config.MARKETDATA_TARGET, "127.0.0.1:50053"),
            exec_target=config.env(config.EXEC_TARGET, "127.0.0.1:50054"),
            limits=RiskLimits(
                price_collar=_decimal_env("BROKERMESH_ORDERS_PRICE_COLLAR", "0.10"),
                market_protection=_decimal_env("BROKERMESH_ORDERS_MARKET_PROTECTION", "0.05"),
                max_order_quantity=config.env_int("BROKERMESH_ORDERS_MAX_QUANTITY", 100_000),
                max_order_value=_decimal_env("BROKERMESH_ORDERS_MAX_VALUE", "10000000.00"),
                orders_per_second=_decimal_env("BROKERMESH_ORDERS_RATE_PER_SECOND", "10"),
                order_burst=config.env_int("BROKERMESH_ORDERS_RATE_BURST", 20),
            ),
            sweep_after_seconds=config.env_float("BROKERMESH_ORDERS_SWEEP_AFTER_SECONDS", 15.0),
            sweep_interval_seconds=config.env_float("BROKERMESH_ORDERS_SWEEP_INTERVAL_SECONDS", 5.0),
            db_pool_size=config.env_int("BROKERMESH_ORDERS_DB_POOL_SIZE", 20),
            stream_queue_size=config.env_int("BROKERMESH_ORDERS_STREAM_QUEUE", 1000),
            park_after_deliveries=config.env_int("BROKERMESH_ORDERS_PARK_AFTER_DELIVERIES", 10),
            max_placing=config.env_int("BROKERMESH_ORDERS_MAX_PLACING", 64),
            market_clock=(market := MarketClock.from_env()),
            square_off_at=_square_off_at(market),
        )


def _square_off_at(market: MarketClock) -> time | None:
    try:
        return square_off_time(config.env(SQUARE_OFF_AT, ""), market, Calendar.from_env())
    except ValueError as error:
        raise RuntimeError(f"{SQUARE_OFF_AT}: {error}") from None
