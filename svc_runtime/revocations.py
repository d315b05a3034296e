"""Revoked sessions in a NATS KV bucket, watched by every process that checks users' tokens.

The gateway writes a key per revoked session (logout, a refresh token used twice); each
gateway and service process keeps a watch on the bucket and adds what it sees to its
`RevokedSessions`, which ends the session's open streams at once. The bucket keeps a key
as long as any session can last, so a process starting later still learns of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from svc_runtime import aio, messaging
from svc_runtime.errors import Unavailable
from svc_runtime.tokens import MAX_SESSION_SECONDS, RevokedSessions

log = logging.getLogger(__name__)

REVOCATIONS_SEEN = Counter("auth_session_revocations_seen_total", "Session revocations received")
REVOKED_HELD = Gauge("auth_revoked_sessions", "Revoked sessions held in memory")
WRITE_TIMEOUT_SECONDS = 2.0


def revocations_bucket(topology: messaging.Topology) -> str:
    return topology.kv_bucket("revoked_sessions")


class RevocationFeed:
    """Keeps `revoked` in step with the bucket, from the moment `start` is called; `revoked`
    becomes ready once everything already in the bucket has been read."""

    def __init__(self, nats_url: str, topology: messaging.Topology, revoked: RevokedSessions) -> None:
        self.nats_url = nats_url
        self.bucket = revocations_bucket(topology)
        self.revoked = revoked
        self._nc: NatsClient | None = None
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self.loaded = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="revocations")

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("revoked sessions cannot be followed; retrying", extra={"error": repr(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _follow(self) -> None:
        if self._nc is None:
            self._nc = await messaging.connect(self.nats_url, "revocations")
        self._kv = kv = await messaging.ensure_kv_bucket(
            self._nc.jetstream(), self.bucket, "revoked user sessions", MAX_SESSION_SECONDS
        )
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:  # everything that was in the bucket has been read
                    if not self.revoked.ready:
                        log.info("revoked sessions loaded", extra={"count": len(self.revoked)})
                    self.revoked.ready = True
                    self.loaded.set()
                    continue
                if entry.operation is not None or not entry.value:
                    continue
                try:
                    until = float(json.loads(entry.value)["until"])
                except (ValueError, KeyError, TypeError):
                    log.warning("an unreadable revocation was ignored", extra={"session": entry.key})
                    continue
                REVOCATIONS_SEEN.inc()
                self.revoked.add(entry.key, until)
                REVOKED_HELD.set(len(self.revoked))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def revoke(self, session: str, until: float) -> None:
        """Record that `session` is revoked, for every process; raises Unavailable when NATS
        cannot take it (the caller must not report success)."""
        kv = self._kv
        if kv is None:
            raise Unavailable("sessions cannot be ended now; retry", retry_after_seconds=1)
        value = json.dumps({"until": until, "at": time.time()}).encode()
        try:
            await aio.within(kv.put(session, value), WRITE_TIMEOUT_SECONDS)
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("a revocation could not be written", extra={"error": repr(exc)})
            raise Unavailable("sessions cannot be ended now; retry", retry_after_seconds=1) from None
        # Known here at once, not only when the watch brings it back.
        self.revoked.add(session, until)

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
