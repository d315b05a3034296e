"""gRPC `WatchlistService`: resource names ↔ the watchlist use cases."""

from __future__ import annotations

import grpc

from brokermesh.marketdata.v1 import watchlists_pb2, watchlists_pb2_grpc
from svc_marketdata.app.watchlists import Watchlists
from svc_marketdata.domain.watchlists import check_user_id, check_watchlist_id
from svc_marketdata.transport.wire import watchlist_message
from svc_runtime.errors import InvalidArgument

SERVICE_NAME = watchlists_pb2.DESCRIPTOR.services_by_name["WatchlistService"].full_name


def parse_parent(parent: str) -> str:
    """`users/{user}` → user id."""
    prefix, _, user_id = parent.partition("/")
    if prefix != "users":
        raise InvalidArgument("parent must be users/{user}", field="parent")
    return check_user_id(user_id)


def parse_name(name: str) -> tuple[str, str]:
    """`users/{user}/watchlists/{watchlist}` → (user id, watchlist id)."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "users" or parts[2] != "watchlists":
        raise InvalidArgument("name must be users/{user}/watchlists/{watchlist}", field="name")
    return check_user_id(parts[1], field_name="name"), check_watchlist_id(parts[3])


class WatchlistServicer(watchlists_pb2_grpc.WatchlistServiceServicer):
    def __init__(self, watchlists: Watchlists) -> None:
        self.watchlists = watchlists

    async def CreateWatchlist(
        self, request: watchlists_pb2.CreateWatchlistRequest, context: grpc.aio.ServicerContext
    ) -> watchlists_pb2.Watchlist:
        user_id = parse_parent(request.parent)
        created = await self.watchlists.create(
            user_id,
            display_name=request.watchlist.display_name,
            symbols=list(request.watchlist.symbols),
            request_id=request.request_id,
        )
        return watchlist_message(user_id, created)

    async def GetWatchlist(
        self, request: watchlists_pb2.GetWatchlistRequest, context: grpc.aio.ServicerContext
    ) -> watchlists_pb2.Watchlist:
        user_id, watchlist_id = parse_name(request.name)
        return watchlist_message(user_id, await self.watchlists.get(user_id, watchlist_id))

    async def ListWatchlists(
        self, request: watchlists_pb2.ListWatchlistsRequest, context: grpc.aio.ServicerContext
    ) -> watchlists_pb2.ListWatchlistsResponse:
        user_id = parse_parent(request.parent)
        page, token = await self.watchlists.list(
            user_id, page_size=request.page_size, page_token=request.page_token
        )
        return watchlists_pb2.ListWatchlistsResponse(
            watchlists=[watchlist_message(user_id, w) for w in page], next_page_token=token
        )

    async def DeleteWatchlist(
        self, request: watchlists_pb2.DeleteWatchlistRequest, context: grpc.aio.ServicerContext
    ) -> watchlists_pb2.DeleteWatchlistResponse:
        user_id, watchlist_id = parse_name(request.name)
        await self.watchlists.delete(user_id, watchlist_id)
        return watchlists_pb2.DeleteWatchlistResponse()

    async def AddWatchlistSymbols(
        self, request: watchlists_pb2.AddWatchlistSymbolsRequest, context: grpc.aio.ServicerContext
    ) -> watchlists_pb2.AddWatchlistSymbolsResponse:
        user_id, watchlist_id = parse_name(request.name)
        change = await self.watchlists.add_symbols(user_id, watchlist_id, list(request.symbols))
        return watchlists_pb2.AddWatchlistSymbolsResponse(
            watchlist=watchlist_message(user_id, change.watchlist),
            symbols_added=change.changed,
            symbols_ignored=change.ignored,
        )

    async def RemoveWatchlistSymbols(
        self, request: watchlists_pb2.RemoveWatchlistSymbolsRequest, context: grpc.aio.ServicerContext
    ) -> watchlists_pb2.RemoveWatchlistSymbolsResponse:
        user_id, watchlist_id = parse_name(request.name)
        change = await self.watchlists.remove_symbols(user_id, watchlist_id, list(request.symbols))
        return watchlists_pb2.RemoveWatchlistSymbolsResponse(
            watchlist=watchlist_message(user_id, change.watchlist),
            symbols_removed=change.changed,
            symbols_ignored=change.ignored,
        )
