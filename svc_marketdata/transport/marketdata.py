"""gRPC `MarketDataService`: thin mapping between protobuf and the application."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from prometheus_client import Counter

from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from svc_marketdata.app.market import MAX_QUOTES_PER_MESSAGE, MarketData
from svc_marketdata.domain.candles import Candle
from svc_marketdata.domain.conflation import DEFAULT_UPDATES_PER_SECOND, MAX_UPDATES_PER_SECOND
from svc_marketdata.transport.wire import (
    INTERVAL_NAMES,
    candle_message,
    depth_message,
    instrument_message,
    repeated_field,
)
from svc_runtime import context as request_context
from svc_runtime.access import owns
from svc_runtime.errors import InvalidArgument, NotFound, ResourceExhausted

# Reads a watchlist's symbols: (user id, watchlist id) → symbols.
WatchlistSymbols = Callable[[str, str], Awaitable[list[str]]]
# Reads a portfolio's symbols: `users/{user}/portfolio` → symbols.
PortfolioSymbols = Callable[[str], Awaitable[list[str]]]
# Depth and candle streams push at most this often: charts and ladders, not tick tapes.
VALUE_STREAM_UPDATES_PER_SECOND = 4

SERVICE_NAME = marketdata_pb2.DESCRIPTOR.services_by_name["MarketDataService"].full_name
# Responses these methods return as bytes already in wire form (see `wire.repeated_field`).
_PRE_ENCODED = ("BatchGetQuotes", "StreamQuotes")

STREAM_MESSAGES = Counter("marketdata_stream_messages_total", "StreamQuotes messages written")
STREAMS_DROPPED = Counter("marketdata_streams_dropped_total", "Quote streams ended by the server", ["reason"])


def _wire(response: Any) -> bytes:
    return response if isinstance(response, bytes) else response.SerializeToString()


def register(servicer: MarketDataServicer, server: grpc.aio.Server) -> None:
    """Like the generated `add_MarketDataServiceServicer_to_server`, except that the
    pre-encoded methods' responses are passed through as bytes."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}

    class _Collect:
        def add_generic_rpc_handlers(self, _: object) -> None:
            pass

        def add_registered_method_handlers(self, _: str, collected: dict[str, grpc.RpcMethodHandler]) -> None:
            handlers.update(collected)

    marketdata_pb2_grpc.add_MarketDataServiceServicer_to_server(servicer, _Collect())
    for method in _PRE_ENCODED:
        handlers[method] = handlers[method]._replace(response_serializer=_wire)  # type: ignore[attr-defined]
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _chunks(items: Sequence[bytes], size: int = MAX_QUOTES_PER_MESSAGE) -> list[Sequence[bytes]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class MarketDataServicer(marketdata_pb2_grpc.MarketDataServiceServicer):
    def __init__(
        self,
        market: MarketData,
        *,
        stall_timeout: float,
        heartbeat_seconds: float = 5.0,
        watchlist_symbols: WatchlistSymbols | None = None,
        portfolio_symbols: PortfolioSymbols | None = None,
    ) -> None:
        self.market = market
        self.watchlist_symbols = watchlist_symbols
        self.portfolio_symbols = portfolio_symbols
        # A push the client has not taken in this long means it cannot keep up.
        self.stall_timeout = stall_timeout
        # An idle stream gets the feed status this often, so the client knows it is alive.
        self.heartbeat_seconds = heartbeat_seconds
        # The push stage builds each group's response once, in wire form.
        market.hub.render = self._render

    async def BatchGetQuotes(
        self, request: marketdata_pb2.BatchGetQuotesRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        quotes, unknown = self.market.batch_get_quotes(request.symbols)
        return repeated_field(1, quotes) + repeated_field(2, [s.encode() for s in unknown])

    async def StreamQuotes(
        self, request: marketdata_pb2.StreamQuotesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        rate = request.max_updates_per_second or DEFAULT_UPDATES_PER_SECOND
        if not 1 <= rate <= MAX_UPDATES_PER_SECOND:
            raise InvalidArgument(
                f"max_updates_per_second must be between 1 and {MAX_UPDATES_PER_SECOND}",
                field="max_updates_per_second",
            )
        symbols = self.market.stream_symbols(await self._requested_symbols(request))
        stream = self.market.hub.open(symbols, rate)
        try:
            # Opened before the snapshot is read: a change meanwhile is pushed right after.
            await self._write(context, self._render(symbols), self.market.status_encoded)
            while True:
                push = await stream.next_push(self.heartbeat_seconds)
                if push.everything:  # behind: the latest of everything instead of what it missed
                    await self._write(context, self._render(stream.symbols), push.status)
                elif push.messages:
                    await self._write(context, push.messages, push.status)
                else:  # the feed's status changed, or a heartbeat
                    await self._write(context, [b""], push.status or self.market.status_encoded)
        finally:
            self.market.hub.close(stream)
        # Responses go out with context.write (bounded by the stall timeout), not yield; this
        # stays an async generator so the server's interceptor can wrap it like any stream.
        yield b""  # pragma: no cover - unreachable

    async def _requested_symbols(self, request: marketdata_pb2.StreamQuotesRequest) -> list[str]:
        """The symbols named, or those of the watchlist or portfolio named (one of the three)."""
        given = [f for f in ("symbols", "watchlist", "portfolio") if getattr(request, f)]
        if len(given) > 1:
            raise InvalidArgument("give one of symbols, watchlist or portfolio", field=given[-1])
        if request.watchlist:
            return await self._watchlist_symbols(request.watchlist)
        if request.portfolio:
            return await self._portfolio_symbols(request.portfolio)
        return list(request.symbols)

    @staticmethod
    def _check_owner(name: str) -> None:
        actor = request_context.current().actor
        # A user (or a service relaying one) streams only their own lists; as elsewhere,
        # someone else's is not found.
        if actor.startswith("user:") and not owns(actor[5:], name):
            raise NotFound(f"{name} not found", reason="NOT_FOUND")

    async def _watchlist_symbols(self, name: str) -> list[str]:
        parts = name.split("/")
        if (
            len(parts) != 4
            or parts[0] != "users"
            or parts[2] != "watchlists"
            or self.watchlist_symbols is None
        ):
            raise InvalidArgument("watchlist must be users/{user}/watchlists/{watchlist}", field="watchlist")
        self._check_owner(name)
        symbols = await self.watchlist_symbols(parts[1], parts[3])
        if not symbols:
            raise InvalidArgument("the watchlist has no symbols", reason="EMPTY_WATCHLIST", field="watchlist")
        return symbols

    async def _portfolio_symbols(self, name: str) -> list[str]:
        parts = name.split("/")
        if (
            len(parts) != 3
            or parts[0] != "users"
            or parts[2] != "portfolio"
            or self.portfolio_symbols is None
        ):
            raise InvalidArgument("portfolio must be users/{user}/portfolio", field="portfolio")
        self._check_owner(name)
        symbols = await self.portfolio_symbols(name)
        if not symbols:
            raise InvalidArgument(
                "the portfolio holds no symbols", reason="EMPTY_PORTFOLIO", field="portfolio"
            )
        return symbols

    def _render(self, symbols: Sequence[str]) -> list[bytes]:
        """The latest quotes of `symbols` as StreamQuotesResponse messages (field 1)."""
        return [repeated_field(1, chunk) for chunk in _chunks(self.market.encoded_quotes(symbols))] or [b""]

    async def _write(
        self, context: grpc.aio.ServicerContext, messages: Sequence[bytes], status: bytes | None
    ) -> None:
        last = len(messages) - 1
        for index, quotes in enumerate(messages):
            # The status, if any, as one embedded FeedStatus after the last message's quotes.
            message = (
                quotes + repeated_field(2, (status,)) if status is not None and index == last else quotes
            )
            started = time.monotonic()
            try:
                # asyncio.timeout, not wait_for: no task per write on the fan-out's hot path.
                async with asyncio.timeout(self.stall_timeout):
                    await context.write(message)
            except TimeoutError:
                STREAMS_DROPPED.labels("slow_consumer").inc()
                raise ResourceExhausted(
                    f"quote stream closed: the client took no data for {time.monotonic() - started:.0f} s "
                    "and cannot keep up; reconnect, or ask for fewer symbols or updates",
                    reason="SLOW_CONSUMER",
                ) from None
            STREAM_MESSAGES.inc()

    async def GetInstrument(
        self, request: marketdata_pb2.GetInstrumentRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.Instrument:
        prefix, _, symbol = request.name.partition("/")
        if prefix != "instruments" or not symbol or "/" in symbol:
            raise InvalidArgument("name must be instruments/{symbol}", field="name")
        return instrument_message(self.market.get_instrument(symbol))

    async def SearchInstruments(
        self, request: marketdata_pb2.SearchInstrumentsRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.SearchInstrumentsResponse:
        hits, token = self.market.search(request.query, request.page_size, request.page_token)
        return marketdata_pb2.SearchInstrumentsResponse(
            instruments=[instrument_message(h.instrument) for h in hits], next_page_token=token
        )

    # --- candles and depth -------------------------------------------------------------

    @staticmethod
    def _instrument(name: str, field: str, suffix: str = "") -> str:
        prefix, _, rest = name.partition("/")
        symbol = rest[: -len(suffix)] if suffix and rest.endswith(suffix) else ("" if suffix else rest)
        if prefix != "instruments" or not symbol or "/" in symbol:
            raise InvalidArgument(f"{field} must be instruments/{{symbol}}{suffix}", field=field)
        return symbol

    @staticmethod
    def _interval(value: int) -> str:
        interval = INTERVAL_NAMES.get(value)
        if interval is None:
            raise InvalidArgument("interval is required", field="interval")
        return interval

    async def ListCandles(
        self, request: marketdata_pb2.ListCandlesRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.ListCandlesResponse:
        symbol = self._instrument(request.parent, "parent")
        candles, token = await self.market.list_candles(
            symbol, self._interval(request.interval), request.page_size, request.page_token
        )
        return marketdata_pb2.ListCandlesResponse(
            candles=[candle_message(c) for c in candles], next_page_token=token
        )

    async def GetMarketDepth(
        self, request: marketdata_pb2.GetMarketDepthRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.MarketDepth:
        return depth_message(self.market.market_depth(self._instrument(request.name, "name", "/depth")))

    async def StreamMarketDepth(
        self, request: marketdata_pb2.StreamMarketDepthRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[marketdata_pb2.StreamMarketDepthResponse]:
        symbol = self.market.feed_symbol(self._instrument(request.name, "name", "/depth"))
        sent = -1
        # aclosing: the stream's place on the board is given up as soon as it ends.
        async with contextlib.aclosing(self._value_pushes(("depth", symbol))) as pushes:
            async for status in pushes:
                depth = self.market.depth.get(symbol)
                response = marketdata_pb2.StreamMarketDepthResponse()
                if depth.sequence != sent:
                    response.depth.CopyFrom(depth_message(depth))
                    sent = depth.sequence
                if status is not None:
                    response.feed_status.ParseFromString(status)
                if response.HasField("depth") or status is not None:
                    await self._write_value(context, response)
        yield marketdata_pb2.StreamMarketDepthResponse()  # pragma: no cover - as StreamQuotes

    async def StreamCandles(
        self, request: marketdata_pb2.StreamCandlesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[marketdata_pb2.StreamCandlesResponse]:
        symbol = self.market.feed_symbol(self._instrument(request.parent, "parent"))
        interval = self._interval(request.interval)
        sent: dict[int, tuple[object, ...]] = {}
        async with contextlib.aclosing(self._value_pushes(("candles", symbol, interval))) as pushes:
            async for status in pushes:
                # Oldest first: when a candle opens, the final state of the one before it first.
                recent = self.market.recent_candles(symbol, interval)
                changed = [c for c in reversed(recent) if sent.get(c.start) != _state(c)]
                sent = {c.start: _state(c) for c in recent}
                if changed or status is not None:
                    response = marketdata_pb2.StreamCandlesResponse(
                        candles=[candle_message(c) for c in changed]
                    )
                    if status is not None:
                        response.feed_status.ParseFromString(status)
                    await self._write_value(context, response)
        yield marketdata_pb2.StreamCandlesResponse()  # pragma: no cover - as StreamQuotes

    async def _value_pushes(self, key: tuple[str, ...]) -> AsyncIterator[bytes | None]:
        """Yields when to push: first at once (with the feed's status), then after each change
        (at a bounded rate), and with the status alone when it changes or the stream is idle."""
        board = self.market.board
        with board.watch(key) as wake:
            live = self.market.feed_state.live
            yield self.market.status_encoded
            while True:
                try:
                    async with asyncio.timeout(self.heartbeat_seconds):
                        await wake.wait()
                except TimeoutError:
                    yield self.market.status_encoded
                    continue
                wake.clear()
                was, live = live, self.market.feed_state.live
                yield self.market.status_encoded if live != was else None
                await asyncio.sleep(1 / VALUE_STREAM_UPDATES_PER_SECOND)

    async def _write_value(self, context: grpc.aio.ServicerContext, message: Any) -> None:
        try:
            async with asyncio.timeout(self.stall_timeout):
                await context.write(message)
        except TimeoutError:
            STREAMS_DROPPED.labels("slow_consumer").inc()
            raise ResourceExhausted(
                "stream closed: the client took no data and cannot keep up; reconnect",
                reason="SLOW_CONSUMER",
            ) from None
        STREAM_MESSAGES.inc()


def _state(candle: Candle) -> tuple[object, ...]:
    return (candle.high, candle.low, candle.close, candle.volume)
