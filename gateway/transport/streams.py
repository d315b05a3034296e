"""Server-Sent Events responses, written straight to the ASGI `send` (no per-client
generator or extra buffering).

A stream's request passes the whole edge (request id, rate limits, authentication,
validation, CORS) once, up to its response headers. Its body is then written from the
outermost layer (`DirectBody`): the forty-odd middleware frames of the request are released
instead of being held, suspended, for the hours a stream may stay open.

Rules (WHATWG HTML §9.2, and docs/architecture.md §6 "Bounded everything"): `retry:` first, then the current
state; a heartbeat when idle (price streams: `event: heartbeat` with the server's time and
the feed's sequence; order streams: a comment); every write has a deadline, and a client that does
not take its bytes in time is told (`event: error`, reason SLOW_CONSUMER) if it still can
be, and dropped. The publisher never waits for a client: price frames are conflated in
the client's subscription, order events wait in a small bounded queue whose fullness
pushes back on the gRPC stream (HTTP/2 flow control), not on anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Gauge
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from brokermesh.marketdata.v1 import marketdata_pb2
from brokermesh.orders.v1 import orders_pb2
from gateway.adapters.backends import BackendError
from gateway.app.quotes import QuoteHub, QuoteSubscription
from gateway.domain import sse
from gateway.domain.jsonmoney import dumps
from gateway.domain.problems import problem_from_details
from gateway.settings import StreamSettings
from gateway.transport.mapping import alert_json, order_event_json
from svc_runtime import context
from svc_runtime.tokens import REFUSED_MESSAGE, RevokedSessions

log = logging.getLogger(__name__)

OPEN_STREAMS = Gauge("gateway_sse_streams", "Open SSE streams", ["kind"])
FRAMES = Counter("gateway_sse_frames_total", "SSE data frames written", ["kind"])
DROPPED = Counter("gateway_sse_dropped_total", "SSE streams dropped by the server", ["kind", "reason"])

HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
_TELL_TIMEOUT = 1.0
_ORDER_QUEUE = 256
_END = object()
# Where the edge leaves its `Direct` in the request scope (see `DirectBody`).
DIRECT = "brokermesh.direct"
# What a stream may leave in the server's write buffer before its writes wait (asyncio's
# default is 64 KiB per layer, and TLS adds a layer): the less is held there, the sooner a
# write of a client that does not read meets its deadline.
STREAM_WRITE_BUFFER = 4 * 1024
# What the kernel may hold for a stream's socket (Linux doubles it): autotuned send buffers
# grow to hundreds of KiB, which a client that stops reading fills for seconds before any
# write waits. 32 KiB still carries ~160 KiB/s at a 200 ms round trip, far above a quote
# stream's rate.
STREAM_SEND_BUFFER = 16 * 1024


class SlowConsumer(Exception):
    pass


def _hold_less(send: Send) -> None:
    """Lowers the write buffer of the connection behind the server's `send` to
    `STREAM_WRITE_BUFFER` and its socket's kernel buffer to `STREAM_SEND_BUFFER` (uvicorn's
    `send` is a method of an object that holds the connection's transport). A server that
    does not expose it keeps its own limits."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    # uvloop's transports are not registered as asyncio's classes: ask for the method.
    limit = getattr(transport, "set_write_buffer_limits", None)
    if callable(limit):
        limit(high=STREAM_WRITE_BUFFER)
    extra = getattr(transport, "get_extra_info", None)
    sock = extra("socket") if callable(extra) else None
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)


class Direct:
    """The server's own `send` and `receive`, and the body an event stream leaves to be
    written once the middleware has returned."""

    __slots__ = ("body", "receive", "send")

    def __init__(self, send: Send, receive: Receive) -> None:
        self.send = send
        self.receive = receive
        self.body: Callable[[], Awaitable[None]] | None = None


class DirectBody:
    """The outermost ASGI layer. It leaves the server's `send` and `receive` in the scope
    (`Direct`): an event stream writes its body past the middleware wrappers, which act on
    the response's start and never on body chunks. And once the request has passed every
    layer and its headers went out, the stream's body runs here, after the layers returned
    (each counted and logged the request as answered, with its status)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        direct = scope[DIRECT] = Direct(send, receive)
        await self.app(scope, receive, send)
        body, direct.body = direct.body, None
        if body is not None:
            await body()


class StreamRegistry:
    """Every open stream, so that shutdown can end them (clients reconnect elsewhere), and
    by session, so that a revoked session's streams end at once."""

    def __init__(self, revoked: RevokedSessions | None = None) -> None:
        self._open: set[EventStream] = set()
        self._by_session: dict[str, set[EventStream]] = {}
        self.closing = False
        self.revoked = revoked
        if revoked is not None:
            revoked.listen(self.end_session)
        # Streams in the middle of a write, since when (monotonic seconds). One watchdog task
        # enforces every write's deadline: a deadline object per write cost a timer per
        # client per push.
        self.writing: dict[EventStream, float] = {}
        # Streams whose heartbeats the watchdog times (price streams: they never wait with
        # a timeout of their own).
        self._paced: set[EventStream] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def add(self, stream: EventStream) -> None:
        self._open.add(stream)
        if stream.paced_heartbeats:
            self._paced.add(stream)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(stream.settings))
        if stream.session:
            self._by_session.setdefault(stream.session, set()).add(stream)
            # Revoked between the token check and now: ends at once.
            if self.revoked is not None and stream.session in self.revoked:
                self.end_session(stream.session)

    def discard(self, stream: EventStream) -> None:
        self._open.discard(stream)
        self._paced.discard(stream)
        self.writing.pop(stream, None)
        held = self._by_session.get(stream.session)
        if held is not None:
            held.discard(stream)
            if not held:
                del self._by_session[stream.session]

    def end_session(self, session: str) -> None:
        """End the streams of a revoked session; each tells its client why, detail-free."""
        for stream in list(self._by_session.get(session, ())):
            DROPPED.labels(stream.kind, "revoked").inc()
            stream.revoked = True
            stream.close()

    def close_all(self) -> None:
        self.closing = True
        for stream in list(self._open):
            stream.close()

    async def _watch(self, settings: StreamSettings) -> None:
        """Drop a stream whose write has waited past the deadline (its task is cancelled and
        its `write` turns that into SlowConsumer); wake paced streams that owe a heartbeat.
        Runs while streams are open; the deadline holds to within a twentieth of itself."""
        deadline, heartbeat = settings.write_timeout_seconds, settings.heartbeat_seconds
        period = min(deadline, heartbeat) / 20
        try:
            while self._open:
                await asyncio.sleep(period)
                now = time.monotonic()
                for stream, since in list(self.writing.items()):
                    if now - since > deadline:
                        stream.stall()
                for stream in self._paced:
                    if now - stream.last_write >= heartbeat:
                        stream.owe_heartbeat()
        finally:
            self._watchdog = None

    def __len__(self) -> int:
        return len(self._open)


class EventStream(Response):
    kind = "stream"

    def __init__(
        self,
        settings: StreamSettings,
        registry: StreamRegistry,
        on_close: Callable[[], None],
        wake: asyncio.Event | None = None,
    ) -> None:
        super().__init__(status_code=200, headers=HEADERS, media_type="text/event-stream")
        # A stream has no length: Response would announce an empty body.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.settings = settings
        self.registry = registry
        self.on_close = on_close
        self.gone = False
        self.gone_by_client = False
        self.wake = wake or asyncio.Event()
        # The session the stream was opened in, and whether it ended because it was revoked.
        self.session = ""
        self.revoked = False
        self.task: asyncio.Task[Any] | None = None
        self.stalled = False
        self.last_write = time.monotonic()

    # Whether the registry's watchdog times this stream's heartbeats (see `owe_heartbeat`).
    paced_heartbeats = False

    def close(self) -> None:
        self.gone = True
        self.wake.set()

    def stall(self) -> None:
        """The watchdog's verdict on a write past its deadline: interrupt it."""
        if not self.stalled and self.task is not None:
            self.stalled = True
            self.task.cancel()

    def owe_heartbeat(self) -> None:
        """Nothing written for a heartbeat interval (paced streams only)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
        except BaseException:
            self.cleanup()
            self.on_close()
            raise
        # The headers went through every middleware. The body goes straight to the server's
        # `send` when the edge left it in the scope: the wrappers only pass body chunks on,
        # and that cost a quarter of a price push. It is written once the middleware has
        # returned, in this request's context (its id is on the stream's log lines).
        direct: Direct | None = scope.get(DIRECT)
        if direct is None:
            await self._body(send, receive)
            return
        bound = context.current()

        async def body() -> None:
            token = context.set_current(bound)
            try:
                await self._body(direct.send, direct.receive)
            except Exception:
                # The headers are out: nothing to answer, the stream just ends.
                DROPPED.labels(self.kind, "failed").inc()
                log.exception("event stream failed", extra={"stream": self.kind})
            finally:
                context.reset(token)

        direct.body = body

    async def _body(self, send: Send, receive: Receive) -> None:
        self.task = asyncio.current_task()
        self.registry.add(self)
        OPEN_STREAMS.labels(self.kind).inc()
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        finished = False
        try:
            _hold_less(send)
            await self.write(send, sse.retry(self.settings.retry_ms))
            await self.run(send)
            finished = True
        except SlowConsumer:
            DROPPED.labels(self.kind, "slow_consumer").inc()
            log.info("dropping a slow stream client", extra={"stream": self.kind})
            await self._tell(send, "SLOW_CONSUMER", "the client did not read fast enough; reconnect")
        finally:
            watcher.cancel()
            self.registry.discard(self)
            OPEN_STREAMS.labels(self.kind).dec()
            self.cleanup()
            self.on_close()
        if self.revoked and not self.gone_by_client:
            await self._tell(send, "UNAUTHENTICATED", REFUSED_MESSAGE)
        elif finished and not self.gone_by_client:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TELL_TIMEOUT):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch_disconnect(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone_by_client = True
                self.close()
                return

    async def write(self, send: Send, data: bytes) -> None:
        writing = self.registry.writing
        self.last_write = writing[self] = time.monotonic()
        try:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        except asyncio.CancelledError:
            # Cancelled by the watchdog (and by nothing else): a slow consumer.
            if self.stalled and self.task is not None and self.task.uncancel() == 0:
                raise SlowConsumer from None
            raise
        finally:
            writing.pop(self, None)

    async def wait_for_wake(self) -> bool:
        """True when woken, False after a heartbeat interval of quiet."""
        try:
            async with asyncio.timeout(self.settings.heartbeat_seconds):
                await self.wake.wait()
        except TimeoutError:
            return False
        return True

    async def _tell(self, send: Send, reason: str, detail: str) -> None:
        frame = sse.event(sse.STREAM_ERROR, dumps({"reason": reason, "detail": detail}).decode())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_TELL_TIMEOUT):
                await send({"type": "http.response.body", "body": frame, "more_body": False})

    async def run(self, send: Send) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Release what the stream holds (called once, however it ended)."""


class MarketStream(EventStream):
    """Conflated price ticks of a fixed set of symbols."""

    kind = "marketdata"

    def __init__(
        self,
        subscription: QuoteSubscription,
        hub: QuoteHub,
        settings: StreamSettings,
        registry: StreamRegistry,
        on_close: Callable[[], None],
    ) -> None:
        # The hub wakes the subscription; so do disconnects, shutdown and the watchdog.
        super().__init__(settings, registry, on_close, subscription.wake)
        self.subscription = subscription
        self.hub = hub
        self.heartbeat_due = False

    paced_heartbeats = True

    def close(self) -> None:
        self.gone = True
        self.subscription.close()

    def owe_heartbeat(self) -> None:
        self.heartbeat_due = True
        self.wake.set()

    async def run(self, send: Send) -> None:
        # Pacing and conflation happen in the hub's push stage: here, only write what it
        # handed over, and a heartbeat when the watchdog says nothing went out for a while.
        subscription = self.subscription
        frames = FRAMES.labels(self.kind)
        while not (self.gone or subscription.closed):
            if not subscription.pending:
                await self.wake.wait()
            if self.gone or subscription.closed:
                return
            chunks = subscription.take()
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                await self.write(send, data)
                frames.inc(data.count(b"\n\n"))
            elif self.heartbeat_due:
                await self.write(send, self.hub.heartbeat_frame())
            self.heartbeat_due = False

    def cleanup(self) -> None:
        self.hub.unsubscribe(self.subscription)


class RelayStream(EventStream):
    """Relays a gRPC server stream: each response becomes SSE frames (`frames`), which wait
    in a small bounded queue whose fullness pushes back on the gRPC stream (HTTP/2 flow
    control), not on anyone else."""

    def __init__(
        self,
        events: AsyncIterator[Any],
        first: asyncio.Future[Any],
        settings: StreamSettings,
        registry: StreamRegistry,
        on_close: Callable[[], None],
    ) -> None:
        super().__init__(settings, registry, on_close)
        self.events = events
        self.first = first
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_ORDER_QUEUE)
        self.pump: asyncio.Task[None] | None = None

    def frames(self, event: Any) -> list[bytes]:
        raise NotImplementedError

    def heartbeat(self) -> bytes:
        return sse.comment("hb")

    async def _pump(self) -> None:
        try:
            event = await self.first
            while True:
                for frame in self.frames(event):
                    await self.queue.put(frame)
                self.wake.set()
                event = await anext(self.events)
        except StopAsyncIteration:
            pass
        except BackendError as error:
            problem = problem_from_details(error.details)
            await self.queue.put(
                sse.event(
                    sse.STREAM_ERROR, dumps({"reason": problem.reason, "detail": problem.detail}).decode()
                )
            )
        await self.queue.put(_END)
        self.wake.set()

    async def run(self, send: Send) -> None:
        self.pump = asyncio.create_task(self._pump())
        while not self.gone:
            if self.queue.empty() and not await self.wait_for_wake():
                await self.write(send, self.heartbeat())
                continue
            self.wake.clear()
            frames: list[bytes] = []
            ended = False
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is _END:
                    ended = True
                    break
                frames.append(item)
            if frames and not self.gone:
                await self.write(send, b"".join(frames))
                FRAMES.labels(self.kind).inc(len(frames))
            if ended:
                # The source ended (its service restarting, or shutting down): the client
                # reconnects (order streams with Last-Event-ID, and miss nothing).
                return

    def cleanup(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        # Cancelling whoever is reading the gRPC stream cancels the call itself.
        if not self.first.done():
            self.first.cancel()


class OrderStream(RelayStream):
    """The user's order events, each with `id:` for Last-Event-ID replay."""

    kind = "orders"

    def frames(self, event: orders_pb2.OrderEvent) -> list[bytes]:
        return [sse.event(sse.ORDER_UPDATE, dumps(order_event_json(event)).decode(), event_id=event.event_id)]


class MarketValueStream(RelayStream):
    """One instrument's depth or forming candle (svc_marketdata's StreamMarketDepth or
    StreamCandles, already conflated there), with the feed's status: a `feed_status` event
    first and when the state changes, `heartbeat` events otherwise."""

    kind = "market_values"

    def __init__(self, event_name: str, to_json: Callable[[Any], list[dict[str, Any]]], *args: Any) -> None:
        super().__init__(*args)
        self.event_name = event_name
        self.to_json = to_json
        self.state = ""

    def frames(self, response: Any) -> list[bytes]:
        out = [sse.event(self.event_name, dumps(item).decode()) for item in self.to_json(response)]
        if response.HasField("feed_status"):
            status = response.feed_status
            state = "LIVE" if status.state == marketdata_pb2.FeedStatus.STATE_LIVE else "STALE"
            stale_since = status.stale_since.ToJsonString() if status.HasField("stale_since") else ""
            server_time = status.server_time.ToJsonString()
            if state != self.state:
                out.append(sse.feed_status(state, stale_since, server_time, status.last_sequence))
            elif not out:
                out.append(sse.heartbeat(state, server_time, status.last_sequence))
            self.state = state
        return out


class AlertStream(OrderStream):
    """The user's fired price alerts, each with `id:` for Last-Event-ID replay."""

    kind = "alerts"

    def frames(self, event: Any) -> list[bytes]:
        return [sse.event(sse.ALERT_FIRED, dumps(alert_json(event.alert)).decode(), event_id=event.event_id)]
