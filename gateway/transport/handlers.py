"""The operations of openapi.yaml (by operationId): thin, mapping JSON ↔ gRPC.

By the time a handler runs, connexion has authenticated the token and validated the
request; the user id comes from the token (`current().user_id`), never from the body.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from connexion import request
from starlette.responses import Response

from brokermesh.funds.v1 import funds_pb2, portfolio_pb2
from brokermesh.marketdata.v1 import alerts_pb2, marketdata_pb2, watchlists_pb2
from brokermesh.orders.v1 import orders_pb2
from gateway.adapters.backends import BackendError, Backends
from gateway.app.limits import EdgeLimits
from gateway.app.quotes import QuoteHub
from gateway.app.sessions import Sessions, TokenPair, refused
from gateway.domain import sse
from gateway.domain.jsonmoney import dumps
from gateway.transport import mapping
from gateway.transport.state import current
from gateway.transport.streams import (
    AlertStream,
    MarketStream,
    MarketValueStream,
    OrderStream,
    RelayStream,
    StreamRegistry,
)
from svc_runtime.errors import (
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type="application/json")


def _user() -> str:
    user_id = current().user_id
    if not user_id:  # the spec secures every operation but login; this is a second lock
        raise refused()
    return user_id


def _timestamp(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).isoformat().replace("+00:00", "Z")


def _session_body(pair: TokenPair) -> dict[str, Any]:
    return {
        "accessToken": pair.access.token,
        "tokenType": "Bearer",
        "expiresIn": pair.access.expires_in,
        "expiresAt": _timestamp(pair.access.expires_at),
        "refreshToken": pair.refresh.token,
        "refreshExpiresIn": pair.refresh.expires_in,
        "refreshExpiresAt": _timestamp(pair.refresh.expires_at),
        "userId": pair.access.user_id,
    }


def _body() -> dict[str, Any]:
    body = current().body
    return body if isinstance(body, dict) else {}


def _idempotency_key(body_key: str | None = None) -> str:
    """The client's key (header or body), or one made up: see openapi.yaml, Idempotency."""
    header_key = request.headers.get(IDEMPOTENCY_HEADER)
    if header_key and body_key and header_key != body_key:
        raise InvalidArgument(
            "Idempotency-Key and clientOrderId differ; send one, or the same in both",
            reason="IDEMPOTENCY_KEY_MISMATCH",
            field="clientOrderId",
        )
    return header_key or body_key or new_id("idem")


async def _order_action(call: Awaitable[orders_pb2.Order]) -> orders_pb2.Order:
    """Place, cancel or modify: a timeout leaves the outcome unknown, and the client is told
    how to resolve it (never to act again under a new key)."""
    try:
        return await call
    except BackendError as error:
        if error.details.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded(
                "the outcome is unknown: retry with the same Idempotency-Key, or look the order up",
                reason="OUTCOME_UNKNOWN",
            ) from None
        raise


class Handlers:
    def __init__(
        self,
        *,
        backends: Backends,
        sessions: Sessions,
        hub: QuoteHub,
        registry: StreamRegistry,
        limits: EdgeLimits,
        clock: Callable[[], float],
    ) -> None:
        self.backends = backends
        self.sessions = sessions
        self.hub = hub
        self.slots = limits.slots
        self.registry = registry
        self.streams = limits.streams
        self.limits = limits
        self.clock = clock

    # --- limits --------------------------------------------------------------------------
    async def get_limits(self) -> Response:
        state = current()
        return json_response(
            self.limits.for_caller(_user(), state.client_ip, self.clock()), 200, {"Cache-Control": "no-store"}
        )

    # --- sessions ------------------------------------------------------------------------
    async def create_session(self) -> Response:
        body = _body()
        pair = await self.sessions.login(body["username"], body["password"], current().client_ip)
        return json_response(_session_body(pair), 200, {"Cache-Control": "no-store"})

    async def refresh_session(self) -> Response:
        pair = await self.sessions.refresh(_body()["refreshToken"])
        return json_response(_session_body(pair), 200, {"Cache-Control": "no-store"})

    async def delete_current_session(self) -> Response:
        state = current()
        if not state.user_id or not state.session:
            raise refused()
        await self.sessions.logout(state.session, state.user_id)
        return Response(status_code=204)

    # --- price alerts ---------------------------------------------------------------------
    async def create_alert(self) -> Response:
        key = request.headers.get(IDEMPOTENCY_HEADER) or new_id("alert")
        alert = await self.backends.call(
            self.backends.alerts.CreateAlert,
            alerts_pb2.CreateAlertRequest(
                parent=f"users/{_user()}", alert=mapping.alert_request(_body()), request_id=key
            ),
        )
        return json_response(mapping.alert_json(alert), 201, {"Location": f"/v1/alerts/{alert.alert_id}"})

    async def list_alerts(self) -> Response:
        reply = await self.backends.call(
            self.backends.alerts.ListAlerts, alerts_pb2.ListAlertsRequest(parent=f"users/{_user()}")
        )
        return json_response({"alerts": [mapping.alert_json(a) for a in reply.alerts]})

    async def delete_alert(self, alert_id: str) -> Response:
        await self.backends.call(
            self.backends.alerts.DeleteAlert,
            alerts_pb2.DeleteAlertRequest(name=f"users/{_user()}/alerts/{alert_id}"),
        )
        return Response(status_code=204)

    # --- watchlists ----------------------------------------------------------------------
    async def create_watchlist(self) -> Response:
        user_id, body = _user(), _body()
        watchlist = await self.backends.call(
            self.backends.watchlists.CreateWatchlist,
            watchlists_pb2.CreateWatchlistRequest(
                parent=f"users/{user_id}",
                watchlist=watchlists_pb2.Watchlist(
                    display_name=body["name"], symbols=mapping.symbols_of(body)
                ),
                request_id=_idempotency_key(),
            ),
        )
        return json_response(
            mapping.watchlist_json(watchlist), 201, {"Location": f"/v1/watchlists/{watchlist.watchlist_id}"}
        )

    async def list_watchlists(self, page_size: int | None = None, page_token: str | None = None) -> Response:
        reply = await self.backends.call(
            self.backends.watchlists.ListWatchlists,
            watchlists_pb2.ListWatchlistsRequest(
                parent=f"users/{_user()}", page_size=page_size or 0, page_token=page_token or ""
            ),
        )
        return json_response(
            {
                "watchlists": [mapping.watchlist_json(w) for w in reply.watchlists],
                "nextPageToken": reply.next_page_token,
            }
        )

    async def get_watchlist(self, watchlist_id: str) -> Response:
        watchlist = await self.backends.call(
            self.backends.watchlists.GetWatchlist,
            watchlists_pb2.GetWatchlistRequest(name=f"users/{_user()}/watchlists/{watchlist_id}"),
        )
        return json_response(mapping.watchlist_json(watchlist))

    async def delete_watchlist(self, watchlist_id: str) -> Response:
        await self.backends.call(
            self.backends.watchlists.DeleteWatchlist,
            watchlists_pb2.DeleteWatchlistRequest(name=f"users/{_user()}/watchlists/{watchlist_id}"),
        )
        return Response(status_code=204)

    async def add_watchlist_symbols(self, watchlist_id: str) -> Response:
        reply = await self.backends.call(
            self.backends.watchlists.AddWatchlistSymbols,
            watchlists_pb2.AddWatchlistSymbolsRequest(
                name=f"users/{_user()}/watchlists/{watchlist_id}", symbols=mapping.symbols_of(_body())
            ),
        )
        return json_response(
            {
                "watchlistId": reply.watchlist.watchlist_id or watchlist_id,
                "symbolsAdded": list(reply.symbols_added),
                "symbolsIgnored": list(reply.symbols_ignored),
                "symbols": list(reply.watchlist.symbols),
                "status": "success",
            }
        )

    async def remove_watchlist_symbols(self, watchlist_id: str) -> Response:
        reply = await self.backends.call(
            self.backends.watchlists.RemoveWatchlistSymbols,
            watchlists_pb2.RemoveWatchlistSymbolsRequest(
                name=f"users/{_user()}/watchlists/{watchlist_id}", symbols=mapping.symbols_of(_body())
            ),
        )
        return json_response(
            {
                "watchlistId": reply.watchlist.watchlist_id or watchlist_id,
                "symbolsRemoved": list(reply.symbols_removed),
                "symbolsIgnored": list(reply.symbols_ignored),
                "symbols": list(reply.watchlist.symbols),
                "status": "success",
            }
        )

    # --- orders --------------------------------------------------------------------------
    async def place_order(self) -> Response:
        user_id, body = _user(), _body()
        key = _idempotency_key(body.get("clientOrderId"))
        placed = await _order_action(
            self.backends.call(
                self.backends.orders.PlaceOrder,
                mapping.place_order_request(body, user_id=user_id, idempotency_key=key),
            )
        )
        return json_response(
            mapping.order_json(placed),
            201,
            {"Location": f"/v1/orders/{placed.order_id}", IDEMPOTENCY_HEADER: key},
        )

    # --- GTT orders ------------------------------------------------------------------------
    async def create_gtt(self) -> Response:
        key = _idempotency_key(None)
        gtt = await self.backends.call(
            self.backends.orders.CreateGtt,
            mapping.create_gtt_request(_body(), user_id=_user(), idempotency_key=key),
        )
        return json_response(
            mapping.gtt_json(gtt), 201, {"Location": f"/v1/gtts/{gtt.gtt_id}", IDEMPOTENCY_HEADER: key}
        )

    async def list_gtts(self) -> Response:
        reply = await self.backends.call(
            self.backends.orders.ListGtts, orders_pb2.ListGttsRequest(parent=f"users/{_user()}")
        )
        return json_response({"gtts": [mapping.gtt_json(g) for g in reply.gtts]})

    async def get_gtt(self, gtt_id: str) -> Response:
        gtt = await self.backends.call(
            self.backends.orders.GetGtt, orders_pb2.GetGttRequest(name=f"users/{_user()}/gtts/{gtt_id}")
        )
        return json_response(mapping.gtt_json(gtt))

    async def cancel_gtt(self, gtt_id: str) -> Response:
        gtt = await self.backends.call(
            self.backends.orders.CancelGtt, orders_pb2.CancelGttRequest(name=f"users/{_user()}/gtts/{gtt_id}")
        )
        return json_response(mapping.gtt_json(gtt))

    async def preview_order(self) -> Response:
        request = mapping.place_order_request(_body(), user_id=_user(), idempotency_key="")
        preview = await self.backends.call(
            self.backends.orders.PreviewOrder,
            orders_pb2.PreviewOrderRequest(parent=request.parent, order=request.order),
        )
        return json_response(mapping.preview_json(preview))

    async def list_orders(
        self,
        page_size: int | None = None,
        page_token: str | None = None,
        status: list[str] | None = None,
        tag: str | None = None,
    ) -> Response:
        reply = await self.backends.call(
            self.backends.orders.ListOrders,
            orders_pb2.ListOrdersRequest(
                parent=f"users/{_user()}",
                page_size=page_size or 0,
                page_token=page_token or "",
                statuses=[mapping.status_value(s) for s in status or []],
                tag=tag or "",
            ),
        )
        return json_response(
            {"orders": [mapping.order_json(o) for o in reply.orders], "nextPageToken": reply.next_page_token}
        )

    async def get_order(self, order_id: str) -> Response:
        order = await self.backends.call(
            self.backends.orders.GetOrder,
            orders_pb2.GetOrderRequest(name=f"users/{_user()}/orders/{order_id}"),
        )
        return json_response(mapping.order_json(order))

    async def cancel_order(self, order_id: str) -> Response:
        order = await self.backends.call(
            self.backends.orders.CancelOrder,
            orders_pb2.CancelOrderRequest(
                name=f"users/{_user()}/orders/{order_id}", request_id=_idempotency_key()
            ),
        )
        return json_response(mapping.order_json(order))

    async def modify_order(self, order_id: str) -> Response:
        order = await _order_action(
            self.backends.call(
                self.backends.orders.ModifyOrder,
                mapping.modify_order_request(
                    _body(), name=f"users/{_user()}/orders/{order_id}", idempotency_key=_idempotency_key()
                ),
            )
        )
        return json_response(mapping.order_json(order))

    async def list_trades(
        self,
        page_size: int | None = None,
        page_token: str | None = None,
        order_id: str | None = None,
        tag: str | None = None,
    ) -> Response:
        reply = await self.backends.call(
            self.backends.orders.ListTrades,
            orders_pb2.ListTradesRequest(
                parent=f"users/{_user()}",
                page_size=page_size or 0,
                page_token=page_token or "",
                order_id=order_id or "",
                tag=tag or "",
            ),
        )
        return json_response(
            {"trades": [mapping.trade_json(t) for t in reply.trades], "nextPageToken": reply.next_page_token}
        )

    # --- portfolio and funds -------------------------------------------------------------
    async def get_portfolio(self, tag: str | None = None) -> Response:
        portfolio = await self.backends.call(
            self.backends.portfolio.GetPortfolio,
            portfolio_pb2.GetPortfolioRequest(name=f"users/{_user()}/portfolio", tag=tag or ""),
        )
        return json_response(mapping.portfolio_json(portfolio))

    async def get_funds(self) -> Response:
        funds = await self.backends.call(
            self.backends.funds.GetFunds, funds_pb2.GetFundsRequest(name=f"users/{_user()}/funds")
        )
        return json_response(mapping.funds_json(funds))

    async def list_ledger_entries(
        self, page_size: int | None = None, page_token: str | None = None
    ) -> Response:
        reply = await self.backends.call(
            self.backends.funds.ListLedgerEntries,
            funds_pb2.ListLedgerEntriesRequest(
                parent=f"users/{_user()}", page_size=page_size or 0, page_token=page_token or ""
            ),
        )
        return json_response(
            {
                "entries": [mapping.ledger_entry_json(e) for e in reply.entries],
                "nextPageToken": reply.next_page_token,
            }
        )

    async def get_account_statement(
        self, start_date: str, end_date: str, format_: str | None = None
    ) -> Response:
        reply = await self.backends.call(
            self.backends.funds.GetAccountStatement,
            funds_pb2.GetAccountStatementRequest(
                parent=f"users/{_user()}",
                start_date=start_date,
                end_date=end_date,
                format=mapping.document_format(format_),
            ),
        )
        return mapping.document_response(reply)

    async def get_contract_note(self, trading_day: str, format_: str | None = None) -> Response:
        reply = await self.backends.call(
            self.backends.funds.GetContractNote,
            funds_pb2.GetContractNoteRequest(
                parent=f"users/{_user()}", trading_day=trading_day, format=mapping.document_format(format_)
            ),
        )
        return mapping.document_response(reply)

    async def get_bank_account(self) -> Response:
        account = await self.backends.call(
            self.backends.funds.GetBankAccount,
            funds_pb2.GetBankAccountRequest(name=f"users/{_user()}/bankAccount"),
        )
        return json_response(mapping.bank_account_json(account))

    async def create_withdrawal(self) -> Response:
        user_id, key = _user(), _idempotency_key()
        withdrawal = await self.backends.call(
            self.backends.funds.CreateWithdrawal,
            mapping.withdrawal_request(_body(), user_id=user_id, idempotency_key=key),
        )
        return json_response(
            mapping.withdrawal_json(withdrawal),
            202,
            {"Location": f"/v1/funds/withdrawals/{withdrawal.withdrawal_id}", IDEMPOTENCY_HEADER: key},
        )

    async def get_withdrawal(self, withdrawal_id: str) -> Response:
        withdrawal = await self.backends.call(
            self.backends.funds.GetWithdrawal,
            funds_pb2.GetWithdrawalRequest(name=f"users/{_user()}/withdrawals/{withdrawal_id}"),
        )
        return json_response(mapping.withdrawal_json(withdrawal))

    async def list_withdrawals(self, page_size: int | None = None, page_token: str | None = None) -> Response:
        reply = await self.backends.call(
            self.backends.funds.ListWithdrawals,
            funds_pb2.ListWithdrawalsRequest(
                parent=f"users/{_user()}", page_size=page_size or 0, page_token=page_token or ""
            ),
        )
        return json_response(
            {
                "withdrawals": [mapping.withdrawal_json(w) for w in reply.withdrawals],
                "nextPageToken": reply.next_page_token,
            }
        )

    # --- market data ---------------------------------------------------------------------
    async def get_quotes(self, symbols: list[str]) -> Response:
        _user()
        quotes, unknown = await self.backends.latest_quotes(list(dict.fromkeys(s.upper() for s in symbols)))
        return json_response({"quotes": [mapping.quote_json(q) for q in quotes], "unknownSymbols": unknown})

    async def search_instruments(
        self, q: str, page_size: int | None = None, page_token: str | None = None
    ) -> Response:
        _user()
        reply = await self.backends.call(
            self.backends.marketdata.SearchInstruments,
            marketdata_pb2.SearchInstrumentsRequest(
                query=q, page_size=page_size or 0, page_token=page_token or ""
            ),
        )
        return json_response(
            {
                "instruments": [mapping.instrument_json(i) for i in reply.instruments],
                "nextPageToken": reply.next_page_token,
            }
        )

    async def list_candles(
        self, symbol: str, interval: str, page_size: int | None = None, page_token: str | None = None
    ) -> Response:
        _user()
        reply = await self.backends.call(
            self.backends.market_feed.ListCandles,
            marketdata_pb2.ListCandlesRequest(
                parent=f"instruments/{symbol.upper()}",
                interval=mapping.CANDLE_INTERVALS[interval],  # type: ignore[arg-type]
                page_size=page_size or 0,
                page_token=page_token or "",
            ),
        )
        return json_response(
            {
                "candles": [mapping.candle_json(c) for c in reply.candles],
                "nextPageToken": reply.next_page_token,
            }
        )

    async def get_market_depth(self, symbol: str) -> Response:
        _user()
        depth = await self.backends.call(
            self.backends.market_feed.GetMarketDepth,
            marketdata_pb2.GetMarketDepthRequest(name=f"instruments/{symbol.upper()}/depth"),
        )
        return json_response(mapping.depth_json(depth))

    async def stream_candles(self, symbol: str, interval: str) -> Response:
        user_id = _user()
        request = marketdata_pb2.StreamCandlesRequest(
            parent=f"instruments/{symbol.upper()}",
            interval=mapping.CANDLE_INTERVALS[interval],  # type: ignore[arg-type]
        )
        events = self.backends.server_stream(self.backends.market_feed.StreamCandles, request)

        def candles(response: marketdata_pb2.StreamCandlesResponse) -> list[dict[str, Any]]:
            return [mapping.candle_json(c) for c in response.candles]

        return await self._relay(user_id, events, lambda *args: MarketValueStream(sse.CANDLE, candles, *args))

    async def stream_market_depth(self, symbol: str) -> Response:
        user_id = _user()
        request = marketdata_pb2.StreamMarketDepthRequest(name=f"instruments/{symbol.upper()}/depth")
        events = self.backends.server_stream(self.backends.market_feed.StreamMarketDepth, request)

        def depth(response: marketdata_pb2.StreamMarketDepthResponse) -> list[dict[str, Any]]:
            return [mapping.depth_json(response.depth)] if response.HasField("depth") else []

        return await self._relay(user_id, events, lambda *args: MarketValueStream(sse.DEPTH, depth, *args))

    # --- streams -------------------------------------------------------------------------
    async def _take_slot(self, user_id: str) -> None:
        if self.registry.closing:
            raise Unavailable(
                "the gateway is shutting down; reconnect", reason="SHUTTING_DOWN", retry_after_seconds=1
            )
        if not await self.slots.take(user_id):
            raise ResourceExhausted(
                f"at most {self.slots.per_user} streams may be open at once",
                reason="TOO_MANY_STREAMS",
                retry_after_seconds=self.streams.retry_ms / 1000,
            )

    async def stream_market_data(
        self, symbols: list[str] | None = None, watchlist_id: str | None = None, portfolio: bool | None = None
    ) -> Response:
        user_id = _user()
        if sum((bool(symbols), bool(watchlist_id), bool(portfolio))) != 1:
            raise InvalidArgument(
                "give one of symbols, watchlistId or portfolio=true",
                reason="INVALID_ARGUMENT",
                field="symbols",
            )
        if watchlist_id:
            watchlist = await self.backends.call(
                self.backends.watchlists.GetWatchlist,
                watchlists_pb2.GetWatchlistRequest(name=f"users/{user_id}/watchlists/{watchlist_id}"),
            )
            symbols = list(watchlist.symbols)
            if not symbols:
                raise InvalidArgument(
                    "the watchlist has no symbols", reason="EMPTY_WATCHLIST", field="watchlistId"
                )
        elif portfolio:
            symbols = await self._portfolio_symbols(user_id)
        wanted = list(dict.fromkeys(s.upper() for s in symbols or []))
        limit = self.streams.symbols_per_stream
        if len(wanted) > limit:
            raise InvalidArgument(
                f"at most {limit} symbols per stream", reason="TOO_MANY_SYMBOLS", field="symbols"
            )
        await self._take_slot(user_id)
        try:
            subscription = await self.hub.subscribe(wanted)
        except BaseException:
            self.slots.release(user_id)
            raise
        stream = MarketStream(
            subscription, self.hub, self.streams, self.registry, lambda: self.slots.release(user_id)
        )
        stream.session = current().session
        return stream

    async def _portfolio_symbols(self, user_id: str) -> list[str]:
        held = await self.backends.call(
            self.backends.portfolio.GetPortfolio,
            portfolio_pb2.GetPortfolioRequest(name=f"users/{user_id}/portfolio"),
        )
        symbols = [h.symbol for h in held.holdings] + [p.symbol for p in held.positions]
        if not symbols:
            raise InvalidArgument(
                "the portfolio holds no symbols", reason="EMPTY_PORTFOLIO", field="portfolio"
            )
        return symbols

    async def stream_order_updates(self, user_id: str, after_event_id: str) -> Response:
        events = self.backends.order_updates(user_id, after_event_id)
        return await self._relay(user_id, events, OrderStream)

    async def _relay(
        self, user_id: str, events: AsyncIterator[Any], make: Callable[..., RelayStream]
    ) -> Response:
        """A stream relaying a gRPC server stream, once its source has answered (or not
        refused at once)."""
        await self._take_slot(user_id)
        first = asyncio.ensure_future(anext(events))
        try:
            # Fail fast (as problem+json, which stops EventSource reconnecting) when the
            # source refuses at once, e.g. svc_orders down or an unknown Last-Event-ID.
            done, _ = await asyncio.wait({first}, timeout=self.streams.start_wait_seconds)
            if (
                first in done
                and first.exception() is not None
                and not isinstance(first.exception(), StopAsyncIteration)
            ):
                first.result()
        except BaseException:
            first.cancel()
            self.slots.release(user_id)
            raise
        stream = make(events, first, self.streams, self.registry, lambda: self.slots.release(user_id))
        stream.session = current().session
        return stream

    async def stream_alerts(self, last_event_id: str | None = None) -> Response:
        user_id = _user()
        after = request.headers.get("last-event-id") or last_event_id or ""
        return await self._relay(user_id, self.backends.alert_events(user_id, after), AlertStream)

    async def stream_orders(self, last_event_id: str | None = None) -> Response:
        user_id = _user()
        after = request.headers.get("last-event-id") or last_event_id or ""
        return await self.stream_order_updates(user_id, after)
