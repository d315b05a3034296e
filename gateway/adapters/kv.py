"""A NATS KV bucket the gateway opens in the background (the REST API works meanwhile) and
shares between its processes; made on first use with the given retention."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from gateway.adapters.ticks import retrying, stopped
from svc_runtime import messaging

log = logging.getLogger(__name__)


class BackgroundBucket:
    def __init__(self, nats_url: str, bucket: str, *, description: str, ttl_seconds: float) -> None:
        self.nats_url = nats_url
        self.bucket = bucket
        self.description = description
        self.ttl_seconds = ttl_seconds
        self._nc: NatsClient | None = None
        self.kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.bucket)

    async def _run(self) -> None:
        what = self.description
        self._nc = nc = await retrying(
            what, lambda: messaging.connect(self.nats_url, f"gateway-{self.bucket}")
        )
        self.kv = await retrying(
            what,
            lambda: messaging.ensure_kv_bucket(nc.jetstream(), self.bucket, what, self.ttl_seconds),
        )
        log.info("%s ready", what, extra={"bucket": self.bucket})

    @property
    def ready(self) -> bool:
        return self.kv is not None and self._nc is not None and self._nc.is_connected

    async def stop(self) -> None:
        await stopped(self._task, self._nc)
