"""A NATS KV bucket the gateway opens in the background (the REST API works meanwhile) and
shares between its processes; made on first use with the given retention."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from gateway.adapters.ticks import retrying, stopped
from svc_runtime import aio, messaging

log = logging.getLogger(__name__)


class BackgroundBucket:
    def __init__(
        self,
        nats_url: str,
        bucket: str,
        *,
        description: str,
        ttl_seconds: float,
        storage: StorageType = StorageType.FILE,
    ) -> None:
        self.nats_url = nats_url
        self.bucket = bucket
        self.description = description
        self.ttl_seconds = ttl_seconds
        self.storage = storage
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
            lambda: messaging.ensure_kv_bucket(
                nc.jetstream(), self.bucket, what, self.ttl_seconds, storage=self.storage
            ),
        )
        log.info("%s ready", what, extra={"bucket": self.bucket})

    @property
    def ready(self) -> bool:
        return self.kv is not None and self._nc is not None and self._nc.is_connected

    async def stop(self) -> None:
        await stopped(self._task, self._nc)


class Conflicting(Exception):
    """Other processes changed the key at every attempt."""


# A key's value and the revision it was read or written at (None: the key does not exist).
Versioned = tuple[bytes | None, int | None]


async def change_at_revision(
    kv: KeyValue,
    key: str,
    change: Callable[[bytes | None], bytes | None],
    *,
    timeout: float,
    attempts: int,
    known: Versioned | None = None,
) -> Versioned | None:
    """Apply `change` to `key`'s value and write the result only at the revision it was
    computed from, so two processes changing the same key never lose each other's write
    (read again and retry on conflict). `known` is a value this process last read or wrote:
    tried first without reading (a refusal computed from it stands, so pass it only where
    other writers can only make a refusal more certain, as spending tokens does). Returns
    what was written, or None when `change` refuses (returns None). Timeouts and NATS errors
    are the caller's to handle."""
    current = known
    for _ in range(attempts):
        if current is None:
            try:
                entry = await aio.within(kv.get(key), timeout)
                current = (entry.value, entry.revision)
            except KeyNotFoundError:
                current = (None, None)
        value, revision = current
        changed = change(value)
        if changed is None:
            return None
        try:
            if revision is None:
                written = await aio.within(kv.create(key, changed), timeout)
            else:
                written = await aio.within(kv.update(key, changed, last=revision), timeout)
            return changed, written
        except KeyWrongLastSequenceError:
            current = None  # another process changed it first: read again
    raise Conflicting(f"{attempts} conflicting writes in a row")
