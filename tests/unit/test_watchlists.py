"""Watchlists (svc_marketdata/app/watchlists.py) over an in-memory compare-and-set store: a
create is once per request id, a change lost to a concurrent writer is applied again on the
fresh document, and a document that never stops changing is refused."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from svc_marketdata.app.watchlists import Watchlists
from svc_marketdata.domain.watchlists import UserWatchlists
from svc_runtime.errors import Aborted, AlreadyExists, ServiceError, Unavailable

KNOWN = {"INFY", "TCS", "RELIANCE"}


class MemoryWatchlistStore:
    """One document per user at a revision; save succeeds only over the revision read."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[UserWatchlists, int]] = {}
        # Writes another replica makes just before each of our next saves.
        self.interleaved: list[str] = []

    async def load(self, user_id: str) -> tuple[UserWatchlists, int]:
        doc, revision = self.docs.get(user_id, (UserWatchlists(user_id), 0))
        return copy.deepcopy(doc), revision

    async def save(self, watchlists: UserWatchlists, revision: int) -> bool:
        stored, current = self.docs.get(watchlists.user_id, (UserWatchlists(watchlists.user_id), 0))
        if self.interleaved:
            symbol = self.interleaved.pop(0)
            for watchlist in stored.watchlists.values():
                watchlist.symbols.append(symbol)
            current += 1
            self.docs[watchlists.user_id] = (stored, current)
        if current != revision:
            return False
        self.docs[watchlists.user_id] = (copy.deepcopy(watchlists), revision + 1)
        return True


def lists(store: MemoryWatchlistStore, *, loaded: bool = True, attempts: int = 25) -> Watchlists:
    return Watchlists(
        store,
        is_known=KNOWN.__contains__,
        master_loaded=lambda: loaded,
        clock=lambda: datetime(2026, 1, 5, tzinfo=UTC),
        max_attempts=attempts,
    )


async def test_a_create_is_once_per_request_id() -> None:
    store = MemoryWatchlistStore()
    uc = lists(store)
    first = await uc.create("u1", display_name="IT", symbols=["infy", "TCS"], request_id="r1")
    again = await uc.create("u1", display_name="IT", symbols=["INFY", "TCS"], request_id="r1")
    assert again.watchlist_id == first.watchlist_id and first.symbols == ["INFY", "TCS"]
    assert len(store.docs["u1"][0].watchlists) == 1
    with pytest.raises(AlreadyExists) as reused:
        await uc.create("u1", display_name="Banks", symbols=[], request_id="r1")
    assert reused.value.reason == "REQUEST_ID_REUSED"


async def test_unknown_symbols_are_refused_on_create_and_ignored_on_add() -> None:
    uc = lists(MemoryWatchlistStore())
    with pytest.raises(ServiceError) as refused:
        await uc.create("u1", display_name="IT", symbols=["NOPE"], request_id="r1")
    assert (
        refused.value.reason == "UNKNOWN_SYMBOL" and refused.value.violations[0].field == "watchlist.symbols"
    )
    made = await uc.create("u1", display_name="IT", symbols=[], request_id="r2")
    change = await uc.add_symbols("u1", made.watchlist_id, ["INFY", "NOPE", "INFY"])
    assert (change.changed, change.ignored) == (["INFY"], ["NOPE"])


async def test_a_change_lost_to_a_concurrent_writer_is_applied_again() -> None:
    store = MemoryWatchlistStore()
    uc = lists(store)
    made = await uc.create("u1", display_name="IT", symbols=["INFY"], request_id="r1")
    store.interleaved = ["RELIANCE"]
    await uc.add_symbols("u1", made.watchlist_id, ["TCS"])
    assert store.docs["u1"][0].watchlists[made.watchlist_id].symbols == ["INFY", "RELIANCE", "TCS"]


async def test_a_document_that_never_settles_is_refused() -> None:
    store = MemoryWatchlistStore()
    uc = lists(store, attempts=3)
    made = await uc.create("u1", display_name="IT", symbols=[], request_id="r1")
    store.interleaved = ["INFY", "RELIANCE", "INFY"]
    with pytest.raises(Aborted) as gave_up:
        await uc.add_symbols("u1", made.watchlist_id, ["TCS"])
    assert gave_up.value.reason == "CONCURRENT_MODIFICATION"


async def test_symbols_cannot_be_added_before_the_instrument_master_arrives() -> None:
    uc = lists(MemoryWatchlistStore(), loaded=False)
    with pytest.raises(Unavailable) as waiting:
        await uc.create("u1", display_name="IT", symbols=["INFY"], request_id="r1")
    assert waiting.value.reason == "INSTRUMENTS_NOT_LOADED"
    await uc.create("u1", display_name="Empty", symbols=[], request_id="r2")


async def test_removing_nothing_writes_nothing() -> None:
    store = MemoryWatchlistStore()
    uc = lists(store)
    made = await uc.create("u1", display_name="IT", symbols=["INFY"], request_id="r1")
    revision = store.docs["u1"][1]
    await uc.remove_symbols("u1", made.watchlist_id, ["TCS"])
    assert store.docs["u1"][1] == revision
