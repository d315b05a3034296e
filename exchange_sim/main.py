"""Composition root of the exchange simulator: settings → adapters → app → transport."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from brokermesh.exchange.v1 import exchange_admin_pb2_grpc
from exchange_sim.adapters.fix.acceptor import ORDER_ENTRY, FixAcceptor
from exchange_sim.adapters.instrument_file import DEFAULT_FILE, load_instruments
from exchange_sim.app.delivery import DelayedDelivery
from exchange_sim.app.exchange import Exchange
from exchange_sim.app.order_entry import ExchangeIds, OrderEntry
from exchange_sim.domain.matching import SELF_TRADE_MODES, MatchingEngine
from exchange_sim.transport.admin import ExchangeAdminServicer
from svc_runtime import config, ids
from svc_runtime.config import env, env_int
from svc_runtime.fix import ThreadBridge
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.service import run

log = logging.getLogger(__name__)

SERVICE = "exchange_sim"
ADMIN_SERVICE = "brokermesh.exchange.v1.ExchangeAdminService"
DEFAULT_FIX_CONFIG = Path(__file__).resolve().parent / "config" / "acceptor.cfg"


@dataclass(frozen=True)
class ExchangeSettings:
    data_dir: Path
    grpc_listen: str
    metrics_port: int
    fix_port: int
    fix_config: Path
    instruments_file: Path
    self_trade: str

    @classmethod
    def from_env(cls) -> ExchangeSettings:
        common = config.CommonSettings.from_env()
        self_trade = env("BROKERMESH_EXCHANGE_SELF_TRADE", "CANCEL_NEWEST").upper()
        if self_trade not in SELF_TRADE_MODES:
            raise RuntimeError(f"BROKERMESH_EXCHANGE_SELF_TRADE must be one of {sorted(SELF_TRADE_MODES)}")
        return cls(
            data_dir=common.data_dir / SERVICE,
            grpc_listen=common.grpc_listen,
            metrics_port=common.metrics_port,
            fix_port=env_int(config.FIX_PORT, 9878),
            fix_config=Path(env("BROKERMESH_EXCHANGE_FIX_CONFIG", str(DEFAULT_FIX_CONFIG))),
            instruments_file=Path(env("BROKERMESH_EXCHANGE_INSTRUMENTS", str(DEFAULT_FILE))),
            self_trade=self_trade,
        )


def tune_gc() -> None:
    """The matching engine allocates many short-lived objects and few reference cycles:
    collect the young generation rarely and keep start-up objects out of every pass."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def serve(settings: ExchangeSettings, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    instruments = load_instruments(settings.instruments_file)
    engine = MatchingEngine(instruments.values(), self_trade=settings.self_trade)
    boot_id = ids.new_id("x")[2:16]
    exchange: Exchange | None = None

    def dispatch(session: str, request: object) -> None:
        assert exchange is not None
        exchange.dispatch(session, request)

    def session_changed(session: str, logged_on: bool) -> None:
        assert exchange is not None
        exchange.session_changed(session, logged_on)

    acceptor = FixAcceptor(
        template=settings.fix_config,
        work_dir=settings.data_dir,
        port=settings.fix_port,
        bridge=ThreadBridge(loop),
        dispatch=dispatch,
        on_session=session_changed,
    )
    delivery = DelayedDelivery(acceptor)
    order_entry = OrderEntry(
        engine,
        delivery,
        ExchangeIds(boot_id),
        lambda: datetime.now(UTC),
        counterparties=acceptor.counterparties(ORDER_ENTRY),
    )
    exchange = Exchange(engine, order_entry, delivery, acceptor)

    server = GrpcServer(settings.grpc_listen)
    server.add(
        exchange_admin_pb2_grpc.add_ExchangeAdminServiceServicer_to_server,
        ExchangeAdminServicer(exchange),
        ADMIN_SERVICE,
    )

    tune_gc()
    acceptor.start()
    await server.start()
    log.info(
        "exchange open",
        extra={"boot_id": boot_id, "instruments": len(instruments), "fix_port": settings.fix_port},
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
        await delivery.close()
        await asyncio.to_thread(acceptor.stop)


def main() -> None:
    settings = ExchangeSettings.from_env()
    run(SERVICE, lambda stop: serve(settings, stop), metrics_port=settings.metrics_port)
