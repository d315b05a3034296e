"""Ticks on core NATS, and the latest quotes in a JetStream KV bucket.

Core NATS (not JetStream) for ticks: a quote is the symbol's full latest state, so a lost
message is repaired by the next one, and publishing never waits for storage. A TickBatch is
written by concatenating already-encoded quotes as field 1 — byte for byte what protobuf
would produce for `TickBatch(quotes=[…])` — so each quote is encoded once per flush however
many consumers receive it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from brokermesh.marketdata.v1 import marketdata_pb2, tick_pb2
from svc_marketdata.app.market import MarketData
from svc_marketdata.domain.quotes import Quote
from svc_marketdata.transport.wire import decode_quote, repeated_field
from svc_runtime import messaging
from svc_runtime.messaging import TYPE_HEADER, Topology

log = logging.getLogger(__name__)

TICK_BATCH_TYPE = "brokermesh.marketdata.v1.TickBatch"
_HEADERS = {TYPE_HEADER: TICK_BATCH_TYPE}


class NatsTickPublisher:
    def __init__(self, nc: NatsClient, topology: Topology) -> None:
        self.nc = nc
        self.topology = topology

    async def publish(self, shard: str, encoded_quotes: Sequence[bytes]) -> None:
        payload = repeated_field(1, encoded_quotes)
        await self.nc.publish(self.topology.tick_subject(shard), payload, headers=_HEADERS)

    async def publish_status(self, encoded_status: bytes) -> None:
        # TickBatch.feed_status (field 2) alone: a heartbeat in the ticks' own message type,
        # on the same connection, so subscribers get it in order with the ticks.
        payload = repeated_field(2, (encoded_status,))
        await self.nc.publish(self.topology.feed_status_subject, payload, headers=_HEADERS)


FOLLOW_FAILURES = Counter(
    "marketdata_followed_batches_rejected_total", "Followed TickBatches a standby could not read"
)


async def follow_ticks(nc: NatsClient, topology: Topology, market: MarketData) -> Subscription:
    """A standby's subscription to every tick shard and the feed status (see
    `MarketData.follow_ticks`); the holder's own ticks come back too and are ignored there."""

    async def on_batch(msg: Msg) -> None:
        if market.holding.is_set():
            return
        try:
            batch = tick_pb2.TickBatch.FromString(msg.data)
            quotes = [(decode_quote(raw := q.SerializeToString()), raw) for q in batch.quotes]
        except Exception:
            FOLLOW_FAILURES.inc()
            log.warning("followed tick batch not readable", exc_info=True, extra={"subject": msg.subject})
            return
        market.follow_ticks(quotes)
        if batch.HasField("feed_status"):
            status = batch.feed_status
            market.follow_status(
                status.SerializeToString(), live=status.state == marketdata_pb2.FeedStatus.STATE_LIVE
            )

    return await nc.subscribe(topology.all_ticks_subject, cb=on_batch)


async def open_bucket(js: JetStreamContext, name: str, *, description: str) -> KeyValue:
    """The KV bucket `name`, created on first use (history 1: only the latest value matters;
    compare-and-set works on the latest revision)."""
    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(
                bucket=name,
                description=description,
                history=1,
                storage=StorageType.FILE,
                replicas=messaging.replicas_from_env(),
            )
        )


class KvQuoteSnapshots:
    """Latest quote per symbol in `topology.quotes_bucket`, key `Topology.quote_key(symbol)`.

    Writes are plain publishes on the bucket's subjects (`$KV.{bucket}.{key}`), which the KV
    stream stores like any put, without waiting for an acknowledgement: a snapshot lost now
    is rewritten a second later, and waiting for hundreds of acks a second would cost the
    feed more than the snapshot is worth."""

    def __init__(self, kv: KeyValue, nc: NatsClient, bucket: str, *, concurrency: int = 64) -> None:
        self.kv = kv
        self.nc = nc
        self.prefix = f"$KV.{bucket}."
        self.concurrency = concurrency

    async def load(self) -> list[Quote]:
        quotes = []
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return []
        for start in range(0, len(keys), self.concurrency):
            entries = await asyncio.gather(*(self.kv.get(k) for k in keys[start : start + self.concurrency]))
            quotes.extend(decode_quote(e.value) for e in entries if e.value)
        return quotes

    async def save(self, encoded: dict[str, bytes]) -> None:
        for symbol, value in encoded.items():
            await self.nc.publish(self.prefix + Topology.quote_key(symbol), value)
