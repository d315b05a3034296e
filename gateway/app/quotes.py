"""The live-price hub: one tick feed in, many conflated client streams out.

Each tick is encoded into its SSE frame once and the same bytes are offered to every client
subscribed to its symbol. A client keeps only the latest frame per symbol (bounded memory)
and is woken to write; the hub never waits on a client, so a slow one cannot hold up the
feed or anyone else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from prometheus_client import Counter, Gauge

from brokermesh.marketdata.v1 import marketdata_pb2
from gateway.app.ports import QuoteSnapshots
from gateway.domain import sse
from gateway.domain.conflation import Conflator, Version
from svc_runtime.errors import FieldViolation, InvalidArgument

TICKS = Counter("gateway_ticks_received_total", "Quotes received from the tick feed")
STALE_TICKS = Counter("gateway_ticks_stale_total", "Quotes older than one already seen, dropped")
SUBSCRIBERS = Gauge("gateway_quote_subscribers", "Open live-price subscriptions")


def version_of(quote: marketdata_pb2.Quote) -> Version:
    ts = quote.exchange_time
    return (ts.seconds * 1_000_000_000 + ts.nanos, quote.sequence)


def frame_of(quote: marketdata_pb2.Quote) -> bytes:
    ts = quote.exchange_time.ToJsonString() if quote.HasField("exchange_time") else ""
    return sse.price_tick(
        quote.symbol,
        quote.last_price.value,
        quote.change.value,
        quote.change_percent.value,
        ts,
    )


class QuoteSubscription:
    """One client's view of the hub: its symbols, its conflated frames, a wake-up event."""

    __slots__ = ("closed", "conflator", "symbols", "wake")

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self.conflator = Conflator()
        self.wake = asyncio.Event()
        self.closed = False

    def offer(self, symbol: str, version: Version, frame: bytes) -> None:
        if self.conflator.offer(symbol, version, frame):
            self.wake.set()

    def take(self) -> list[bytes]:
        self.wake.clear()
        return self.conflator.drain()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class QuoteHub:
    def __init__(self, snapshots: QuoteSnapshots) -> None:
        self.snapshots = snapshots
        self._by_symbol: dict[str, set[QuoteSubscription]] = {}
        # The newest frame of every symbol seen, to order snapshots against live ticks.
        self._latest: dict[str, tuple[Version, bytes]] = {}
        self._closing = False

    def publish(self, quotes: Iterable[marketdata_pb2.Quote]) -> None:
        """Called for each tick batch from the feed: encode once, offer to subscribers."""
        for quote in quotes:
            TICKS.inc()
            symbol = quote.symbol
            version = version_of(quote)
            latest = self._latest.get(symbol)
            if latest is not None and version < latest[0]:
                STALE_TICKS.inc()
                continue
            frame = frame_of(quote)
            self._latest[symbol] = (version, frame)
            for subscription in self._by_symbol.get(symbol, ()):
                subscription.offer(symbol, version, frame)

    async def subscribe(self, symbols: Sequence[str]) -> QuoteSubscription:
        """Subscribe, then queue the current quote of each symbol as the first frames.

        Subscribing before asking for the snapshot means no tick in between is lost; the
        versions keep a snapshot quote from overtaking a newer live one.
        """
        if self._closing:
            raise RuntimeError("the hub is closing")
        subscription = QuoteSubscription(symbols)
        for symbol in subscription.symbols:
            self._by_symbol.setdefault(symbol, set()).add(subscription)
        SUBSCRIBERS.inc()
        try:
            quotes, unknown = await self.snapshots.latest_quotes(subscription.symbols)
            if unknown:
                raise InvalidArgument(
                    f"unknown symbols: {', '.join(unknown)}",
                    reason="UNKNOWN_SYMBOL",
                    violations=[FieldViolation("symbols", f"{s} is not an instrument") for s in unknown],
                )
        except BaseException:
            self.unsubscribe(subscription)
            raise
        for quote in quotes:
            subscription.offer(quote.symbol, version_of(quote), frame_of(quote))
        for symbol in subscription.symbols:
            latest = self._latest.get(symbol)
            if latest is not None:
                subscription.offer(symbol, latest[0], latest[1])
        return subscription

    def unsubscribe(self, subscription: QuoteSubscription) -> None:
        removed = False
        for symbol in subscription.symbols:
            subscribers = self._by_symbol.get(symbol)
            if subscribers is not None and subscription in subscribers:
                removed = True
                subscribers.discard(subscription)
                if not subscribers:
                    del self._by_symbol[symbol]
        if removed:
            SUBSCRIBERS.dec()

    def subscriber_count(self, symbol: str) -> int:
        return len(self._by_symbol.get(symbol, ()))

    def close(self) -> None:
        """End every stream (shutdown): clients reconnect, to another replica."""
        self._closing = True
        for subscribers in list(self._by_symbol.values()):
            for subscription in list(subscribers):
                subscription.close()
