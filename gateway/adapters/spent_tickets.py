"""Spent stream tickets in a NATS KV bucket, shared by every gateway process.

Spending is `create(ticket_id)`: JetStream accepts it only while the key does not exist,
so of any number of processes racing on one ticket exactly one wins. The bucket forgets a
key after `SPENT_RECORD_SECONDS`, long after the ticket itself has expired. While NATS
cannot be reached, nothing is spent and tickets are refused with 503 (fail closed): a
ticket must never work twice because the record was out of reach.
"""

from __future__ import annotations

import logging

import nats.errors
from nats.js.errors import KeyWrongLastSequenceError

from gateway.adapters.kv import BackgroundBucket
from gateway.domain.tickets import SPENT_RECORD_SECONDS
from svc_runtime import aio, messaging
from svc_runtime.errors import Unavailable

log = logging.getLogger(__name__)

SPEND_TIMEOUT_SECONDS = 2.0


class NatsSpentTickets:
    def __init__(self, nats_url: str, topology: messaging.Topology) -> None:
        self.record = BackgroundBucket(
            nats_url,
            topology.kv_bucket("stream_tickets"),
            description="spent stream tickets (gateway)",
            ttl_seconds=SPENT_RECORD_SECONDS,
        )
        self.bucket = self.record.bucket

    def start(self) -> None:
        """Connect in the background, like the tick feed: the REST API works meanwhile."""
        self.record.start()

    @property
    def ready(self) -> bool:
        return self.record.ready

    async def spend(self, ticket_id: str) -> bool:
        kv = self.record.kv
        if kv is None or not self.ready:
            raise Unavailable("stream tickets cannot be checked now; retry", retry_after_seconds=1)
        try:
            await aio.within(kv.create(ticket_id, b""), SPEND_TIMEOUT_SECONDS)
        except KeyWrongLastSequenceError:
            return False
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("stream ticket record failed", extra={"error": repr(exc)})
            raise Unavailable("stream tickets cannot be checked now; retry", retry_after_seconds=1) from None
        return True

    async def stop(self) -> None:
        await self.record.stop()
