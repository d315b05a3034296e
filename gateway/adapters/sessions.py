"""Sessions in a NATS KV bucket, shared by every gateway process.

A record per session id (user, refresh generation, end); a refresh replaces it only at the
revision it read (`update(..., last=revision)`), so of two requests spending one refresh
token exactly one wins. Revocations go to the revoked-sessions bucket that every process
watches (`svc_runtime.revocations`). While NATS cannot be reached, logins, refreshes and
logouts answer 503: nothing is assumed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from gateway.adapters.kv import BackgroundBucket
from gateway.domain.sessions import SessionRecord
from svc_runtime import aio, messaging
from svc_runtime.errors import Unavailable
from svc_runtime.revocations import RevocationFeed
from svc_runtime.tokens import MAX_SESSION_SECONDS

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 2.0
T = TypeVar("T")


def _unavailable() -> Unavailable:
    return Unavailable("sessions cannot be reached now; retry", retry_after_seconds=1)


class NatsSessions:
    def __init__(self, nats_url: str, topology: messaging.Topology, revocations: RevocationFeed) -> None:
        self.record = BackgroundBucket(
            nats_url,
            topology.kv_bucket("sessions"),
            description="login sessions (gateway)",
            ttl_seconds=MAX_SESSION_SECONDS,
        )
        self.revocations = revocations

    def start(self) -> None:
        self.record.start()

    @property
    def ready(self) -> bool:
        return self.record.ready

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await aio.within(call, TIMEOUT_SECONDS)
        except (KeyNotFoundError, KeyWrongLastSequenceError):
            raise  # answers, not failures
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("session record failed", extra={"error": repr(exc)})
            raise _unavailable() from None

    def _bucket(self) -> KeyValue:
        if self.record.kv is None or not self.ready:
            raise _unavailable()
        return self.record.kv

    async def begin(self, session: str, record: SessionRecord) -> None:
        await self._call(self._bucket().create(session, record.encode()))

    async def get(self, session: str) -> tuple[SessionRecord, int] | None:
        kv = self._bucket()
        try:
            entry = await self._call(kv.get(session))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return SessionRecord.decode(entry.value), int(entry.revision or 0)

    async def replace(self, session: str, record: SessionRecord, revision: int) -> bool:
        kv = self._bucket()
        try:
            await self._call(kv.update(session, record.encode(), last=revision))
        except KeyWrongLastSequenceError:
            return False
        return True

    async def revoke(self, session: str, until: float) -> None:
        await self.revocations.revoke(session, until)

    async def stop(self) -> None:
        await self.record.stop()
