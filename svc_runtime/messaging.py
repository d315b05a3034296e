"""NATS: the subject and stream topology shared by all services, publishing with dedup ids
and request ids, and durable consumers that acknowledge only after their work commits.

When tracing is on, a message that continues a trace carries the `traceparent` of a producer
span, and a durable consumer processes it inside a consumer span, child of that one.

A publisher may carry several messages in one `MessageBatch` (`batch_of`): the stream stores,
and the consumer fetches and acknowledges, one message for all of them. A durable consumer
unpacks it (`unpack`) and its handler sees each carried message as if it had come alone.

A namespace prefixes every stream and subject, so several stacks (tests, benchmarks) can
share one NATS server without seeing each other's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import nats
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from brokermesh.type.v1.message_batch_pb2 import MessageBatch
from svc_runtime import config as settings
from svc_runtime import context, tracing

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
TYPE_HEADER = "Bm-Type"
BATCH_TYPE = MessageBatch.DESCRIPTOR.full_name
DAY = 24 * 3600
# Tick subjects are sharded by a stable hash of the symbol (see `Topology.tick_shard`). Publisher
# and consumers must agree on this number, so it is a constant rather than a setting.
TICK_SHARDS = 16


@dataclass(frozen=True)
class Topology:
    """Every stream, subject and bucket name, derived from one namespace."""

    namespace: str = "bm"
    # Copies of every stream and bucket (see `replicas_from_env`).
    replicas: int = 1

    @classmethod
    def from_env(cls, namespace: str) -> Topology:
        """The topology of `namespace`, stored with as many replicas as the cluster has."""
        return cls(namespace, replicas=replicas_from_env())

    @property
    def _stream_prefix(self) -> str:
        return self.namespace.upper()

    # Order commands: svc_orders → svc_exec. Work-queue retention: a command is removed once
    # the executor acknowledges it, and nothing is discarded unconsumed.
    @property
    def order_commands_stream(self) -> str:
        return f"{self._stream_prefix}_ORDER_COMMANDS"

    def order_command_subject(self, kind: str) -> str:
        return f"{self.namespace}.orders.command.{kind}"

    # Order events: svc_orders → its replicas' order streams (gRPC, SSE). Core NATS, not
    # stored: a stream replays from PostgreSQL's order events, then follows these.
    def order_event_subject(self, user_id: str) -> str:
        return f"{self.namespace}.orders.live.{user_id}"

    def previous_order_event_subject(self, user_id: str) -> str:
        """Where replicas of the previous version publish order events (a stream of their
        own, ORDER_EVENTS, that nothing reads) while a rolling upgrade replaces them."""
        return f"{self.namespace}.orders.event.{user_id}"

    # Execution reports: svc_exec → svc_orders and svc_funds (each its own durable consumer).
    @property
    def exec_reports_stream(self) -> str:
        return f"{self._stream_prefix}_EXEC_REPORTS"

    def exec_report_subject(self, user_id: str) -> str:
        return f"{self.namespace}.exec.report.{user_id}"

    @property
    def exec_report_batch_subject(self) -> str:
        """Where svc_exec publishes several reports as one `MessageBatch` (no user id has
        this form: ids are a prefix, `_` and 26 characters)."""
        return self.exec_report_subject("_batch")

    # Ticks: svc_marketdata → gateways and quote streams. Core NATS: latest value wins, a
    # missed tick is superseded by the next one.
    def tick_subject(self, shard: str) -> str:
        return f"{self.namespace}.md.ticks.{shard}"

    @staticmethod
    def tick_shard(symbol: str) -> str:
        """The shard a symbol's ticks travel on: CRC-32 of the symbol modulo `TICK_SHARDS`,
        stable across processes and restarts (unlike Python's salted `hash`)."""
        return f"{zlib.crc32(symbol.encode()) % TICK_SHARDS:02d}"

    def tick_subject_for(self, symbol: str) -> str:
        return self.tick_subject(self.tick_shard(symbol))

    def tick_subjects_for(self, symbols: Iterable[str]) -> list[str]:
        """The few subjects to subscribe to for ticks of `symbols` (each subject once, sorted).
        A subscriber still filters by symbol: a shard carries other symbols too."""
        return sorted({self.tick_subject_for(symbol) for symbol in symbols})

    @property
    def feed_status_subject(self) -> str:
        """svc_marketdata's heartbeat: a TickBatch carrying only the exchange feed's status.
        Matched by `all_ticks_subject`, so a consumer of every tick gets it too."""
        return f"{self.namespace}.md.ticks.status"

    @property
    def all_ticks_subject(self) -> str:
        """Every tick shard, for consumers that want all symbols."""
        return f"{self.namespace}.md.ticks.*"

    def kv_bucket(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    # Latest quotes: svc_marketdata keeps each symbol's latest `brokermesh.marketdata.v1.Quote`
    # (serialized) in this KV bucket under `quote_key(symbol)`, so a consumer can start from a
    # snapshot and then follow the tick subjects (newer `Quote.sequence` wins).
    @property
    def quotes_bucket(self) -> str:
        return self.kv_bucket("quotes")

    @staticmethod
    def quote_key(symbol: str) -> str:
        """A KV-safe key for a symbol: characters KV keys cannot hold (`&` in `M&M`, `.`) are
        written `=XX` (hex)."""
        return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else f"={ord(c):02X}" for c in symbol)

    def wildcard(self, subject: str) -> str:
        """`{ns}.orders.event.u_1` → `{ns}.orders.event.>`."""
        return subject.rsplit(".", 1)[0] + ".>"

    def streams(self) -> list[StreamConfig]:
        common = {"storage": StorageType.FILE, "num_replicas": self.replicas, "duplicate_window": 120.0}
        return [
            StreamConfig(
                name=self.order_commands_stream,
                subjects=[self.wildcard(self.order_command_subject("x"))],
                retention=RetentionPolicy.WORK_QUEUE,
                discard=DiscardPolicy.NEW,
                max_age=7 * DAY,
                **common,
            ),
            StreamConfig(
                name=self.exec_reports_stream,
                subjects=[self.wildcard(self.exec_report_subject("x"))],
                retention=RetentionPolicy.LIMITS,
                # Never drop a report nobody has consumed: refuse new ones instead, loudly.
                discard=DiscardPolicy.NEW,
                max_age=30 * DAY,
                **common,
            ),
        ]

    def stored(self, subject: str) -> bool:
        """Whether a stream of the topology keeps messages published on `subject` (a
        JetStream publish on any other subject has no stream to answer it)."""
        return subject.startswith(self._stored_prefixes)

    @functools.cached_property
    def _stored_prefixes(self) -> tuple[str, ...]:
        # Every stream subject is a `prefix.>` wildcard.
        return tuple(pattern.removesuffix(">") for s in self.streams() for pattern in s.subjects or ())


def replicas_from_env() -> int:
    """BROKERMESH_NATS_REPLICAS: the JetStream cluster's size (1 for a single server)."""
    return max(1, settings.env_int(settings.NATS_REPLICAS, 1))


def servers(url: str) -> list[str]:
    """`nats://h1:p1,nats://h2:p2` (a cluster's seed list) → one URL per server."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect(url: str, name: str) -> NatsClient:
    async def on_error(exc: Exception) -> None:
        log.warning("nats error", extra={"error": repr(exc)})

    return await nats.connect(
        servers(url),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
    )


async def ensure_kv_bucket(
    js: JetStreamContext,
    bucket: str,
    description: str,
    ttl_seconds: float,
    *,
    storage: StorageType = StorageType.FILE,
) -> KeyValue:
    """The KV bucket `bucket`, made (one value per key, on disk unless `storage` says memory,
    keys forgotten after `ttl_seconds`, as many copies as the cluster's size) if it does not
    exist yet."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                description=description,
                history=1,
                ttl=ttl_seconds,
                storage=storage,
                replicas=replicas_from_env(),
            )
        )


async def ensure_streams(js: JetStreamContext, topology: Topology) -> None:
    """Create or update every stream of the topology (idempotent; every service calls it)."""
    for config in topology.streams():
        try:
            await js.stream_info(config.name)
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)


def headers_for(message: Message, msg_id: str, subject: str = "") -> dict[str, str]:
    current = context.current()
    headers = {
        MSG_ID_HEADER: msg_id,
        context.REQUEST_ID_HEADER: current.request_id or context.new_request_id(),
        TYPE_HEADER: message.DESCRIPTOR.full_name,
    }
    if current.traceparent:
        traced(headers, subject, current.traceparent)
    return headers


def traced(headers: dict[str, str], subject: str, parent: str = "") -> dict[str, str]:
    """`headers` with the `traceparent` of a producer span for the message, when it continues
    a trace (`parent`, or the request context's). Messages outside any trace carry none.
    While tracing is off, a caller's traceparent is passed on as it came."""
    parent = parent or context.current().traceparent
    if parent:
        with tracing.span(
            f"publish {subject}",
            kind="producer",
            parent=parent,
            attributes={
                "messaging.destination.name": subject,
                "messaging.message.id": headers[MSG_ID_HEADER],
            },
        ) as sent:
            headers[context.TRACEPARENT] = sent.traceparent or parent
    return headers


async def publish(js: JetStreamContext, subject: str, message: Message, msg_id: str) -> None:
    """Publish with a dedup id; a missing ack raises, and the caller retries with the same id."""
    await js.publish(subject, message.SerializeToString(), headers=headers_for(message, msg_id, subject))


def batch_of(items: Sequence[tuple[str, bytes, dict[str, str]]]) -> tuple[bytes, dict[str, str]]:
    """`items` (subject, payload, headers) as one `MessageBatch` payload and its headers. Its
    `Nats-Msg-Id` is derived from the items' ids: the same items published again as one
    batch are deduplicated by the stream like a single message."""
    batch = MessageBatch()
    digest = hashlib.sha256()
    for subject, data, headers in items:
        batch.messages.add(subject=subject, headers=headers, data=data)
        digest.update(headers.get(MSG_ID_HEADER, "").encode())
        digest.update(b"\n")
    headers = {MSG_ID_HEADER: f"batch-{digest.hexdigest()[:32]}", TYPE_HEADER: BATCH_TYPE}
    return batch.SerializeToString(), headers


def batched_ids(msg: Msg) -> list[str]:
    """The `Nats-Msg-Id`s of the messages `msg` carries (itself, unless it is a batch)."""
    return [(m.headers or {}).get(MSG_ID_HEADER, "") for m in unpack(msg)]


def unpack(msg: Msg) -> list[Msg]:
    """The messages `msg` carries: each message of a `MessageBatch`, else `msg` itself. A
    carried message shares the batch's reply subject, hence its JetStream metadata (stream
    sequence, deliveries); it is acknowledged through the batch, never by itself. A batch
    that cannot be read is returned as it is, for its consumer to report as unreadable."""
    headers = msg.headers
    if not headers or headers.get(TYPE_HEADER) != BATCH_TYPE:
        return [msg]
    try:
        batch = MessageBatch.FromString(msg.data)
    except DecodeError:
        return [msg]
    return [
        dataclasses.replace(msg, subject=m.subject, data=m.data, headers=dict(m.headers))
        for m in batch.messages
    ]


def request_context_of(msg: Msg) -> context.RequestContext:
    headers = msg.headers or {}
    return context.RequestContext(
        request_id=headers.get(context.REQUEST_ID_HEADER) or context.new_request_id(),
        traceparent=context.safe_traceparent(headers.get(context.TRACEPARENT, "")),
    )


@contextlib.contextmanager
def consumer_spans(msgs: Sequence[Msg], consumer: str) -> Iterator[None]:
    """A consumer span for each traced message of a batch, open while the batch is handled.
    Each message's `traceparent` header is made to name its consumer span, so the request
    context a handler restores from it (`request_context_of`) continues the trace there."""
    outer = context.current().traceparent
    with contextlib.ExitStack() as spans:
        for msg in msgs:
            headers = msg.headers
            parent = context.safe_traceparent(headers.get(context.TRACEPARENT, "")) if headers else ""
            if not parent or headers is None:
                continue
            span = spans.enter_context(
                tracing.span(
                    f"process {msg.subject}",
                    kind="consumer",
                    parent=parent,
                    attributes={
                        "messaging.destination.name": msg.subject,
                        "messaging.consumer.group.name": consumer,
                        "messaging.message.id": headers.get(MSG_ID_HEADER, ""),
                        tracing.REQUEST_ID_ATTRIBUTE: headers.get(context.REQUEST_ID_HEADER, ""),
                    },
                )
            )
            headers[context.TRACEPARENT] = span.traceparent
        # The batch as a whole belongs to no one message's trace.
        spans.enter_context(context.bind(traceparent=outer))
        yield


M = TypeVar("M", bound=Message)


def decode(msg: Msg, message_type: type[M]) -> M:
    message = message_type()
    message.ParseFromString(msg.data)
    return message


BatchHandler = Callable[[Sequence[Msg]], Awaitable[None]]
# How long a non-lingering consumer waits for messages beyond the first: enough for the
# server's answer to a no-wait pull on a local network.
_DRAIN_TIMEOUT = 0.001


class DurableConsumer:
    """Pulls batches from a durable JetStream consumer and acknowledges each batch only
    after `handler` returns, i.e. after the handler's database transaction committed.

    A failing batch is retried message by message so that one poison message cannot stall
    the rest; a message that keeps failing is redelivered with backoff and, after
    `max_deliver` attempts, left to the handler's dead-letter policy (it is terminated and
    logged at error level with its stream sequence, never silently dropped).

    `linger`: a fetch that starts on an empty stream waits, once the first message is in,
    for a full batch or `fetch_timeout` (nats-py's pull semantics): big batches, but up to
    `fetch_timeout` of added latency at low rates. `linger=False` hands the first message
    over at once with whatever else is already waiting (still up to `batch_size`).
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        handler: BatchHandler,
        batch_size: int = 256,
        ack_wait: float = 30.0,
        max_deliver: int = 20,
        fetch_timeout: float = 1.0,
        linger: bool = True,
    ) -> None:
        self.js = js
        self.stream = stream
        self.durable = durable
        self.filter_subject = filter_subject
        self.handler = handler
        self.batch_size = batch_size
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.fetch_timeout = fetch_timeout
        self.linger = linger
        self._stopped = asyncio.Event()

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=self.filter_subject,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=max(1000, self.batch_size * 4),
        )
        return await self.js.pull_subscribe(
            self.filter_subject, durable=self.durable, stream=self.stream, config=config
        )

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        subscription = await self._subscribe()
        while not self._stopped.is_set():
            try:
                msgs = await self._fetch(subscription)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception:  # connection trouble: the client reconnects on its own
                log.warning("fetch failed", exc_info=True, extra={"consumer": self.durable})
                await asyncio.sleep(0.5)
                continue
            await self._process(msgs)

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        if self.linger or self.batch_size == 1:
            return await subscription.fetch(self.batch_size, timeout=self.fetch_timeout)
        # Wait for one message, then take only what is already there (a no-wait pull).
        msgs = await subscription.fetch(1, timeout=self.fetch_timeout)
        with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
            msgs += await subscription.fetch(self.batch_size - 1, timeout=_DRAIN_TIMEOUT)
        return msgs

    async def _process(self, msgs: Sequence[Msg]) -> None:
        carried = [unpack(msg) for msg in msgs]
        if tracing.enabled():
            with consumer_spans([m for group in carried for m in group], self.durable):
                await self._handle(msgs, carried)
        else:
            await self._handle(msgs, carried)

    async def _handle(self, msgs: Sequence[Msg], carried: Sequence[list[Msg]]) -> None:
        """Hands every carried message to the handler at once; on failure, one at a time,
        acknowledging each fetched message whose carried messages all succeeded."""
        items = [m for group in carried for m in group]
        try:
            await self.handler(items)
        except Exception as error:
            if len(items) == 1:
                await self._failed(msgs[0], error)
                return
            log.warning("batch failed; retrying one by one", exc_info=True, extra={"consumer": self.durable})
            for msg, group in zip(msgs, carried, strict=True):
                failure = await self._one_by_one(group)
                if failure is not None:
                    await self._failed(msg, failure)
                else:
                    await msg.ack()
            return
        for msg in msgs:
            await msg.ack()

    async def _one_by_one(self, group: Sequence[Msg]) -> Exception | None:
        """Handles each message alone (what succeeds is committed: handlers are idempotent);
        returns the last failure, if any."""
        failure: Exception | None = None
        for item in group:
            try:
                await self.handler([item])
            except Exception as error:
                failure = error
        return failure

    async def _failed(self, msg: Msg, error: Exception) -> None:
        delivered = msg.metadata.num_delivered if msg.metadata else 1
        if delivered >= self.max_deliver:
            log.error(
                "message failed on every delivery; terminating it",
                exc_info=error,
                extra={
                    "consumer": self.durable,
                    "stream_seq": msg.metadata.sequence.stream if msg.metadata else None,
                    "subject": msg.subject,
                },
            )
            await msg.term()
            return
        log.warning("message failed; will be redelivered", exc_info=error, extra={"consumer": self.durable})
        await msg.nak(delay=min(30.0, 0.2 * 2 ** min(delivered, 8)))
