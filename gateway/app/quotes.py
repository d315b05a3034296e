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
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge

from brokermesh.marketdata.v1 import marketdata_pb2
from gateway.app.ports import QuoteSnapshots
from gateway.domain import sse
from gateway.domain.conflation import PushGroup, Version
from gateway.domain.feed import LIVE, STALE, FeedCondition, FeedView
from svc_runtime.errors import FieldViolation, InvalidArgument

log = logging.getLogger(__name__)

TICKS = Counter("gateway_ticks_received_total", "Quotes received from the tick feed")
STALE_TICKS = Counter("gateway_ticks_stale_total", "Quotes older than one already seen, dropped")
SUBSCRIBERS = Gauge("gateway_quote_subscribers", "Open live-price subscriptions")
SNAPSHOTS = Counter("gateway_quote_snapshots_total", "Symbols of opening snapshots, by source", ["source"])
GROUPS = Gauge("gateway_quote_push_groups", "Push groups (clients with the same symbols, pushed together)")
PUSH_FAILURES = Counter("gateway_quote_push_failures_total", "Push rounds that failed (logged)")
PUSHES = Counter("gateway_quote_pushes_total", "Group pushes: one payload joined, written to every member")
CONFLATED = Counter(
    "gateway_sse_conflated_total", "Pushes that found a client still writing the last (it catches up)"
)
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
    """One client's view of the hub: its symbols, what it has yet to write, a wake-up event.

    It holds at most one pending payload (shared bytes of its push group). A push that
    finds the previous one still unwritten marks the client behind instead: its next write
    is the latest frame of each of its symbols, read from the hub, so a slow client costs
    memory bounded by its symbol count and catches up with current prices, never old ones.
    """

    __slots__ = ("_behind", "_latest", "_payload", "closed", "group", "resyncs", "status", "symbols", "wake")

    def __init__(self, symbols: Sequence[str], latest: dict[str, tuple[Version, bytes]]) -> None:
        self.symbols = tuple(symbols)
        self.wake = asyncio.Event()
        self.closed = False
        self.group: PushGroup[QuoteSubscription] | None = None
        # The feed status to send after the pending prices (the latest replaces an unsent one).
        self.status: bytes | None = None
        # Pushes that found the previous one unwritten (how much conflation saved a slow client).
        self.resyncs = 0
        self._latest = latest
        self._payload: bytes | None = None
        self._behind = False

    def deliver(self, payload: bytes) -> None:
        if self._payload is None and not self._behind:
            self._payload = payload
        else:
            if not self._behind:
                self.resyncs += 1
            self._behind, self._payload = True, None
        self.wake.set()

    def catch_up(self) -> None:
        """Write the latest frame of every symbol next (the opening snapshot)."""
        self._behind, self._payload = True, None
        self.wake.set()

    def offer_status(self, frame: bytes) -> None:
        self.status = frame
        self.wake.set()

    @property
    def pending(self) -> bool:
        return self._behind or self._payload is not None or self.status is not None

    def take(self) -> list[bytes]:
        """What to write now: frames (or one shared payload of frames), then the status."""
        self.wake.clear()
        out: list[bytes] = []
        if self._behind:
            latest = self._latest
            out = [latest[s][1] for s in self.symbols if s in latest]
            self._behind = False
        elif self._payload is not None:
            out.append(self._payload)
        self._payload = None
        if self.status is not None:
            out.append(self.status)
            self.status = None
        return out

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class QuoteHub:
    """`feed_generation` tells whether the tick feed is live (None if not) and changes when
    it reconnects: while it is live and unchanged, the hub has seen every tick, so its own
    latest quotes are a fresh snapshot and a reconnect storm need not reach the price
    tracker. After a gap the cache is dropped, since ticks may have been missed."""

    def __init__(
        self,
        snapshots: QuoteSnapshots,
        feed_generation: Callable[[], int | None] = lambda: None,
        *,
        pushes_per_second: float = 4.0,
        gather_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshots = snapshots
        self.feed_generation = feed_generation
        self.push_interval = 1.0 / pushes_per_second
        self.gather_seconds = gather_seconds
        self.clock = clock
        # Push groups by symbol set, and the groups each symbol's ticks mark.
        self._groups: dict[frozenset[str], list[PushGroup[QuoteSubscription]]] = {}
        self._groups_by_symbol: dict[str, set[PushGroup[QuoteSubscription]]] = {}
        # Groups with changes, by when they may push: (due, tie-breaker, group).
        self._due: list[tuple[float, int, PushGroup[QuoteSubscription]]] = []
        self._order = itertools.count()
        self._kick = asyncio.Event()
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
        # A group that turns dirty pushes no sooner than this: what follows within the
        # gather time (the rest of the same update) joins its push.
        gathered = self.clock() + self.gather_seconds
        for quote in quotes:
            TICKS.inc()
            self.feed.saw_sequence(quote.sequence)
            entry = self._remember(quote)
            if entry is None:
                STALE_TICKS.inc()
                continue
            for group in self._groups_by_symbol.get(quote.symbol, ()):
                if group.mark(quote.symbol):
                    at = max(group.next_push_at, gathered)
                    heapq.heappush(self._due, (at, next(self._order), group))
                    self._kick.set()

    def push_due(self) -> float | None:
        """Push every group that has changes and may push now: its payload is joined once
        and handed to each member. Returns the seconds until the next group is due (None:
        none waiting)."""
        now = self.clock()
        due, latest = self._due, self._latest
        while due:
            # A group is queued once, when it turns dirty, at the time it may push next (its
            # pace, and the gather time); only its push (below) cleans it, so that time
            # holds until it is popped.
            at, _, group = due[0]
            if at > now:
                return at - now
            heapq.heappop(due)
            symbols = group.take(now)
            frames = [latest[s][1] for s in symbols if s in latest]
            if not frames or not group.members:
                continue
            payload = b"".join(frames)
            PUSHES.inc()
            for member in group.members:
                member.deliver(payload)
        return None

    async def run_pushes(self) -> None:
        """The one push stage of the process: wakes when a group has changes, sleeps until
        the next group may push."""
        while True:
            try:
                wait = self.push_due()
            except Exception:  # a bad push must not stop every stream's prices
                PUSH_FAILURES.inc()
                log.exception("price push failed")
                wait = self.push_interval
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._kick.wait()

    async def run(self) -> None:
        """Push prices and watch the feed's liveness until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.run_pushes())
            tasks.create_task(self.watch_feed())

    async def subscribe(self, symbols: Sequence[str]) -> QuoteSubscription:
        """Subscribe, then queue the current quote of each symbol as the first frames.

        Subscribing before taking the snapshot means no tick in between is lost; versions
        keep a snapshot quote from overtaking a newer live one.
        """
        if self._closing:
            raise RuntimeError("the hub is closing")
        subscription = QuoteSubscription(symbols, self._latest)
        self._join_group(subscription)
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
        # Joined before the snapshot was read, so no tick in between is lost; the first
        # write is the latest frame of every symbol.
        subscription.catch_up()
        # After the snapshot, whether it is live: a client reconnecting during an outage
        # learns at once that what it was just shown is old.
        subscription.offer_status(self.feed_status_frame())
        return subscription

    def _join_group(self, subscription: QuoteSubscription) -> None:
        key = frozenset(subscription.symbols)
        groups = self._groups.setdefault(key, [])
        group = next((g for g in groups if not g.full), None)
        if group is None:
            group = PushGroup(subscription.symbols, self.push_interval)
            groups.append(group)
            for symbol in key:
                self._groups_by_symbol.setdefault(symbol, set()).add(group)
            GROUPS.inc()
        group.members.add(subscription)
        subscription.group = group

    def unsubscribe(self, subscription: QuoteSubscription) -> None:
        self._subscriptions.discard(subscription)
        group, subscription.group = subscription.group, None
        if group is None:
            return
        SUBSCRIBERS.dec()
        CONFLATED.inc(subscription.resyncs)
        group.members.discard(subscription)
        if group.members:
            return
        key = frozenset(group.symbols)
        groups = self._groups.get(key, [])
        if group in groups:
            groups.remove(group)
            GROUPS.dec()
        if not groups:
            self._groups.pop(key, None)
        for symbol in key:
            by_symbol = self._groups_by_symbol.get(symbol)
            if by_symbol is not None:
                by_symbol.discard(group)
                if not by_symbol:
                    del self._groups_by_symbol[symbol]

    def subscriber_count(self, symbol: str) -> int:
        return sum(len(g.members) for g in self._groups_by_symbol.get(symbol, ()))

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
            try:
                self.check_feed()
            except Exception:
                log.exception("feed check failed")
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
        for subscription in list(self._subscriptions):
            subscription.close()
