"""Watchlists: the rules for one user's named lists of symbols.

All of a user's watchlists form one aggregate (stored as one KV entry), so limits are exact
and every change is a compare-and-set of the whole: concurrent edits retry instead of losing
each other's symbols.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from svc_marketdata.domain.instruments import normalize_symbol
from svc_runtime import names
from svc_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

MAX_WATCHLISTS_PER_USER = 50
MAX_SYMBOLS_PER_WATCHLIST = 100
MAX_DISPLAY_NAME_LENGTH = 40
# Create request ids are remembered this long (and at most this many per user) so that a
# retried create returns the watchlist it made instead of a second one.
REQUEST_ID_RETENTION = timedelta(hours=24)
MAX_REMEMBERED_REQUESTS = 200

IsKnown = Callable[[str], bool]


# Ids become one token of a NATS KV key: no '.' (the token separator) and no ':' (not a key
# character), on top of the id grammar every service shares.
_KV_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _kv_safe_id(value: str, field_name: str) -> str:
    names.resource_id(value, field_name)
    if not _KV_TOKEN.match(value):
        raise InvalidArgument(
            f"{field_name}: an id here is letters, digits, '_' or '-'",
            reason="INVALID_NAME",
            field=field_name,
        )
    return value


def check_user_id(user_id: str, *, field_name: str = "parent") -> str:
    return _kv_safe_id(user_id, field_name)


def check_watchlist_id(watchlist_id: str, *, field_name: str = "name") -> str:
    return _kv_safe_id(watchlist_id, field_name)


def check_display_name(display_name: str) -> str:
    name = " ".join(display_name.split())
    if not name:
        raise InvalidArgument("watchlist.display_name is required", field="watchlist.display_name")
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidArgument(
            f"watchlist.display_name must be at most {MAX_DISPLAY_NAME_LENGTH} characters",
            field="watchlist.display_name",
        )
    return name


def check_request_id(request_id: str) -> str:
    """Optional here: a create without one is simply not deduplicated."""
    return names.request_id(request_id) if request_id else request_id


def check_symbol_list(symbols: Sequence[str], *, field_name: str, allow_empty: bool = False) -> list[str]:
    """Normalized symbols (upper case, trimmed), order kept, duplicates kept for reporting."""
    if not symbols and not allow_empty:
        raise InvalidArgument(f"{field_name} must name at least one symbol", field=field_name)
    if len(symbols) > MAX_SYMBOLS_PER_WATCHLIST:
        raise InvalidArgument(
            f"{field_name} may name at most {MAX_SYMBOLS_PER_WATCHLIST} symbols", field=field_name
        )
    return [normalize_symbol(s) for s in symbols]


@dataclass
class Watchlist:
    watchlist_id: str
    display_name: str
    symbols: list[str]
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class CreateRecord:
    """A remembered create: which watchlist a request id made, and what it asked for."""

    watchlist_id: str
    fingerprint: str
    at: datetime


@dataclass(frozen=True)
class SymbolChange:
    watchlist: Watchlist
    changed: list[str]
    ignored: list[str]


@dataclass
class UserWatchlists:
    user_id: str
    watchlists: dict[str, Watchlist] = field(default_factory=dict)  # in creation order
    requests: dict[str, CreateRecord] = field(default_factory=dict)

    def get(self, watchlist_id: str) -> Watchlist:
        watchlist = self.watchlists.get(watchlist_id)
        if watchlist is None:
            raise NotFound(f"watchlist {watchlist_id} not found", reason="WATCHLIST_NOT_FOUND")
        return watchlist

    def create(
        self,
        *,
        watchlist_id: str,
        display_name: str,
        symbols: Sequence[str],
        request_id: str,
        now: datetime,
        is_known: IsKnown,
    ) -> tuple[Watchlist, bool]:
        """The new watchlist and True, or — for a request id seen before with the same
        request — the watchlist it created and False."""
        name = check_display_name(display_name)
        wanted = list(
            dict.fromkeys(check_symbol_list(symbols, field_name="watchlist.symbols", allow_empty=True))
        )
        fingerprint = "\x1f".join([name, *wanted])
        if request_id:
            record = self.requests.get(request_id)
            if record is not None:
                if record.fingerprint != fingerprint:
                    raise AlreadyExists(
                        "request_id was already used for a different watchlist", reason="REQUEST_ID_REUSED"
                    )
                if record.watchlist_id not in self.watchlists:
                    raise NotFound(
                        "the watchlist this request created has since been deleted",
                        reason="WATCHLIST_NOT_FOUND",
                    )
                return self.watchlists[record.watchlist_id], False
        unknown = [s for s in wanted if not is_known(s)]
        if unknown:
            raise InvalidArgument(
                f"unknown symbols: {', '.join(unknown)}",
                reason="UNKNOWN_SYMBOL",
                field="watchlist.symbols",
                metadata={"unknown_symbols": ",".join(unknown)},
            )
        if len(self.watchlists) >= MAX_WATCHLISTS_PER_USER:
            raise FailedPrecondition(
                f"a user may have at most {MAX_WATCHLISTS_PER_USER} watchlists",
                reason="WATCHLIST_LIMIT",
                metadata={"limit": str(MAX_WATCHLISTS_PER_USER)},
            )
        if watchlist_id in self.watchlists:  # ids are random; a clash is a caller bug
            raise AlreadyExists(f"watchlist {watchlist_id} already exists")
        watchlist = Watchlist(watchlist_id, name, wanted, now, now)
        self.watchlists[watchlist_id] = watchlist
        if request_id:
            self._remember(request_id, CreateRecord(watchlist_id, fingerprint, now), now)
        return watchlist, True

    def add_symbols(
        self, watchlist_id: str, symbols: Sequence[str], *, now: datetime, is_known: IsKnown
    ) -> SymbolChange:
        """Add known symbols not yet present; the rest are ignored and reported. All or
        nothing against the size limit."""
        watchlist = self.get(watchlist_id)
        requested = check_symbol_list(symbols, field_name="symbols")
        present = set(watchlist.symbols)
        added: list[str] = []
        ignored: list[str] = []
        for symbol in requested:
            if symbol in added:
                continue  # named twice in one request
            if symbol in present or not is_known(symbol):
                if symbol not in ignored:
                    ignored.append(symbol)
                continue
            added.append(symbol)
            present.add(symbol)
        if len(watchlist.symbols) + len(added) > MAX_SYMBOLS_PER_WATCHLIST:
            raise FailedPrecondition(
                f"a watchlist holds at most {MAX_SYMBOLS_PER_WATCHLIST} symbols",
                reason="WATCHLIST_FULL",
                metadata={"limit": str(MAX_SYMBOLS_PER_WATCHLIST), "size": str(len(watchlist.symbols))},
            )
        if added:
            watchlist.symbols.extend(added)
            watchlist.update_time = now
        return SymbolChange(watchlist, added, ignored)

    def remove_symbols(self, watchlist_id: str, symbols: Sequence[str], *, now: datetime) -> SymbolChange:
        watchlist = self.get(watchlist_id)
        requested = check_symbol_list(symbols, field_name="symbols")
        present = set(watchlist.symbols)
        removed: list[str] = []
        ignored: list[str] = []
        for symbol in requested:
            if symbol in present:
                removed.append(symbol)
                present.discard(symbol)
            elif symbol not in ignored and symbol not in removed:
                ignored.append(symbol)
        if removed:
            gone = set(removed)
            watchlist.symbols = [s for s in watchlist.symbols if s not in gone]
            watchlist.update_time = now
        return SymbolChange(watchlist, removed, ignored)

    def delete(self, watchlist_id: str) -> None:
        self.get(watchlist_id)
        del self.watchlists[watchlist_id]

    def _remember(self, request_id: str, record: CreateRecord, now: datetime) -> None:
        self.requests[request_id] = record
        expired = [rid for rid, r in self.requests.items() if now - r.at > REQUEST_ID_RETENTION]
        for rid in expired:
            del self.requests[rid]
        while len(self.requests) > MAX_REMEMBERED_REQUESTS:
            del self.requests[next(iter(self.requests))]
