"""The live-price hub: one tick feed in, many conflated client streams out.

Each tick is encoded into its SSE frame once and the same bytes are offered to every client
subscribed to its symbol. A client keeps only the latest frame per symbol (bounded memory)
and is woken to write; the hub never waits on a client, so a slow one cannot hold up the
feed or anyone else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Counter, Gauge

from brokermesh.marketdata.v1 import marketdata_pb2
from gateway.app.ports import QuoteSnapshots
from gateway.domain import sse
from gateway.domain.conflation import Conflator, Version
from svc_runtime.errors import FieldViolation, InvalidArgument

TICKS = Counter("gateway_ticks_received_total", "Quotes received from the tick feed")
STALE_TICKS = Counter("gateway_ticks_stale_total", "Quotes older than one already seen, dropped")
SUBSCRIBERS = Gauge("gateway_quote_subscribers", "Open live-price subscriptions")
SNAPSHOTS = Counter("gateway_quote_snapshots_total", "Symbols of opening snapshots, by source", ["source"])


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
    """`feed_generation` tells whether the tick feed is live (None if not) and changes when
    it reconnects: while it is live and unchanged, the hub has seen every tick, so its own
    latest quotes are a fresh snapshot and a reconnect storm need not reach the price
    tracker. After a gap the cache is dropped, since ticks may have been missed."""

    def __init__(
        self, snapshots: QuoteSnapshots, feed_generation: Callable[[], int | None] = lambda: None
    ) -> None:
        self.snapshots = snapshots
        self.feed_generation = feed_generation
        self._by_symbol: dict[str, set[QuoteSubscription]] = {}
        # The newest frame of every symbol seen (ticks and snapshots): orders snapshots
        # against live ticks and serves as the snapshot cache.
        self._latest: dict[str, tuple[Version, bytes]] = {}
        self._generation: int | None = None
        self._closing = False

    def _cache_is_fresh(self) -> bool:
        generation = self.feed_generation()
        if generation != self._generation:
            self._latest.clear()
            self._generation = generation
        return generation is not None

    def _remember(self, quote: marketdata_pb2.Quote) -> tuple[Version, bytes] | None:
        """Keep the quote as its symbol's latest unless a newer one is known."""
        version = version_of(quote)
        latest = self._latest.get(quote.symbol)
        if latest is not None and version < latest[0]:
            return None
        entry = (version, frame_of(quote))
        self._latest[quote.symbol] = entry
        return entry

    def publish(self, quotes: Iterable[marketdata_pb2.Quote]) -> None:
        """Called for each tick batch from the feed: encode once, offer to subscribers."""
        self._cache_is_fresh()
        for quote in quotes:
            TICKS.inc()
            entry = self._remember(quote)
            if entry is None:
                STALE_TICKS.inc()
                continue
            for subscription in self._by_symbol.get(quote.symbol, ()):
                subscription.offer(quote.symbol, entry[0], entry[1])

    async def subscribe(self, symbols: Sequence[str]) -> QuoteSubscription:
        """Subscribe, then queue the current quote of each symbol as the first frames.

        Subscribing before taking the snapshot means no tick in between is lost; versions
        keep a snapshot quote from overtaking a newer live one.
        """
        if self._closing:
            raise RuntimeError("the hub is closing")
        subscription = QuoteSubscription(symbols)
        for symbol in subscription.symbols:
            self._by_symbol.setdefault(symbol, set()).add(subscription)
        SUBSCRIBERS.inc()
        try:
            fresh = self._cache_is_fresh()
            missing = [s for s in subscription.symbols if not (fresh and s in self._latest)]
            SNAPSHOTS.labels("cache").inc(len(subscription.symbols) - len(missing))
            if missing:
                SNAPSHOTS.labels("price_tracker").inc(len(missing))
                quotes, unknown = await self.snapshots.latest_quotes(missing)
                if unknown:
                    raise InvalidArgument(
                        f"unknown symbols: {', '.join(unknown)}",
                        reason="UNKNOWN_SYMBOL",
                        violations=[FieldViolation("symbols", f"{s} is not an instrument") for s in unknown],
                    )
                for quote in quotes:
                    self._remember(quote)
        except BaseException:
            self.unsubscribe(subscription)
            raise
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
