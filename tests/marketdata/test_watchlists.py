"""WatchlistService through gRPC against a real process and real NATS KV: the resource
lifecycle, idempotent creates, add/remove reporting, limits, isolation between users, and
concurrent edits that must not lose a symbol."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from brokermesh.marketdata.v1 import watchlists_pb2 as wl
from svc_runtime.errors import details_of
from svc_runtime.ids import new_id
from tests.marketdata.conftest import MarketDataProcess

pytestmark = pytest.mark.e2e


def new_user() -> str:
    return new_id("u")


async def create(
    md: MarketDataProcess,
    user: str,
    name: str = "MyWatchlist",
    symbols: list[str] | None = None,
    request_id: str = "",
) -> wl.Watchlist:
    return await md.watchlists.CreateWatchlist(
        wl.CreateWatchlistRequest(
            parent=f"users/{user}",
            watchlist=wl.Watchlist(display_name=name, symbols=symbols or []),
            request_id=request_id,
        ),
        timeout=10,
    )


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code()


async def test_create_get_list_delete(md: MarketDataProcess) -> None:
    user = new_user()
    first = await create(md, user, "Tech", ["infy", "TCS"])
    second = await create(md, user, "Autos", ["M&M"])
    assert first.name == f"users/{user}/watchlists/{first.watchlist_id}"
    assert (first.display_name, list(first.symbols)) == ("Tech", ["INFY", "TCS"])
    assert first.create_time.seconds > 0 and first.update_time == first.create_time

    fetched = await md.watchlists.GetWatchlist(wl.GetWatchlistRequest(name=first.name), timeout=10)
    assert fetched == first
    listed = await md.watchlists.ListWatchlists(wl.ListWatchlistsRequest(parent=f"users/{user}"), timeout=10)
    assert [w.watchlist_id for w in listed.watchlists] == [first.watchlist_id, second.watchlist_id]

    await md.watchlists.DeleteWatchlist(wl.DeleteWatchlistRequest(name=first.name), timeout=10)
    assert await code_of(md.watchlists.GetWatchlist(wl.GetWatchlistRequest(name=first.name), timeout=10)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert await code_of(
        md.watchlists.DeleteWatchlist(wl.DeleteWatchlistRequest(name=first.name), timeout=10)
    ) == (grpc.StatusCode.NOT_FOUND)
    listed = await md.watchlists.ListWatchlists(wl.ListWatchlistsRequest(parent=f"users/{user}"), timeout=10)
    assert [w.watchlist_id for w in listed.watchlists] == [second.watchlist_id]


async def test_list_pages(md: MarketDataProcess) -> None:
    user = new_user()
    made = [(await create(md, user, f"List {n}")).watchlist_id for n in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await md.watchlists.ListWatchlists(
            wl.ListWatchlistsRequest(parent=f"users/{user}", page_size=2, page_token=token), timeout=10
        )
        seen += [w.watchlist_id for w in page.watchlists]
        token = page.next_page_token
        if not token:
            break
    assert seen == made
    other = new_user()
    first_page = await md.watchlists.ListWatchlists(
        wl.ListWatchlistsRequest(parent=f"users/{user}", page_size=2), timeout=10
    )
    # A token is bound to its user: it cannot be replayed against another parent.
    assert (
        await code_of(
            md.watchlists.ListWatchlists(
                wl.ListWatchlistsRequest(parent=f"users/{other}", page_token=first_page.next_page_token),
                timeout=10,
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_create_is_idempotent_by_request_id(md: MarketDataProcess) -> None:
    user = new_user()
    first = await create(md, user, "Once", ["INFY"], request_id="req-123")
    again = await create(md, user, "Once", ["INFY"], request_id="req-123")
    assert again.watchlist_id == first.watchlist_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(md, user, "Different", ["TCS"], request_id="req-123")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # Request ids are scoped per user.
    elsewhere = await create(md, new_user(), "Once", ["INFY"], request_id="req-123")
    assert elsewhere.watchlist_id != first.watchlist_id
    listed = await md.watchlists.ListWatchlists(wl.ListWatchlistsRequest(parent=f"users/{user}"), timeout=10)
    assert len(listed.watchlists) == 1


async def test_concurrent_retries_of_one_create_make_one_watchlist(md: MarketDataProcess) -> None:
    user = new_user()
    replies = await asyncio.gather(
        *(create(md, user, "Race", ["TCS"], request_id="same-key") for _ in range(12))
    )
    assert len({r.watchlist_id for r in replies}) == 1
    listed = await md.watchlists.ListWatchlists(wl.ListWatchlistsRequest(parent=f"users/{user}"), timeout=10)
    assert len(listed.watchlists) == 1


async def test_add_and_remove_report_what_happened(md: MarketDataProcess) -> None:
    user = new_user()
    made = await create(md, user, "Mixed", ["INFY"])
    added = await md.watchlists.AddWatchlistSymbols(
        wl.AddWatchlistSymbolsRequest(name=made.name, symbols=["INFY", "hdfcbank", "NOPE", "TCS"]), timeout=10
    )
    assert list(added.symbols_added) == ["HDFCBANK", "TCS"]
    assert list(added.symbols_ignored) == ["INFY", "NOPE"]
    assert list(added.watchlist.symbols) == ["INFY", "HDFCBANK", "TCS"]

    removed = await md.watchlists.RemoveWatchlistSymbols(
        wl.RemoveWatchlistSymbolsRequest(name=made.name, symbols=["INFY", "RELIANCE"]), timeout=10
    )
    assert list(removed.symbols_removed) == ["INFY"]
    assert list(removed.symbols_ignored) == ["RELIANCE"]
    assert list(removed.watchlist.symbols) == ["HDFCBANK", "TCS"]
    fetched = await md.watchlists.GetWatchlist(wl.GetWatchlistRequest(name=made.name), timeout=10)
    assert list(fetched.symbols) == ["HDFCBANK", "TCS"]


async def test_concurrent_adds_never_lose_a_symbol(md: MarketDataProcess) -> None:
    user = new_user()
    made = await create(md, user, "Busy")
    symbols = [f"SYN{n:04d}" for n in range(1, 31)]
    replies = await asyncio.gather(
        *(
            md.watchlists.AddWatchlistSymbols(
                wl.AddWatchlistSymbolsRequest(name=made.name, symbols=[s]), timeout=30
            )
            for s in symbols
        )
    )
    assert all(list(r.symbols_added) == [s] for r, s in zip(replies, symbols, strict=True))
    fetched = await md.watchlists.GetWatchlist(wl.GetWatchlistRequest(name=made.name), timeout=10)
    assert sorted(fetched.symbols) == symbols
    assert len(fetched.symbols) == len(set(fetched.symbols))


async def test_another_users_watchlist_is_not_found(md: MarketDataProcess) -> None:
    owner, intruder = new_user(), new_user()
    made = await create(md, owner, "Private", ["INFY"])
    stolen_name = f"users/{intruder}/watchlists/{made.watchlist_id}"
    calls = [
        md.watchlists.GetWatchlist(wl.GetWatchlistRequest(name=stolen_name), timeout=10),
        md.watchlists.AddWatchlistSymbols(
            wl.AddWatchlistSymbolsRequest(name=stolen_name, symbols=["TCS"]), timeout=10
        ),
        md.watchlists.RemoveWatchlistSymbols(
            wl.RemoveWatchlistSymbolsRequest(name=stolen_name, symbols=["INFY"]), timeout=10
        ),
        md.watchlists.DeleteWatchlist(wl.DeleteWatchlistRequest(name=stolen_name), timeout=10),
    ]
    for call in calls:
        assert await code_of(call) == grpc.StatusCode.NOT_FOUND
    untouched = await md.watchlists.GetWatchlist(wl.GetWatchlistRequest(name=made.name), timeout=10)
    assert list(untouched.symbols) == ["INFY"]


async def test_limits_refuse_and_change_nothing(md: MarketDataProcess) -> None:
    user = new_user()
    full = await create(md, user, "Full", [f"SYN{n:04d}" for n in range(1, 101)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await md.watchlists.AddWatchlistSymbols(
            wl.AddWatchlistSymbolsRequest(name=full.name, symbols=["INFY", "SYN0001"]), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(caught.value).reason == "WATCHLIST_FULL"
    after = await md.watchlists.GetWatchlist(wl.GetWatchlistRequest(name=full.name), timeout=10)
    assert list(after.symbols) == list(full.symbols) and after.update_time == full.update_time

    for n in range(49):
        await create(md, user, f"List {n}")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(md, user, "One too many")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(caught.value).reason == "WATCHLIST_LIMIT"
    listed = await md.watchlists.ListWatchlists(wl.ListWatchlistsRequest(parent=f"users/{user}"), timeout=10)
    assert len(listed.watchlists) == 50


async def test_bad_input_is_refused_with_the_field_and_changes_nothing(md: MarketDataProcess) -> None:
    user = new_user()
    made = await create(md, user, "Mine", ["INFY"])
    bad_requests = [
        (
            md.watchlists.CreateWatchlist(
                wl.CreateWatchlistRequest(parent=f"users/{user}", watchlist=wl.Watchlist(display_name=" ")),
                timeout=10,
            ),
            "watchlist.display_name",
        ),
        (
            md.watchlists.CreateWatchlist(
                wl.CreateWatchlistRequest(
                    parent=f"users/{user}", watchlist=wl.Watchlist(display_name="x", symbols=["INFY", "NOPE"])
                ),
                timeout=10,
            ),
            "watchlist.symbols",
        ),
        (
            md.watchlists.CreateWatchlist(
                wl.CreateWatchlistRequest(parent="accounts/x", watchlist=wl.Watchlist(display_name="x")),
                timeout=10,
            ),
            "parent",
        ),
        (md.watchlists.GetWatchlist(wl.GetWatchlistRequest(name="users/a/lists/b"), timeout=10), "name"),
        (
            md.watchlists.AddWatchlistSymbols(wl.AddWatchlistSymbolsRequest(name=made.name), timeout=10),
            "symbols",
        ),
        (
            md.watchlists.ListWatchlists(
                wl.ListWatchlistsRequest(parent=f"users/{user}", page_size=-1), timeout=10
            ),
            "page_size",
        ),
    ]
    for call, field in bad_requests:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details_of(caught.value).violations[0].field == field
    listed = await md.watchlists.ListWatchlists(wl.ListWatchlistsRequest(parent=f"users/{user}"), timeout=10)
    assert [(w.watchlist_id, list(w.symbols)) for w in listed.watchlists] == [(made.watchlist_id, ["INFY"])]
