"""Spent stream tickets in a NATS KV bucket, shared by every gateway process.

Spending is `create(ticket_id)`: JetStream accepts it only while the key does not exist,
so of any number of processes racing on one ticket exactly one wins. The bucket forgets a
key after `SPENT_RECORD_SECONDS`, long after the ticket itself has expired. While NATS
cannot be reached, nothing is spent and tickets are refused with 503 (fail closed): a
ticket must never work twice because the record was out of reach.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from gateway.adapters.ticks import retrying, stopped
from gateway.domain.tickets import SPENT_RECORD_SECONDS
from svc_runtime import messaging
from svc_runtime.errors import Unavailable

log = logging.getLogger(__name__)

SPEND_TIMEOUT_SECONDS = 2.0


class NatsSpentTickets:
    def __init__(self, nats_url: str, topology: messaging.Topology) -> None:
        self.nats_url = nats_url
        self.bucket = topology.kv_bucket("stream_tickets")
        self._nc: NatsClient | None = None
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Connect in the background, like the tick feed: the REST API works meanwhile."""
        self._task = asyncio.create_task(self._run(), name="spent-tickets")

    async def _run(self) -> None:
        self._nc = nc = await retrying(
            "stream ticket record", lambda: messaging.connect(self.nats_url, "gateway-tickets")
        )
        self._kv = await retrying("stream ticket record", lambda: self._open(nc.jetstream()))
        log.info("stream ticket record ready", extra={"bucket": self.bucket})

    async def _open(self, js: JetStreamContext) -> KeyValue:
        try:
            return await js.key_value(self.bucket)
        except BucketNotFoundError:
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=self.bucket,
                    description="spent stream tickets (gateway)",
                    history=1,
                    ttl=SPENT_RECORD_SECONDS,
                    storage=StorageType.FILE,
                )
            )

    @property
    def ready(self) -> bool:
        return self._kv is not None and self._nc is not None and self._nc.is_connected

    async def spend(self, ticket_id: str) -> bool:
        kv = self._kv
        if kv is None or not self.ready:
            raise Unavailable("stream tickets cannot be checked now; retry", retry_after_seconds=1)
        try:
            await asyncio.wait_for(kv.create(ticket_id, b""), SPEND_TIMEOUT_SECONDS)
        except KeyWrongLastSequenceError:
            return False
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("stream ticket record failed", extra={"error": repr(exc)})
            raise Unavailable("stream tickets cannot be checked now; retry", retry_after_seconds=1) from None
        return True

    async def stop(self) -> None:
        await stopped(self._task, self._nc)
