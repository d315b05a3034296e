"""Open streams per user counted across every gateway process, in a NATS KV bucket.

One key per user holds the user's open streams (slot id → lease end). Taking or giving back
a slot rewrites the key only at the revision it read (`update(..., last=revision)`), so two
processes racing for a user's last slot cannot both win. Each process renews the leases of
its own streams every few seconds; a process killed outright leaves slots that lapse when
their lease ends, so a user is not locked out for longer than that.

While NATS cannot be reached the limit still holds per process (streams need NATS anyway):
that is logged and counted (`gateway_stream_slots_unshared_total`), never silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable

import nats.errors
from prometheus_client import Counter

from gateway.adapters.kv import BackgroundBucket, Conflicting, change_at_revision
from gateway.domain.limits import HeldSlots, StreamSlots, claim_slot, drop_slots, renew_slots
from svc_runtime import messaging

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 2.0
LEASE_SECONDS = 30.0
# Conflicting writes (other processes changing the same user's streams) before giving up.
ATTEMPTS = 8
UNSHARED = Counter(
    "gateway_stream_slots_unshared_total",
    "Stream slots counted in this gateway process only: the shared count was out of reach",
)


class SlotsUnreachable(Exception):
    """The shared count could not be read or written."""


class NatsStreamSlots:
    def __init__(
        self,
        nats_url: str,
        topology: messaging.Topology,
        per_user: int,
        *,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.record = BackgroundBucket(
            nats_url,
            topology.kv_bucket("stream_slots"),
            description="open streams per user (gateway)",
            # Keys of users without streams go eventually; live keys are rewritten far more often.
            ttl_seconds=lease_seconds * 20,
        )
        self.per_user = per_user
        self.lease_seconds = lease_seconds
        self.clock = clock
        # This process's own streams: the per-process bound, and the fallback while NATS is out.
        self.local = StreamSlots(per_user)
        # user → this process's slot ids in the shared count ("" for a slot counted locally only)
        self._mine: dict[str, list[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # user → slots released and not yet given back; present while a give-back runs.
        self._returning: dict[str, set[str]] = {}
        self._renewer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.record.start()
        self._renewer = asyncio.create_task(self._renew_forever(), name="stream-slot-leases")

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=TIMEOUT_SECONDS)
        await self.record.stop()

    def open_streams(self, user_id: str) -> int:
        """The user's streams open on this process."""
        return self.local.open_streams(user_id)

    async def take(self, user_id: str) -> bool:
        if not self.local.acquire(user_id):
            return False
        slot = secrets.token_hex(8)
        try:
            won = await self._change(
                user_id, lambda held, now: claim_slot(held, slot, now, self.per_user, self.lease_seconds)
            )
        except SlotsUnreachable as error:
            UNSHARED.inc()
            log.warning("stream slots counted in this process only", extra={"error": repr(error.__cause__)})
            slot = ""
            won = True
        if not won:
            self.local.release(user_id)
            return False
        self._mine.setdefault(user_id, []).append(slot)
        return True

    def release(self, user_id: str) -> None:
        self.local.release(user_id)
        slots = self._mine.get(user_id)
        if not slots:
            return
        slot = slots.pop()
        if not slots:
            del self._mine[user_id]
        if not slot:
            return
        if user_id in self._returning:  # a give-back is under way: join its next write
            self._returning[user_id].add(slot)
            return
        self._returning[user_id] = {slot}
        task = asyncio.get_running_loop().create_task(self._give_back(user_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_back(self, user_id: str) -> None:
        """Give back the user's released slots, all those released meanwhile in one write:
        a user's streams closing together (a client going away, a shutdown) would otherwise
        race each other for the same key and run out of attempts."""
        try:
            while slots := self._returning.get(user_id):
                self._returning[user_id] = set()  # releases during the write wait for the next
                try:
                    await self._change(user_id, lambda held, now: drop_slots(held, slots, now))
                except SlotsUnreachable:
                    # Their leases lapse on their own within `lease_seconds`.
                    log.warning(
                        "stream slots could not be given back; they lapse",
                        extra={"user": user_id, "slots": len(slots)},
                    )
        finally:
            self._returning.pop(user_id, None)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            for user_id, slots in list(self._mine.items()):
                mine = {s for s in slots if s}
                if not mine:
                    continue
                try:
                    await self._change(
                        user_id, lambda held, now, mine=mine: renew_slots(held, mine, now, self.lease_seconds)
                    )
                except SlotsUnreachable:
                    log.warning("stream slot leases could not be renewed", extra={"user": user_id})

    async def _change(self, user_id: str, change: Callable[[HeldSlots, float], HeldSlots | None]) -> bool:
        """Apply `change` to the user's record at the revision read; False when it refuses."""
        kv = self.record.kv
        if kv is None or not self.record.ready:
            raise SlotsUnreachable("not connected")

        def rewrite(value: bytes | None) -> bytes | None:
            held = {str(k): float(v) for k, v in json.loads(value or b"{}").items()}
            changed = change(held, self.clock())
            return None if changed is None else json.dumps(changed).encode()

        try:
            written = await change_at_revision(
                kv, messaging.Topology.quote_key(user_id), rewrite, timeout=TIMEOUT_SECONDS, attempts=ATTEMPTS
            )
        except (TimeoutError, nats.errors.Error, Conflicting) as error:
            raise SlotsUnreachable(str(error)) from error
        return written is not None
