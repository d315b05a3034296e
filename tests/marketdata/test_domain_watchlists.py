"""Watchlist rules: create, add/remove reporting, idempotent creates, limits, isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from svc_marketdata.domain.watchlists import (
    MAX_SYMBOLS_PER_WATCHLIST,
    MAX_WATCHLISTS_PER_USER,
    UserWatchlists,
    check_display_name,
    check_user_id,
)
from svc_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

NOW = datetime(2026, 1, 17, 10, 45, tzinfo=UTC)
KNOWN = {"INFY", "TCS", "HCLTECH", "RELIANCE", *(f"S{n:03d}" for n in range(200))}


def known(symbol: str) -> bool:
    return symbol in KNOWN


def create(
    doc: UserWatchlists, wl_id: str = "wl_1", symbols: list[str] | None = None, request_id: str = ""
) -> tuple:
    return doc.create(
        watchlist_id=wl_id,
        display_name="My  Watchlist ",
        symbols=symbols or [],
        request_id=request_id,
        now=NOW,
        is_known=known,
    )


def test_create_normalizes_name_and_symbols() -> None:
    doc = UserWatchlists("u_1")
    watchlist, created = create(doc, symbols=["infy", " TCS", "INFY"])
    assert created
    assert watchlist.display_name == "My Watchlist"
    assert watchlist.symbols == ["INFY", "TCS"]


def test_create_rejects_unknown_symbols_and_writes_nothing() -> None:
    doc = UserWatchlists("u_1")
    with pytest.raises(InvalidArgument) as caught:
        create(doc, symbols=["INFY", "NOPE", "ALSONOPE"])
    assert caught.value.metadata["unknown_symbols"] == "NOPE,ALSONOPE"
    assert doc.watchlists == {}


def test_same_request_id_returns_the_same_watchlist() -> None:
    doc = UserWatchlists("u_1")
    first, created = create(doc, "wl_1", ["INFY"], request_id="req-1")
    again, created_again = create(doc, "wl_2", ["INFY"], request_id="req-1")
    assert created and not created_again
    assert again is first and list(doc.watchlists) == ["wl_1"]


def test_same_request_id_for_a_different_request_is_refused() -> None:
    doc = UserWatchlists("u_1")
    create(doc, "wl_1", ["INFY"], request_id="req-1")
    with pytest.raises(AlreadyExists):
        create(doc, "wl_2", ["TCS"], request_id="req-1")


def test_request_ids_expire_and_are_bounded() -> None:
    doc = UserWatchlists("u_1")
    create(doc, "wl_1", request_id="old")
    doc.create(
        watchlist_id="wl_2",
        display_name="later",
        symbols=[],
        request_id="new",
        now=NOW + timedelta(days=2),
        is_known=known,
    )
    assert list(doc.requests) == ["new"]


def test_add_reports_added_and_ignored_like_the_api() -> None:
    doc = UserWatchlists("u_1")
    create(doc, symbols=["INFY"])
    change = doc.add_symbols("wl_1", ["INFY", "hcltech", "NOPE", "HCLTECH", "NOPE"], now=NOW, is_known=known)
    assert change.changed == ["HCLTECH"]
    assert change.ignored == ["INFY", "NOPE"]
    assert change.watchlist.symbols == ["INFY", "HCLTECH"]


def test_add_is_all_or_nothing_against_the_size_limit() -> None:
    doc = UserWatchlists("u_1")
    create(doc, symbols=[f"S{n:03d}" for n in range(MAX_SYMBOLS_PER_WATCHLIST - 1)])
    with pytest.raises(FailedPrecondition) as caught:
        doc.add_symbols("wl_1", ["INFY", "TCS"], now=NOW, is_known=known)
    assert caught.value.reason == "WATCHLIST_FULL"
    assert len(doc.watchlists["wl_1"].symbols) == MAX_SYMBOLS_PER_WATCHLIST - 1
    doc.add_symbols("wl_1", ["INFY"], now=NOW, is_known=known)
    assert len(doc.watchlists["wl_1"].symbols) == MAX_SYMBOLS_PER_WATCHLIST


def test_remove_reports_removed_and_ignored() -> None:
    doc = UserWatchlists("u_1")
    create(doc, symbols=["INFY", "TCS", "RELIANCE"])
    later = NOW + timedelta(minutes=1)
    change = doc.remove_symbols("wl_1", ["TCS", "TCS", "HCLTECH", "infy"], now=later)
    assert change.changed == ["TCS", "INFY"]
    assert change.ignored == ["HCLTECH"]
    assert change.watchlist.symbols == ["RELIANCE"]
    assert change.watchlist.update_time == later


def test_nothing_changes_when_nothing_is_added() -> None:
    doc = UserWatchlists("u_1")
    create(doc, symbols=["INFY"])
    change = doc.add_symbols("wl_1", ["INFY"], now=NOW + timedelta(hours=1), is_known=known)
    assert change.changed == [] and change.watchlist.update_time == NOW


def test_watchlist_count_is_limited() -> None:
    doc = UserWatchlists("u_1")
    for n in range(MAX_WATCHLISTS_PER_USER):
        create(doc, f"wl_{n}")
    with pytest.raises(FailedPrecondition) as caught:
        create(doc, "wl_extra")
    assert caught.value.reason == "WATCHLIST_LIMIT"


def test_missing_watchlist_is_not_found() -> None:
    doc = UserWatchlists("u_1")
    with pytest.raises(NotFound):
        doc.add_symbols("wl_x", ["INFY"], now=NOW, is_known=known)
    with pytest.raises(NotFound):
        doc.delete("wl_x")


@pytest.mark.parametrize("name", ["", "   ", "x" * 41])
def test_display_name_is_required_and_bounded(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_display_name(name)


@pytest.mark.parametrize("user_id", ["", "a/b", "u.1", "x" * 65, "u 1"])
def test_user_ids_must_be_kv_safe(user_id: str) -> None:
    with pytest.raises(InvalidArgument):
        check_user_id(user_id)


def test_too_many_symbols_in_one_request_is_invalid() -> None:
    doc = UserWatchlists("u_1")
    create(doc)
    with pytest.raises(InvalidArgument):
        doc.add_symbols("wl_1", ["INFY"] * (MAX_SYMBOLS_PER_WATCHLIST + 1), now=NOW, is_known=known)
    with pytest.raises(InvalidArgument):
        doc.add_symbols("wl_1", [], now=NOW, is_known=known)
