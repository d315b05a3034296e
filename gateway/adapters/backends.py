"""gRPC clients of svc_orders, svc_funds and svc_marketdata.

Every call carries the request context (request id, client IP, actor) in its metadata via
`svc_runtime.grpc_client.channel`, and a deadline. Calls are signed with the gateway's own
service identity (`svc_runtime.auth`); the actor is the user whose token the edge verified,
and the services hold a call made for a user to that user's resources. A failed call becomes `BackendError`
with the decoded google.rpc details, which the HTTP layer turns into problem+json.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from brokermesh.funds.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    funds_pb2_grpc,
    portfolio_pb2_grpc,
)
from brokermesh.marketdata.v1 import (
    alerts_pb2,
    alerts_pb2_grpc,
    marketdata_pb2,
    marketdata_pb2_grpc,
    watchlists_pb2_grpc,
)
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from svc_runtime.errors import ErrorDetails, Unauthenticated, details_of
from svc_runtime.grpc_client import MARKETDATA_FEED, channel

R = TypeVar("R")


class BackendError(Exception):
    """A service refused or failed a call; `details` says how (code, reason, violations)."""

    def __init__(self, details: ErrorDetails) -> None:
        super().__init__(details.message)
        self.details = details


class Backends:
    def __init__(
        self, *, orders_target: str, funds_target: str, marketdata_target: str, timeout: float
    ) -> None:
        self.timeout = timeout
        self._channels = {
            "svc_orders": channel(orders_target),
            "svc_funds": channel(funds_target),
            "svc_marketdata": channel(marketdata_target),
            # Depth and forming candles: only the replica holding the exchange feed has them.
            "svc_marketdata.feed": channel(marketdata_target, health_service=MARKETDATA_FEED),
        }
        self.orders = orders_pb2_grpc.OrdersServiceStub(self._channels["svc_orders"])
        self.accounts = accounts_pb2_grpc.AccountServiceStub(self._channels["svc_funds"])
        self.funds = funds_pb2_grpc.FundsServiceStub(self._channels["svc_funds"])
        self.portfolio = portfolio_pb2_grpc.PortfolioServiceStub(self._channels["svc_funds"])
        self.marketdata = marketdata_pb2_grpc.MarketDataServiceStub(self._channels["svc_marketdata"])
        self.watchlists = watchlists_pb2_grpc.WatchlistServiceStub(self._channels["svc_marketdata"])
        self.alerts = alerts_pb2_grpc.AlertServiceStub(self._channels["svc_marketdata"])
        self.market_feed = marketdata_pb2_grpc.MarketDataServiceStub(self._channels["svc_marketdata.feed"])

    async def call(
        self, method: Callable[..., Awaitable[R]], request: Any, *, timeout: float | None = None
    ) -> R:
        try:
            return await method(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as error:
            raise BackendError(details_of(error)) from None

    def channel_states(self) -> dict[str, str]:
        """Connectivity of each channel, for /healthz (no network round trip)."""
        return {name: ch.get_state(try_to_connect=True).name for name, ch in self._channels.items()}

    # --- ports used by the use cases -------------------------------------------------------
    async def verify_credentials(self, username: str, password: str) -> str:
        try:
            account = await self.call(
                self.accounts.VerifyCredentials,
                accounts_pb2.VerifyCredentialsRequest(username=username, password=password),
            )
        except BackendError as error:
            if error.details.code == grpc.StatusCode.UNAUTHENTICATED:
                raise Unauthenticated(error.details.message) from None
            raise
        return account.user_id

    async def latest_quotes(self, symbols: Sequence[str]) -> tuple[list[marketdata_pb2.Quote], list[str]]:
        reply = await self.call(
            self.marketdata.BatchGetQuotes, marketdata_pb2.BatchGetQuotesRequest(symbols=list(symbols))
        )
        return list(reply.quotes), list(reply.unknown_symbols)

    async def order_updates(self, user_id: str, after_event_id: str) -> AsyncIterator[orders_pb2.OrderEvent]:
        request = orders_pb2.StreamOrderUpdatesRequest(
            parent=f"users/{user_id}", after_event_id=after_event_id
        )
        async for response in self.server_stream(self.orders.StreamOrderUpdates, request):
            yield response.event

    async def server_stream(self, method: Callable[..., Any], request: Any) -> AsyncIterator[Any]:
        """The responses of a server-streaming call; a failure becomes BackendError."""
        call = method(request)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as error:
            raise BackendError(details_of(error)) from None
        finally:
            call.cancel()

    async def alert_events(self, user_id: str, after_event_id: str) -> AsyncIterator[alerts_pb2.AlertEvent]:
        request = alerts_pb2.StreamAlertEventsRequest(
            parent=f"users/{user_id}", after_event_id=after_event_id
        )
        async for event in self.server_stream(self.alerts.StreamAlertEvents, request):
            yield event

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
