"""Quote streams: who wants which symbols, and one push stage for all of them.

Streams with the same symbols and rate form a push group (at most `MAX_GROUP_MEMBERS`), and
the group, not each stream, keeps the conflated set of changed symbols (see
`domain.conflation`). The feed calls `StreamHub.dispatch` once per coalesced flush; only
the groups holding a changed symbol are touched. One task pushes each group when its pacing
allows: the changed quotes (already encoded once per flush) are joined into the response
once and the same bytes are handed to every member, whose writer only writes them. A member
still writing the previous push is marked behind and next gets the latest quote of each of
its symbols: a slow client costs memory bounded by its symbols and never sees old prices.
Dispatch never waits on a stream, so a slow client cannot hold up the feed.

A change of the feed's status (live ↔ stale) is handed to every stream and goes out with
its next write; an idle stream gets the current status as a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from svc_marketdata.domain.conflation import Conflator
from svc_runtime.errors import ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

STREAMS_ACTIVE = Gauge("marketdata_streams_active", "Open StreamQuotes streams")
STREAM_SYMBOLS = Gauge("marketdata_stream_symbols", "Symbols subscribed over all open streams")
PUSH_GROUPS = Gauge("marketdata_stream_push_groups", "Push groups (streams with the same symbols and rate)")
GROUP_PUSHES = Counter(
    "marketdata_stream_group_pushes_total", "Group pushes: one response built, many written"
)
PUSH_FAILURES = Counter("marketdata_stream_push_failures_total", "Push rounds that failed (logged)")
RESYNCS = Counter("marketdata_stream_resyncs_total", "Pushes that found a stream still writing the last")

# Members per push group: one push is a short burst of writes, not thousands at once.
MAX_GROUP_MEMBERS = 256


@dataclass(frozen=True, slots=True)
class Push:
    """What a stream's writer is to send next."""

    # The changed quotes' messages (shared by the group), or None.
    messages: list[bytes] | None = None
    # True: send the latest quote of every symbol (opening snapshot, or catching up).
    everything: bool = False
    status: bytes | None = None


class PushGroup:
    __slots__ = ("conflator", "key", "members")

    def __init__(self, key: tuple[frozenset[str], int], symbols: Sequence[str], rate: int) -> None:
        self.key = key
        self.conflator = Conflator(symbols, rate)
        self.members: set[QuoteStream] = set()


class QuoteStream:
    def __init__(self, symbols: Sequence[str], max_updates_per_second: int) -> None:
        self.symbols = list(symbols)
        self.rate = max_updates_per_second
        self.group: PushGroup | None = None
        self._wake = asyncio.Event()
        self.closed = False
        self.shutting_down = False
        # A feed status to send at the next push (the latest replaces an unsent one).
        self.status: bytes | None = None
        self._messages: list[bytes] | None = None
        self._behind = False

    def deliver(self, messages: list[bytes]) -> None:
        if self._messages is None and not self._behind:
            self._messages = messages
        else:
            if not self._behind:
                RESYNCS.inc()
            self._behind, self._messages = True, None
        self._wake.set()

    def offer_status(self, status: bytes) -> None:
        self.status = status
        self._wake.set()

    def end(self) -> None:
        self.shutting_down = True
        self._wake.set()

    async def next_push(self, idle_timeout: float) -> Push:
        """Wait for something to send. After `idle_timeout` seconds with nothing, returns an
        empty `Push`: time for a heartbeat."""
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    await self._wake.wait()
            except TimeoutError:
                return Push()
            if self.shutting_down:
                raise Unavailable("the server is shutting down; reconnect", reason="SHUTTING_DOWN")
            self._wake.clear()
            push = Push(self._messages, self._behind, self.status)
            self._messages, self._behind, self.status = None, False, None
            if push.messages or push.everything or push.status is not None:
                return push


class StreamHub:
    def __init__(
        self,
        *,
        max_streams: int,
        render: Callable[[Sequence[str]], list[bytes]] = lambda symbols: [],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_streams = max_streams
        # The latest quotes of `symbols` as response messages (set by the market).
        self.render = render
        self.clock = clock
        self._streams: set[QuoteStream] = set()
        self._groups: dict[tuple[frozenset[str], int], list[PushGroup]] = {}
        self._groups_by_symbol: dict[str, set[PushGroup]] = {}
        self._due: list[tuple[float, int, PushGroup]] = []
        self._order = itertools.count()
        self._kick = asyncio.Event()
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, symbols: Sequence[str], max_updates_per_second: int) -> QuoteStream:
        if self._shutting_down:
            raise Unavailable("the server is shutting down; reconnect", reason="SHUTTING_DOWN")
        if len(self._streams) >= self.max_streams:
            raise ResourceExhausted(
                "too many quote streams on this server; retry later",
                reason="TOO_MANY_STREAMS",
                retry_after_seconds=5.0,
            )
        stream = QuoteStream(symbols, max_updates_per_second)
        key = (frozenset(stream.symbols), max_updates_per_second)
        groups = self._groups.setdefault(key, [])
        group = next((g for g in groups if len(g.members) < MAX_GROUP_MEMBERS), None)
        if group is None:
            group = PushGroup(key, stream.symbols, max_updates_per_second)
            groups.append(group)
            for symbol in key[0]:
                self._groups_by_symbol.setdefault(symbol, set()).add(group)
            PUSH_GROUPS.inc()
        group.members.add(stream)
        stream.group = group
        self._streams.add(stream)
        STREAMS_ACTIVE.set(len(self._streams))
        STREAM_SYMBOLS.inc(len(stream.symbols))
        return stream

    def close(self, stream: QuoteStream) -> None:
        if stream not in self._streams:
            return
        self._streams.discard(stream)
        stream.closed = True
        STREAMS_ACTIVE.set(len(self._streams))
        STREAM_SYMBOLS.dec(len(stream.symbols))
        group, stream.group = stream.group, None
        if group is None:
            return
        group.members.discard(stream)
        if group.members:
            return
        groups = self._groups.get(group.key, [])
        if group in groups:
            groups.remove(group)
            PUSH_GROUPS.dec()
        if not groups:
            self._groups.pop(group.key, None)
        for symbol in group.key[0]:
            by_symbol = self._groups_by_symbol.get(symbol)
            if by_symbol is not None:
                by_symbol.discard(group)
                if not by_symbol:
                    del self._groups_by_symbol[symbol]

    def shutdown(self) -> None:
        """End every stream with UNAVAILABLE (clients reconnect to another replica) and
        refuse new ones."""
        self._shutting_down = True
        for stream in self._streams:
            stream.end()

    def dispatch(self, changed: set[str]) -> None:
        """Note the changed symbols in the groups that hold them (once per flush)."""
        touched: set[PushGroup] = set()
        by_symbol = self._groups_by_symbol
        for symbol in changed:
            groups = by_symbol.get(symbol)
            if groups:
                touched |= groups
        for group in touched:
            conflator = group.conflator
            was_clean = not conflator.pending_count
            if conflator.offer(changed) and was_clean:
                heapq.heappush(self._due, (conflator.next_push_at, next(self._order), group))
                self._kick.set()

    def push_due(self) -> float | None:
        """Push every group that has changes and may push now; returns the seconds until
        the next one may (None: none waiting)."""
        now = self.clock()
        due = self._due
        while due:
            # Queued once when it turned dirty, at the time it may push; only its push
            # (below) cleans it, so that time holds until it is popped.
            at, _, group = due[0]
            if at > now:
                return at - now
            heapq.heappop(due)
            symbols = group.conflator.take(now)
            if not symbols or not group.members:
                continue
            messages = self.render(symbols)
            GROUP_PUSHES.inc()
            for member in group.members:
                member.deliver(messages)
        return None

    async def run_pushes(self) -> None:
        """The process's one push stage: wakes when a group has changes, sleeps until the
        next group may push."""
        while True:
            try:
                wait = self.push_due()
            except Exception:  # a bad push must not stop every stream's quotes
                PUSH_FAILURES.inc()
                log.exception("quote push failed")
                wait = 0.1
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._kick.wait()

    def feed_changed(self, status: bytes) -> None:
        """The feed went stale or recovered: every stream says so at its next push."""
        for stream in self._streams:
            stream.offer_status(status)
