"""Market data for risk checks and audit snapshots.

Instruments (tick size, lot size, previous close) come from svc_marketdata's GetInstrument
and are cached. Last prices come from the tick batches svc_marketdata publishes on core
NATS: one subscription to every shard keeps a last-value map (newer quote sequence wins);
a symbol not seen yet is looked up once in the quotes KV bucket.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal

import grpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc, tick_pb2
from svc_orders.domain.model import Instrument, MarketSnapshot
from svc_runtime import aio
from svc_runtime.decimals import parse_decimal
from svc_runtime.errors import InvalidArgument, reraise_remote
from svc_runtime.messaging import Topology

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Quote:
    sequence: int
    snapshot: MarketSnapshot


def _price(message: object, field: str) -> Decimal | None:
    value = getattr(message, "value", "")
    if not value:
        return None
    try:
        price = parse_decimal(value, field=field, max_places=8)
    except InvalidArgument:
        return None
    return price if price > 0 else None


def _snapshot(quote: marketdata_pb2.Quote) -> MarketSnapshot:
    return MarketSnapshot(
        last_price=_price(quote.last_price, "last_price"),
        bid_price=_price(quote.bid_price, "bid_price"),
        ask_price=_price(quote.ask_price, "ask_price"),
    )


class MarketData:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        nc: NatsClient,
        js: JetStreamContext,
        topology: Topology,
        *,
        instrument_ttl: float = 300.0,
        timeout: float = 3.0,
    ) -> None:
        self.stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        self.nc = nc
        self.js = js
        self.topology = topology
        self.instrument_ttl = instrument_ttl
        self.timeout = timeout
        self._instruments: dict[str, tuple[float, Instrument]] = {}
        self._quotes: dict[str, _Quote] = {}
        self._looked_up: set[str] = set()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(self.topology.all_ticks_subject, cb=self._on_ticks)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    async def _on_ticks(self, msg: Msg) -> None:
        batch = tick_pb2.TickBatch()
        try:
            batch.ParseFromString(msg.data)
        except Exception:
            log.warning("undecodable tick batch", extra={"subject": msg.subject})
            return
        for quote in batch.quotes:
            self._remember(quote)

    def _remember(self, quote: marketdata_pb2.Quote) -> None:
        known = self._quotes.get(quote.symbol)
        if known is None or quote.sequence >= known.sequence:
            self._quotes[quote.symbol] = _Quote(quote.sequence, _snapshot(quote))

    async def instrument(self, symbol: str) -> Instrument:
        cached = self._instruments.get(symbol)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            message = await self.stub.GetInstrument(
                marketdata_pb2.GetInstrumentRequest(name=f"instruments/{symbol}"), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise InvalidArgument(
                    f"{symbol} is not a known instrument", reason="UNKNOWN_SYMBOL", field="order.symbol"
                ) from error
            if cached is not None:
                # Lot and tick sizes rarely change: an expired entry beats refusing orders
                # while svc_marketdata is away.
                log.warning("instrument lookup failed; using the cached one", extra={"symbol": symbol})
                return cached[1]
            raise reraise_remote(error) from error
        tick = parse_decimal(
            message.tick_size.value or "0.05", field="tick_size", max_places=4, positive=True
        )
        instrument = Instrument(
            symbol=message.symbol or symbol,
            tick_size=tick,
            lot_size=max(1, message.lot_size),
            previous_close=_price(message.previous_close, "previous_close"),
        )
        self._instruments[symbol] = (time.monotonic() + self.instrument_ttl, instrument)
        return instrument

    def cached_snapshot(self, symbol: str) -> MarketSnapshot:
        known = self._quotes.get(symbol)
        return known.snapshot if known else MarketSnapshot()

    async def snapshot(self, symbol: str) -> MarketSnapshot:
        if symbol not in self._quotes and symbol not in self._looked_up:
            self._looked_up.add(symbol)
            await self._look_up(symbol)
        return self.cached_snapshot(symbol)

    async def _look_up(self, symbol: str) -> None:
        """The latest quote from svc_marketdata's KV bucket, when no tick has come yet."""
        try:
            kv = await aio.within(self.js.key_value(self.topology.quotes_bucket), self.timeout)
            entry = await aio.within(kv.get(self.topology.quote_key(symbol)), self.timeout)
        except Exception as error:  # no bucket or key yet: the previous close will do
            log.debug("no stored quote", extra={"symbol": symbol, "error": repr(error)})
            return
        if entry.value:
            quote = marketdata_pb2.Quote()
            quote.ParseFromString(entry.value)
            if quote.symbol:
                self._remember(quote)
