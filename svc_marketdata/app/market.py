"""The market-data use cases: follow the exchange feed, keep the quote cache, publish ticks,
answer quote and instrument queries.

Everything here runs on the asyncio loop; the FIX adapter hands its callbacks over with
`svc_runtime.fix.ThreadBridge`, so the cache has a single writer and needs no locks.

Ticks are coalesced: an update marks its symbol dirty and wakes the flusher, which waits a
few milliseconds more, then encodes each dirty quote once and publishes them grouped by
shard, many per message. The same encoded bytes feed the quote streams and the KV snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from svc_marketdata.app.board import ChangeBoard
from svc_marketdata.app.ports import (
    CandleStore,
    InstrumentRepository,
    MarketFeed,
    QuoteEncoder,
    QuoteSnapshots,
    StatusEncoder,
    TickPublisher,
)
from svc_marketdata.app.streams import StreamHub
from svc_marketdata.domain import paging
from svc_marketdata.domain.candles import INTERVALS, Candle, CandleBook
from svc_marketdata.domain.depth import Depth, DepthBook
from svc_marketdata.domain.instruments import (
    MAX_QUERY_LENGTH,
    Instrument,
    InstrumentIndex,
    SearchHit,
    normalize_symbol,
)
from svc_marketdata.domain.liveness import FeedLiveness, FeedState
from svc_marketdata.domain.quotes import Quote, QuoteBook, SymbolUpdate
from svc_runtime import aio
from svc_runtime.errors import InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)

MAX_BATCH_GET = 500
MAX_STREAM_SYMBOLS = 3000
MAX_REPORTED_UNKNOWN = 100
# Quotes per TickBatch / stream message: large enough to amortize per-message costs, small
# enough to stay far below NATS's 1 MB payload limit (a quote encodes to ~100–150 bytes).
MAX_QUOTES_PER_MESSAGE = 1000

UPDATES_IN = Counter("marketdata_updates_in_total", "Symbol updates received from the exchange", ["kind"])
ENTRIES_IN = Counter(
    "marketdata_entries_in_total", "Market-data entries (MDEntry) received from the exchange"
)
FLUSH_SECONDS = Histogram(
    "marketdata_flush_seconds",
    "Time to encode and publish one coalesced flush of ticks",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
QUOTE_CHANGES = Counter("marketdata_quote_changes_total", "Symbol updates that changed a quote")
TICKS_OUT = Counter("marketdata_ticks_published_total", "Quotes published in TickBatches")
BATCHES_OUT = Counter("marketdata_tick_batches_published_total", "TickBatch messages published")
PUBLISH_FAILURES = Counter(
    "marketdata_tick_publish_failures_total", "TickBatches that could not be published"
)
TICK_AGE = Histogram(
    "marketdata_tick_age_at_publish_seconds",
    "Exchange time → publication of a tick",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
INSTRUMENTS = Gauge("marketdata_instruments", "Instruments in the master")
SESSION_UP = Gauge("marketdata_fix_session_up", "1 while the market-data FIX session is logged on")
FEED_LIVE = Gauge("marketdata_feed_live", "1 while the exchange is heard from within the stale limit")
FEED_STALE_EPISODES = Counter("marketdata_feed_stale_total", "Times the exchange feed went stale")
PROBES = Counter("marketdata_feed_probes_total", "TestRequests sent to a silent exchange")
CANDLE_SAVE_FAILURES = Counter(
    "marketdata_candle_save_failures_total", "Attempts to store changed candles that failed (retried)"
)
CANDLES_SAVED = Counter("marketdata_candles_saved_total", "Candle states written to storage")
STATUS_FAILURES = Counter(
    "marketdata_feed_status_publish_failures_total", "Feed status heartbeats that could not be published"
)
# How often the feed's liveness is assessed, and how often the status goes out when unchanged.
FEED_CHECK_SECONDS = 0.1
STATUS_INTERVAL_SECONDS = 0.25


class MarketData:
    def __init__(
        self,
        *,
        repository: InstrumentRepository,
        publisher: TickPublisher,
        snapshots: QuoteSnapshots,
        encode: QuoteEncoder,
        encode_status: StatusEncoder,
        shard_of: Callable[[str], str],
        hub: StreamHub,
        candle_store: CandleStore,
        board: ChangeBoard,
        coalesce_seconds: float = 0.005,
        snapshot_interval: float = 1.0,
        instrument_wait: float = 5.0,
        stale_after: float = 1.2,
        probe_after: float = 0.4,
    ) -> None:
        self.repository = repository
        self.publisher = publisher
        self.snapshots = snapshots
        self.encode = encode
        self.encode_status = encode_status
        self.shard_of = shard_of
        self.hub = hub
        self.candle_store = candle_store
        # Depth and candle streams wait here for the keys they follow.
        self.board = board
        self.candles = CandleBook()
        self.depth = DepthBook()
        self.coalesce_seconds = coalesce_seconds
        self.snapshot_interval = snapshot_interval
        self.instrument_wait = instrument_wait
        self.index = InstrumentIndex.empty()
        self.book = QuoteBook(sequence_floor=time.time_ns() // 1000)
        # The wire form of every cached quote, refreshed at each flush.
        self.encoded: dict[str, bytes] = {}
        self.feed: MarketFeed | None = None
        self.session_up = False
        self.liveness = FeedLiveness(stale_after=stale_after, probe_after=probe_after)
        # The feed's status in wire form, refreshed at every check (its server time with it).
        self.status_encoded = self._encode_status(time.time_ns())
        self._status_published_ns = 0
        self._dirty: set[str] = set()
        self._unsaved: set[str] = set()
        self._wake = asyncio.Event()
        self._subscribed = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Told of every flush's changed quotes (the price alerts watch them).
        self.on_prices: Callable[[list[Quote]], None] | None = None
        # Whether this replica holds the exchange feed (app/replication.py); a standby
        # follows the holder's ticks instead. A lone MarketData holds it.
        self.holding = asyncio.Event()
        self.holding.set()
        self._followed_live: bool | None = None
        self._master: list[Instrument] = []

    # --- start-up ----------------------------------------------------------------------

    async def load(self) -> None:
        """Serve what we knew before the exchange answers: the stored master, the saved quotes."""
        self._use_master(await self.repository.load())
        try:
            saved = await self.snapshots.load()
        except Exception:
            log.warning("could not load saved quotes; starting empty", exc_info=True)
            saved = []
        for quote in saved:
            self.book.restore(quote)
        try:
            self.candles.restore(await self.candle_store.latest())
        except Exception:
            log.warning("could not load stored candles; the forming ones start afresh", exc_info=True)
        for symbol in self.index.by_symbol:
            self._ensure_quote(symbol)
        log.info("market data loaded", extra={"instruments": len(self.index), "saved_quotes": len(saved)})

    def attach_feed(self, feed: MarketFeed) -> None:
        self.feed = feed

    # --- replicas ------------------------------------------------------------------------

    def take_feed(self, on_prices: Callable[[list[Quote]], None]) -> None:
        """This replica holds the feed from now on: followed ticks are ignored, its own are
        published, and `on_prices` sees every flush."""
        self.on_prices = on_prices
        self.holding.set()

    def follow_ticks(self, quotes: Sequence[tuple[Quote, bytes]]) -> None:
        """On a standby: the holder's published quotes (with their wire form) into the cache
        and the quote streams; an older quote than the cached one is skipped."""
        if self.holding.is_set():
            return  # our own ticks, back from NATS
        changed = set()
        for quote, encoded in quotes:
            if self.book.restore(quote):
                self.encoded[quote.symbol] = encoded
                changed.add(quote.symbol)
        if changed:
            self.hub.dispatch(changed)

    def follow_status(self, encoded: bytes, *, live: bool) -> None:
        """On a standby: the holder's feed status heartbeat, told to the quote streams when
        the feed goes live or stale."""
        if self.holding.is_set():
            return
        self.status_encoded = encoded
        if live != self._followed_live:
            self._followed_live = live
            self.hub.feed_changed(encoded)

    async def follow_master(self) -> None:
        """On a standby: the instrument master as the holder stored it (the holder learns it
        from the exchange), taken when it differs from the one served."""
        if self.holding.is_set():
            return
        instruments = await self.repository.load()
        if instruments and instruments != self._master:
            self._use_master(instruments)
            for symbol in self.index.by_symbol:
                self._ensure_quote(symbol)
            log.info("instrument master followed", extra={"instruments": len(instruments)})

    def require_feed(self) -> None:
        """Depth and forming candles are kept only by the feed's holder (ticks carry neither):
        a standby says so, retryably, and clients go to the holder."""
        if not self.holding.is_set():
            raise Unavailable(
                "this market-data replica does not hold the exchange feed; depth and candles are "
                "served by the one that does",
                reason="STANDBY",
                retry_after_seconds=0.5,
            )

    # --- the exchange feed (called on the loop) ------------------------------------------

    def on_logon(self) -> None:
        self.session_up = True
        self._subscribed = False
        SESSION_UP.set(1)
        log.info("market-data session logged on; requesting the instrument master")
        if self.feed is not None:
            self.feed.request_instruments()
        self._spawn(self._subscribe_if_master_late())

    def on_logout(self) -> None:
        if self.session_up:
            log.warning("market-data session logged out; quotes are stale until it is back")
        self.session_up = False
        SESSION_UP.set(0)
        self._spawn(self.check_feed())  # say so now, not at the next check

    def on_security_list(self, instruments: Sequence[Instrument], ok: bool) -> None:
        if not ok or not instruments:  # an empty master would delist everything
            log.warning("exchange refused the instrument master request; using the stored master")
            self._subscribe(self.index.symbols)
            return
        self._spawn(self._adopt_master(list(instruments)))

    def on_market_data(self, updates: Sequence[SymbolUpdate]) -> None:
        """A batch of updates (every message that came since the last batch, in order)."""
        changed = self.book.apply_batch(updates)
        board = self.board
        board.changed(("depth", symbol) for symbol in self.depth.apply_batch(updates))
        board.changed(("candles", *key) for key in self.candles.apply_batch(updates))
        snapshots = sum(1 for update in updates if update.snapshot)
        if snapshots:
            UPDATES_IN.labels("snapshot").inc(snapshots)
        if len(updates) > snapshots:
            UPDATES_IN.labels("incremental").inc(len(updates) - snapshots)
        ENTRIES_IN.inc(sum(len(update.entries) for update in updates))
        if changed:
            self._dirty.update(changed)
            QUOTE_CHANGES.inc(len(changed))
            self._wake.set()

    async def adopt_master(self, instruments: Sequence[Instrument]) -> None:
        """An instrument master from elsewhere than the feed (a venue's file), before serving."""
        await self._adopt_master(list(instruments))

    async def _adopt_master(self, instruments: list[Instrument]) -> None:
        try:
            await self.repository.replace(instruments)
        except Exception:
            # Serving the fresh master matters more than storing it; the next logon retries.
            log.exception("could not store the instrument master")
        self._use_master(instruments)
        for symbol in self.index.by_symbol:
            self._ensure_quote(symbol)
        log.info("instrument master received", extra={"instruments": len(instruments)})
        self._subscribe(self.index.symbols)

    async def _subscribe_if_master_late(self) -> None:
        await asyncio.sleep(self.instrument_wait)
        if self.session_up and not self._subscribed and len(self.index):
            log.warning("no instrument master from the exchange yet; subscribing to the stored one")
            self._subscribe(self.index.symbols)

    def _subscribe(self, symbols: Sequence[str]) -> None:
        if self.feed is None or not symbols or not self.session_up:
            return
        self._subscribed = True
        self.feed.subscribe(symbols)

    def _use_master(self, instruments: Sequence[Instrument]) -> None:
        self._master = list(instruments)
        self.index = InstrumentIndex.build(instruments)
        INSTRUMENTS.set(len(self.index))

    def _ensure_quote(self, symbol: str) -> None:
        instrument = self.index.get(symbol)
        quote = self.book.ensure(symbol, instrument.previous_close if instrument else None)
        if symbol not in self._dirty:  # a dirty quote is encoded at the next flush
            self.encoded[symbol] = self.encode(quote)

    # --- feed liveness ---------------------------------------------------------------------

    def _encode_status(self, now_ns: int) -> bytes:
        return self.encode_status(
            self.liveness.current, last_sequence=self.book.last_sequence, server_time_ns=now_ns
        )

    @property
    def feed_state(self) -> FeedState:
        return self.liveness.current

    async def check_feed(self) -> None:
        """Probe a silent exchange, judge the feed, and tell everyone: streams at once on a
        change, the tick subscribers through the status heartbeat."""
        now_ns = time.time_ns()
        feed = self.feed
        heard_ns = feed.last_heard_ns() if feed is not None else 0
        if feed is not None and self.liveness.should_probe(
            session_up=self.session_up, last_heard_ns=heard_ns, now_ns=now_ns
        ):
            PROBES.inc()
            feed.probe()
        changed = self.liveness.assess(session_up=self.session_up, last_heard_ns=heard_ns, now_ns=now_ns)
        self.status_encoded = self._encode_status(now_ns)
        if changed is not None:
            FEED_LIVE.set(1 if changed.live else 0)
            if changed.live:
                log.info("exchange feed live")
            else:
                FEED_STALE_EPISODES.inc()
                log.warning(
                    "exchange feed stale: nothing heard from the exchange",
                    extra={"silent_seconds": round((now_ns - heard_ns) / 1e9, 3) if heard_ns else None},
                )
            self.hub.feed_changed(self.status_encoded)
            self.board.feed_changed()
        if changed is not None or now_ns - self._status_published_ns >= STATUS_INTERVAL_SECONDS * 1e9:
            self._status_published_ns = now_ns
            try:
                await self.publisher.publish_status(self.status_encoded)
            except Exception:
                STATUS_FAILURES.inc()
                log.warning("feed status not published", exc_info=True)

    async def _watch_feed(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_feed()
            except Exception:
                log.exception("feed check failed")
            await asyncio.sleep(FEED_CHECK_SECONDS)

    # --- publication -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Flush ticks, watch the feed and save snapshots until `stop` is set."""
        saver = asyncio.create_task(self._save_snapshots(stop))
        candle_saver = asyncio.create_task(self._save_candles(stop))
        watcher = asyncio.create_task(self._watch_feed(stop))
        pusher = asyncio.create_task(self.hub.run_pushes())
        try:
            last_flush = 0.0
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await aio.within(self._wake.wait(), 0.5)
                if not self._wake.is_set():
                    continue
                # Let more updates gather: one message carries every change of the window.
                # Under load the window stretches to the last flush's duration, so encoding
                # and publishing never take more than about half the process: a busy symbol
                # is published less often (conflated at the source) instead of falling behind.
                await asyncio.sleep(max(self.coalesce_seconds, last_flush))
                self._wake.clear()
                started = time.perf_counter()
                await self.flush()
                last_flush = time.perf_counter() - started
                FLUSH_SECONDS.observe(last_flush)
        finally:
            for task in (saver, candle_saver, watcher, pusher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._save_once()
            await self.save_candles()

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        now_ns = time.time_ns()
        by_shard: dict[str, list[bytes]] = {}
        for symbol in dirty:
            quote = self.book.quotes[symbol]
            encoded = self.encoded[symbol] = self.encode(quote)
            by_shard.setdefault(self.shard_of(symbol), []).append(encoded)
            if quote.exchange_time_ns:
                TICK_AGE.observe(max(0.0, (now_ns - quote.exchange_time_ns) / 1e9))
        self._unsaved |= dirty
        self.hub.dispatch(dirty)
        if self.on_prices is not None:
            self.on_prices([self.book.quotes[symbol] for symbol in dirty])
        for shard, quotes in by_shard.items():
            for start in range(0, len(quotes), MAX_QUOTES_PER_MESSAGE):
                chunk = quotes[start : start + MAX_QUOTES_PER_MESSAGE]
                try:
                    await self.publisher.publish(shard, chunk)
                except Exception:
                    # Ticks are latest-value data: the next change supersedes a lost batch.
                    PUBLISH_FAILURES.inc()
                    log.warning("tick batch not published", exc_info=True, extra={"shard": shard})
                    continue
                BATCHES_OUT.inc()
                TICKS_OUT.inc(len(chunk))

    async def _save_snapshots(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.snapshot_interval)
            await self._save_once()

    async def _save_once(self) -> None:
        unsaved, self._unsaved = self._unsaved, set()
        if not unsaved:
            return
        try:
            await self.snapshots.save({s: self.encoded[s] for s in unsaved})
        except Exception:
            self._unsaved |= unsaved
            log.warning("could not save quote snapshots; will retry", exc_info=True)

    async def _save_candles(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.snapshot_interval)
            await self.save_candles()

    async def save_candles(self) -> None:
        """Store the candles changed since the last save; on failure keep them for the next."""
        unsaved = self.candles.take_unsaved()
        if not unsaved:
            return
        try:
            await self.candle_store.save(unsaved)
        except Exception:
            CANDLE_SAVE_FAILURES.inc()
            self.candles.return_unsaved(unsaved)
            log.warning("could not store candles; will retry", exc_info=True, extra={"candles": len(unsaved)})
            return
        CANDLES_SAVED.inc(len(unsaved))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- queries -----------------------------------------------------------------------

    def _require_master(self) -> None:
        if not len(self.index):
            raise Unavailable(
                "the instrument master has not been received from the exchange yet",
                reason="INSTRUMENTS_NOT_LOADED",
                retry_after_seconds=2.0,
            )

    def batch_get_quotes(self, symbols: Sequence[str]) -> tuple[list[bytes], list[str]]:
        """Encoded quotes of the known symbols in request order, and the unknown symbols."""
        if not symbols:
            raise InvalidArgument("symbols must name at least one symbol", field="symbols")
        if len(symbols) > MAX_BATCH_GET:
            raise InvalidArgument(f"at most {MAX_BATCH_GET} symbols per request", field="symbols")
        self._require_master()
        known, unknown = self.index.split_known([normalize_symbol(s) for s in symbols])
        return self.encoded_quotes(known), unknown

    def stream_symbols(self, symbols: Sequence[str]) -> list[str]:
        """Validated symbols for a quote stream (deduplicated, request order)."""
        if not symbols:
            raise InvalidArgument("symbols must name at least one symbol", field="symbols")
        if len(symbols) > MAX_STREAM_SYMBOLS:
            raise InvalidArgument(
                f"a stream may carry at most {MAX_STREAM_SYMBOLS} symbols",
                reason="TOO_MANY_SYMBOLS",
                field="symbols",
            )
        self._require_master()
        known, unknown = self.index.split_known([normalize_symbol(s) for s in symbols])
        if unknown:
            # Bounded: error details travel in trailing metadata, which clients cap (8 KB).
            shown = unknown[:MAX_REPORTED_UNKNOWN]
            more = f" and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
            raise InvalidArgument(
                f"unknown symbols: {', '.join(shown)}{more}",
                reason="UNKNOWN_SYMBOL",
                field="symbols",
                metadata={"unknown_symbols": ",".join(shown), "unknown_count": str(len(unknown))},
            )
        return known

    def encoded_quotes(self, symbols: Sequence[str]) -> list[bytes]:
        """The latest flushed wire form of each symbol's quote."""
        return [self.encoded.get(s) or self._encode_now(s) for s in symbols]

    def _encode_now(self, symbol: str) -> bytes:
        # Only a quote created by market data that has not been flushed yet lands here.
        quote = self.book.ensure(symbol, None)
        encoded = self.encoded[symbol] = self.encode(quote)
        return encoded

    def get_instrument(self, symbol: str) -> Instrument:
        instrument = self.index.get(normalize_symbol(symbol))
        if instrument is None:
            self._require_master()
            raise NotFound(f"instrument {symbol} not found", reason="INSTRUMENT_NOT_FOUND")
        return instrument

    def is_known(self, symbol: str) -> bool:
        return symbol in self.index

    def search(self, query: str, page_size: int, page_token: str) -> tuple[list[SearchHit], str]:
        text = " ".join(query.split())
        if not text:
            raise InvalidArgument("query is required", field="query")
        if len(text) > MAX_QUERY_LENGTH:
            raise InvalidArgument(f"query must be at most {MAX_QUERY_LENGTH} characters", field="query")
        limit = paging.page_size(page_size)
        fingerprint = paging.fingerprint("search", text.upper())
        after = paging.decode_token(page_token, fingerprint)
        cursor: tuple[int, str] | None = None
        if after is not None:
            if len(after) != 2 or not isinstance(after[0], int) or not isinstance(after[1], str):
                raise InvalidArgument(
                    "page_token is not valid", reason="INVALID_PAGE_TOKEN", field="page_token"
                )
            cursor = (after[0], after[1])
        page = self.index.search(text, limit=limit, after=cursor)
        token = paging.encode_token(list(page.next_after), fingerprint) if page.next_after else ""
        return page.hits, token

    def instrument_symbol(self, symbol: str) -> str:
        """The listed symbol, or NOT_FOUND (UNAVAILABLE before the master is known)."""
        return self.get_instrument(symbol).symbol

    def feed_symbol(self, symbol: str) -> str:
        """The listed symbol, for a depth or candle read (see `require_feed`)."""
        self.require_feed()
        return self.instrument_symbol(symbol)

    def market_depth(self, symbol: str) -> Depth:
        return self.depth.get(self.feed_symbol(symbol))

    def recent_candles(self, symbol: str, interval: str) -> list[Candle]:
        """The forming candle and the one before it, newest first."""
        return self.candles.recent(symbol, interval)

    async def list_candles(
        self, symbol: str, interval: str, page_size: int, page_token: str
    ) -> tuple[list[Candle], str]:
        """Candles newest first; the token carries the start of the last one served."""
        symbol = self.feed_symbol(symbol)
        if interval not in INTERVALS:
            raise InvalidArgument(f"interval must be one of {', '.join(INTERVALS)}", field="interval")
        limit = paging.page_size(page_size)
        fingerprint = paging.fingerprint("candles", symbol, interval)
        after = paging.decode_token(page_token, fingerprint)
        before: int | None = None
        if after is not None:
            if len(after) != 1 or not isinstance(after[0], int):
                raise InvalidArgument(
                    "page_token is not valid", reason="INVALID_PAGE_TOKEN", field="page_token"
                )
            before = after[0]
        # Storage lags the feed by up to a save interval: the forming candle and the one
        # before it are read from memory, which is never older.
        merged = {
            c.start: c for c in await self.candle_store.page(symbol, interval, before=before, limit=limit + 1)
        }
        for candle in self.candles.recent(symbol, interval):
            if before is None or candle.start < before:
                merged[candle.start] = candle
        newest = sorted(merged.values(), key=lambda c: c.start, reverse=True)[: limit + 1]
        page = newest[:limit]
        token = paging.encode_token([page[-1].start], fingerprint) if len(newest) > limit and page else ""
        return page, token
