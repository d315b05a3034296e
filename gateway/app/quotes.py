"""The live-price hub: one tick feed in, many conflated client streams out.

Each tick is encoded into its SSE frame once and the same bytes are offered to every client
subscribed to its symbol. A client keeps only the latest frame per symbol (bounded memory)
and is woken to write; the hub never waits on a client, so a slow one cannot hold up the
feed or anyone else.

The hub also follows the feed's liveness (`domain.feed`): the price tracker's status
heartbeats, and their absence. When the feed goes stale or recovers, one `feed_status`
frame goes to every client with its next push; a new client gets it right after its
snapshot; idle clients get heartbeats carrying the server's time and the feed's sequence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge

from brokermesh.marketdata.v1 import marketdata_pb2
from gateway.app.ports import QuoteSnapshots
from gateway.domain import sse
from gateway.domain.conflation import Conflator, Version
from gateway.domain.feed import LIVE, STALE, FeedCondition, FeedView
from svc_runtime.errors import FieldViolation, InvalidArgument

TICKS = Counter("gateway_ticks_received_total", "Quotes received from the tick feed")
STALE_TICKS = Counter("gateway_ticks_stale_total", "Quotes older than one already seen, dropped")
SUBSCRIBERS = Gauge("gateway_quote_subscribers", "Open live-price subscriptions")
SNAPSHOTS = Counter("gateway_quote_snapshots_total", "Symbols of opening snapshots, by source", ["source"])
FEED_LIVE = Gauge("gateway_price_feed_live", "1 while the price feed is live as this gateway sees it")
FEED_CHANGES = Counter(
    "gateway_price_feed_changes_total", "Price feed state changes told to clients", ["state"]
)
# The tracker sends its status four times a second: a second of silence means it is gone.
FEED_SILENCE_LIMIT_SECONDS = 1.0
FEED_CHECK_SECONDS = 0.1
_STATES = {1: LIVE}


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
        bid=quote.bid_price.value,
        bid_qty=quote.bid_quantity,
        ask=quote.ask_price.value,
        ask_qty=quote.ask_quantity,
        volume=quote.volume,
        sequence=quote.sequence,
    )


def _json_time(ns: int) -> str:
    if not ns:
        return ""
    stamp = Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp.ToJsonString()


def condition_of(status: marketdata_pb2.FeedStatus) -> FeedCondition:
    state = _STATES.get(status.state, STALE)
    since = status.stale_since.ToNanoseconds() if status.HasField("stale_since") else 0
    return FeedCondition(state, 0 if state == LIVE else since)


class QuoteSubscription:
    """One client's view of the hub: its symbols, its conflated frames, a wake-up event."""

    __slots__ = ("closed", "conflator", "status", "symbols", "wake")

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self.conflator = Conflator()
        self.wake = asyncio.Event()
        self.closed = False
        # The feed status to send after the pending prices (the latest replaces an unsent one).
        self.status: bytes | None = None

    def offer(self, symbol: str, version: Version, frame: bytes) -> None:
        if self.conflator.offer(symbol, version, frame):
            self.wake.set()

    def offer_status(self, frame: bytes) -> None:
        self.status = frame
        self.wake.set()

    @property
    def pending(self) -> bool:
        return bool(self.conflator) or self.status is not None

    def take(self) -> list[bytes]:
        self.wake.clear()
        frames = self.conflator.drain()
        if self.status is not None:
            frames.append(self.status)
            self.status = None
        return frames

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
        self._subscriptions: set[QuoteSubscription] = set()
        self.feed = FeedView(silence_limit=FEED_SILENCE_LIMIT_SECONDS)
        self._heartbeat: tuple[int, int, str, bytes] | None = None
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
            self.feed.saw_sequence(quote.sequence)
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
        self._subscriptions.add(subscription)
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
        # After the snapshot, whether it is live: a client reconnecting during an outage
        # learns at once that what it was just shown is old.
        subscription.offer_status(self.feed_status_frame())
        return subscription

    def unsubscribe(self, subscription: QuoteSubscription) -> None:
        self._subscriptions.discard(subscription)
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

    # --- feed liveness -----------------------------------------------------------------

    def on_status(self, status: marketdata_pb2.FeedStatus) -> None:
        """The price tracker's heartbeat, from the tick feed."""
        changed = self.feed.on_status(condition_of(status), status.last_sequence, time.time_ns())
        if changed is not None:
            self._tell(changed)

    def check_feed(self) -> None:
        """Notice silence: no heartbeat from the tracker, or no tick subscription."""
        changed = self.feed.assess(connected=self.feed_generation() is not None, now_ns=time.time_ns())
        if changed is not None:
            self._tell(changed)

    async def watch_feed(self) -> None:
        while True:
            self.check_feed()
            await asyncio.sleep(FEED_CHECK_SECONDS)

    def _tell(self, condition: FeedCondition) -> None:
        FEED_LIVE.set(1 if condition.live else 0)
        FEED_CHANGES.labels(condition.state).inc()
        frame = self.feed_status_frame()
        for subscription in self._subscriptions:
            subscription.offer_status(frame)

    def feed_status_frame(self) -> bytes:
        condition = self.feed.condition
        return sse.feed_status(
            condition.state,
            _json_time(condition.stale_since_ns),
            _json_time(time.time_ns()),
            self.feed.last_sequence,
        )

    def heartbeat_frame(self) -> bytes:
        """Shared by every idle stream within the same millisecond-rounded moment."""
        now_ns = time.time_ns()
        ms = now_ns // 1_000_000
        state, sequence = self.feed.condition.state, self.feed.last_sequence
        cached = self._heartbeat
        if cached is not None and cached[:3] == (ms, sequence, state):
            return cached[3]
        frame = sse.heartbeat(state, _json_time(ms * 1_000_000), sequence)
        self._heartbeat = (ms, sequence, state, frame)
        return frame

    def close(self) -> None:
        """End every stream (shutdown): clients reconnect, to another replica."""
        self._closing = True
        for subscribers in list(self._by_symbol.values()):
            for subscription in list(subscribers):
                subscription.close()
