"""Watchlist use cases: load a user's watchlists, apply one rule, compare-and-set, retry.

The unit of work is the user's whole watchlist document at one KV revision: a change is
stored only if nobody else wrote since it was read; otherwise it is re-read and re-applied,
so concurrent adds to the same list all land.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from prometheus_client import Counter

from svc_marketdata.app.ports import WatchlistStore
from svc_marketdata.domain import paging
from svc_marketdata.domain.watchlists import (
    MAX_WATCHLISTS_PER_USER,
    SymbolChange,
    UserWatchlists,
    Watchlist,
    check_request_id,
)
from svc_runtime.errors import Aborted, Unavailable
from svc_runtime.ids import new_id

T = TypeVar("T")

CAS_CONFLICTS = Counter(
    "marketdata_watchlist_conflicts_total", "Watchlist writes retried after a concurrent change"
)
WRITES = Counter("marketdata_watchlist_writes_total", "Watchlist changes stored", ["operation"])


class Watchlists:
    def __init__(
        self,
        store: WatchlistStore,
        *,
        is_known: Callable[[str], bool],
        master_loaded: Callable[[], bool],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = 25,
    ) -> None:
        self.store = store
        self.is_known = is_known
        self.master_loaded = master_loaded
        self.clock = clock
        self.max_attempts = max_attempts

    async def create(
        self, user_id: str, *, display_name: str, symbols: Sequence[str], request_id: str
    ) -> Watchlist:
        check_request_id(request_id)
        if symbols:
            self._require_master()
        watchlist_id = new_id("wl")

        def apply(doc: UserWatchlists) -> tuple[Watchlist, bool]:
            return doc.create(
                watchlist_id=watchlist_id,
                display_name=display_name,
                symbols=symbols,
                request_id=request_id,
                now=self.clock(),
                is_known=self.is_known,
            )

        return await self._mutate(user_id, apply, "create")

    async def get(self, user_id: str, watchlist_id: str) -> Watchlist:
        doc, _ = await self.store.load(user_id)
        return doc.get(watchlist_id)

    async def symbols(self, user_id: str, watchlist_id: str) -> list[str]:
        """The watchlist's symbols now (a quote stream's, when it names a watchlist)."""
        return list((await self.get(user_id, watchlist_id)).symbols)

    async def list(self, user_id: str, *, page_size: int, page_token: str) -> tuple[list[Watchlist], str]:
        limit = paging.page_size(page_size, default=MAX_WATCHLISTS_PER_USER)
        fingerprint = paging.fingerprint("watchlists", user_id)
        after = paging.decode_token(page_token, fingerprint)
        doc, _ = await self.store.load(user_id)
        # Ids are time-ordered, so id order is creation order and a stable keyset.
        ordered = sorted(doc.watchlists.values(), key=lambda w: w.watchlist_id)
        if after:
            ordered = [w for w in ordered if w.watchlist_id > str(after[0])]
        page = ordered[:limit]
        token = paging.encode_token([page[-1].watchlist_id], fingerprint) if len(ordered) > limit else ""
        return page, token

    async def delete(self, user_id: str, watchlist_id: str) -> None:
        def apply(doc: UserWatchlists) -> tuple[None, bool]:
            doc.delete(watchlist_id)
            return None, True

        await self._mutate(user_id, apply, "delete")

    async def add_symbols(self, user_id: str, watchlist_id: str, symbols: Sequence[str]) -> SymbolChange:
        self._require_master()

        def apply(doc: UserWatchlists) -> tuple[SymbolChange, bool]:
            change = doc.add_symbols(watchlist_id, symbols, now=self.clock(), is_known=self.is_known)
            return change, bool(change.changed)

        return await self._mutate(user_id, apply, "add_symbols")

    async def remove_symbols(self, user_id: str, watchlist_id: str, symbols: Sequence[str]) -> SymbolChange:
        def apply(doc: UserWatchlists) -> tuple[SymbolChange, bool]:
            change = doc.remove_symbols(watchlist_id, symbols, now=self.clock())
            return change, bool(change.changed)

        return await self._mutate(user_id, apply, "remove_symbols")

    def _require_master(self) -> None:
        if not self.master_loaded():
            raise Unavailable(
                "the instrument master has not been received from the exchange yet",
                reason="INSTRUMENTS_NOT_LOADED",
                retry_after_seconds=2.0,
            )

    async def _mutate(
        self, user_id: str, apply: Callable[[UserWatchlists], tuple[T, bool]], operation: str
    ) -> T:
        for attempt in range(self.max_attempts):
            doc, revision = await self.store.load(user_id)
            result, changed = apply(doc)
            if not changed:
                return result
            if await self.store.save(doc, revision):
                WRITES.labels(operation).inc()
                return result
            CAS_CONFLICTS.inc()
            # Spread out retries of writers that collided.
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise Aborted(
            "too many concurrent changes to these watchlists; retry", reason="CONCURRENT_MODIFICATION"
        )
