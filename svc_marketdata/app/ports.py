"""What the application needs from the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from svc_marketdata.domain.candles import Candle
from svc_marketdata.domain.instruments import Instrument
from svc_marketdata.domain.liveness import FeedState
from svc_marketdata.domain.quotes import Quote
from svc_marketdata.domain.watchlists import UserWatchlists


class InstrumentRepository(Protocol):
    async def load(self) -> list[Instrument]:
        """The listed instruments, as last received from the exchange."""
        ...

    async def replace(self, instruments: Sequence[Instrument]) -> None:
        """Store a complete master: upsert these, mark the others delisted, atomically."""
        ...


class MarketFeed(Protocol):
    """The exchange's market-data session."""

    def request_instruments(self) -> None: ...

    def subscribe(self, symbols: Sequence[str]) -> None: ...

    def last_heard_ns(self) -> int:
        """Wall-clock time of the last message from the exchange, heartbeats included (0: never)."""
        ...

    def probe(self) -> None:
        """Ask the exchange for an immediate answer (it proves the session alive)."""
        ...


class TickPublisher(Protocol):
    async def publish(self, shard: str, encoded_quotes: Sequence[bytes]) -> None:
        """Publish one TickBatch of already-encoded quotes; never blocks on consumers."""
        ...

    async def publish_status(self, encoded_status: bytes) -> None:
        """Publish the feed's status (an encoded FeedStatus) as the tracker's heartbeat."""
        ...


class QuoteSnapshots(Protocol):
    """Latest quotes kept outside the process, for consumers' start-up and our restarts."""

    async def load(self) -> list[Quote]: ...

    async def save(self, encoded: dict[str, bytes]) -> None: ...


class QuoteEncoder(Protocol):
    def __call__(self, quote: Quote) -> bytes: ...


class StatusEncoder(Protocol):
    def __call__(self, state: FeedState, *, last_sequence: int, server_time_ns: int) -> bytes: ...


class WatchlistStore(Protocol):
    async def load(self, user_id: str) -> tuple[UserWatchlists, int]:
        """The user's watchlists and the revision to update against (0: none stored yet)."""
        ...

    async def save(self, watchlists: UserWatchlists, revision: int) -> bool:
        """Store if the stored revision is still `revision`; False if someone else wrote first."""
        ...


class CandleStore(Protocol):
    """Candles kept across restarts."""

    async def save(self, candles: Sequence[Candle]) -> None:
        """Insert these, or replace the stored state of the same (symbol, interval, start)."""
        ...

    async def latest(self) -> list[Candle]:
        """The newest stored candle of every symbol and interval."""
        ...

    async def page(self, symbol: str, interval: str, *, before: int | None, limit: int) -> list[Candle]:
        """Up to `limit` stored candles starting before `before` (UTC seconds; None: any), newest first."""
        ...
