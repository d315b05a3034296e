"""JetStream: the order-command consumer and the execution-report publisher."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RawStreamMsg

from brokermesh.orders.v1 import order_command_pb2
from svc_exec.adapters.wire import command_from_proto, report_to_proto
from svc_exec.domain.commands import Command, Refused
from svc_exec.domain.model import Addressed
from svc_runtime import aio, context
from svc_runtime.messaging import (
    MSG_ID_HEADER,
    TYPE_HEADER,
    DurableConsumer,
    Topology,
    batch_of,
    batched_ids,
    decode,
    request_context_of,
    traced,
    unpack,
)

log = logging.getLogger(__name__)

DURABLE = "svc_exec_order_commands"
# Reports per batch message: ~300 bytes each, far below NATS' 1 MB payload limit.
MAX_BATCH = 200
# How far back the reports published by this process and its predecessors are remembered:
# the stream's duplicate window, within which single messages are deduplicated by their ids.
RECALL_WINDOW = timedelta(seconds=120)
# At most this many stream messages are read on start for commands a predecessor held (the
# consumer's max_ack_pending bounds them: 1,024 at the default batch; any beyond come back
# by redelivery).
MAX_TAKEN_OVER = 4096

Item = tuple[str, bytes, dict[str, str]]


class JetStreamReports:
    """Publishes reports pipelined (every message on the wire before the first ack is
    awaited), in order. `send` carries the reports of one call in as few batch messages
    as it can (a `MessageBatch` each, its id derived from the reports' ids, so the same
    call repeated is deduplicated by the stream); `publish` sends each report alone, with
    `Nats-Msg-Id` = its dedup id. Raises if any ack is missing; the caller publishes the
    same reports again.

    The stream deduplicates a batch only as a whole: a report published before (alone or
    in a batch), then resent by the exchange after a session drop or a restart, would be
    part of a batch of other reports with another id. So before its first send a process
    reads the ids of every report published within the duplicate window, remembers those
    it publishes itself (once acknowledged) for as long, and never publishes them again:
    what the stream keeps stays exactly once."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        *,
        ack_timeout: float = 10.0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.js = js
        self.topology = topology
        self.ack_timeout = ack_timeout
        # 1: every report alone, as consumers that cannot unpack a batch expect.
        self.max_batch = max_batch
        self._type = "brokermesh.exec.v1.ExecutionReport"
        # Report id → when it was acknowledged (or recalled), oldest first.
        self._published: dict[str, float] | None = None

    async def publish(self, reports: Sequence[Addressed]) -> None:
        futures = [await self._publish_async(*self._item(addressed)) for addressed in reports]
        await self._acknowledged(futures)

    async def send(self, reports: Sequence[Addressed]) -> Awaitable[None]:
        if self._published is None:
            now = time.monotonic()
            self._published = dict.fromkeys(await self.recall(), now)
        known = self._forget_old(self._published)
        fresh = [a for a in reports if a.msg_id not in known]
        items = [self._item(a) for a in fresh]
        futures = []
        for start in range(0, len(items), self.max_batch):
            chunk = items[start : start + self.max_batch]
            if len(chunk) == 1:
                futures.append(await self._publish_async(*chunk[0]))
            else:
                payload, headers = batch_of(chunk)
                futures.append(
                    await self._publish_async(self.topology.exec_report_batch_subject, payload, headers)
                )
        return self._remembered(futures, [a.msg_id for a in fresh])

    async def _remembered(self, futures: list[asyncio.Future[object]], ids: list[str]) -> None:
        await self._acknowledged(futures)
        if self._published is not None:
            self._published.update(dict.fromkeys(ids, time.monotonic()))

    @staticmethod
    def _forget_old(published: dict[str, float]) -> dict[str, float]:
        horizon = time.monotonic() - RECALL_WINDOW.total_seconds()
        stale = list(itertools.takewhile(lambda seen: published[seen] < horizon, published))
        for msg_id in stale:
            del published[msg_id]
        return published

    async def recall(self) -> set[str]:
        """The ids of the reports published within `RECALL_WINDOW`, alone or in batches."""
        since = datetime.now(UTC) - RECALL_WINDOW
        subscription = await self.js.pull_subscribe(
            self.topology.wildcard(self.topology.exec_report_subject("_")),
            stream=self.topology.exec_reports_stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_TIME,
                opt_start_time=since.isoformat().replace("+00:00", "Z"),
                ack_policy=AckPolicy.ALL,
                inactive_threshold=30.0,
            ),
        )
        ids: set[str] = set()
        try:
            pending = (await subscription.consumer_info()).num_pending
            while pending:
                msgs = await subscription.fetch(min(pending, 500), timeout=5.0)
                for msg in msgs:
                    ids.update(batched_ids(msg))
                await msgs[-1].ack()
                pending = msgs[-1].metadata.num_pending
        finally:
            with contextlib.suppress(nats.errors.Error):
                name = (await subscription.consumer_info()).name
                await subscription.unsubscribe()
                await self.js.delete_consumer(self.topology.exec_reports_stream, name)
        if ids:
            log.info("reports published lately are not published again", extra={"reports": len(ids)})
        return ids

    def _item(self, addressed: Addressed) -> Item:
        payload = report_to_proto(addressed).SerializeToString()
        subject = self.topology.exec_report_subject(addressed.user_id or "_")
        headers = {
            MSG_ID_HEADER: addressed.msg_id,
            context.REQUEST_ID_HEADER: addressed.request_id or context.new_request_id(),
            TYPE_HEADER: self._type,
        }
        if addressed.traceparent:
            traced(headers, subject, addressed.traceparent)
        return subject, payload, headers

    async def _publish_async(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[object]:
        return await self.js.publish_async(
            subject,
            payload,
            headers=headers,
            # No stall timeout: with one, nats-py wraps each publish in a task and
            # yields, and every message goes out in a write of its own.
            wait_stall=None,
        )

    async def _acknowledged(self, futures: list[asyncio.Future[object]]) -> None:
        if futures:
            # A timeout cancels the futures, which frees nats-py's pending-publish slots.
            await aio.within(asyncio.gather(*futures), self.ack_timeout)


Handler = Callable[[Sequence[Command | Refused]], Awaitable[None]]


class CommandConsumer:
    """The durable consumer of order commands. A batch is acknowledged only after the
    executor returned, i.e. after every send was recorded. While the FIX session is down,
    the batch waits (its acknowledgement deadline extended) instead of failing.

    Commands a predecessor fetched and never acknowledged (it was killed) would come back
    only once their acknowledgement deadline passed, behind every command sent since: an
    order placed before the crash would reach the exchange after orders placed later. So
    on start they are read straight from the stream and sent first, in stream order; their
    redelivery then finds them recorded and sent (the executor's duplicate path)."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        handler: Handler,
        *,
        logged_on: Callable[[], bool],
        wait_logged_on: Callable[[float], Awaitable[bool]],
        stopping: asyncio.Event,
        batch_size: int = 256,
        ack_wait: float = 5.0,
    ) -> None:
        self.js = js
        self.stream = topology.order_commands_stream
        self.handler = handler
        self.logged_on = logged_on
        self.wait_logged_on = wait_logged_on
        self.stopping = stopping
        self.consumer = DurableConsumer(
            js,
            stream=topology.order_commands_stream,
            durable=DURABLE,
            filter_subject=topology.wildcard(topology.order_command_subject("x")),
            handler=self._handle,
            batch_size=batch_size,
            # Commands held by a process that died come back after this long; a batch takes
            # well under it, and waits for the FIX session extend it explicitly.
            ack_wait=ack_wait,
            # Short fetches: an idle consumer notices a stop quickly (4 empty pulls a second).
            fetch_timeout=0.25,
        )

    async def run(self) -> None:
        try:
            await self.take_over()
        except Exception:
            # Their redelivery still comes, only later.
            log.warning("commands held by a predecessor were not taken over", exc_info=True)
        await self.consumer.run()

    def stop(self) -> None:
        self.consumer.stop()

    async def take_over(self) -> int:
        """Handle the commands delivered to a predecessor and never acknowledged; returns
        how many there were. The stream is a work queue: an acknowledged command is gone
        from it, so every one still there between the acknowledgement floor and the last
        delivery is held by nobody alive (the FIX session lease ensures one svc_exec)."""
        try:
            info = await self.js.consumer_info(self.stream, DURABLE)
        except nats.js.errors.NotFoundError:
            return 0
        if not info.num_ack_pending or info.ack_floor is None or info.delivered is None:
            return 0
        first = (info.ack_floor.stream_seq or 0) + 1
        last = min(info.delivered.stream_seq or 0, first + MAX_TAKEN_OVER - 1)
        held: list[RawStreamMsg] = []
        for seq in range(first, last + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                held.append(await self.js.get_msg(self.stream, seq))
        if held:
            log.warning(
                "sending first the commands a predecessor held unacknowledged",
                extra={"commands": len(held), "first_seq": first, "last_seq": last},
            )
            # A stored message has the data, headers and subject a delivery has.
            await self._handle([m for raw in held for m in unpack(raw)])  # type: ignore[arg-type]
        return len(held)

    async def _handle(self, msgs: Sequence[Msg]) -> None:
        if not msgs:
            return
        while not self.logged_on():
            if self.stopping.is_set():
                raise RuntimeError("stopping while the FIX session is down")
            for msg in msgs:
                if isinstance(msg, Msg):  # a delivery: its deadline is extended
                    await msg.in_progress()
            await self.wait_logged_on(10.0)
        commands: list[Command | Refused] = []
        for msg in msgs:
            with context.bind(**vars(request_context_of(msg))):
                try:
                    command = command_from_proto(decode(msg, order_command_pb2.OrderCommand))
                except Exception:
                    log.error(
                        "undecodable order command; dropping it",
                        exc_info=True,
                        extra={"subject": msg.subject},
                    )
                    continue
                commands.append(_in_context(command))
        await self.handler(commands)


def _in_context(command: Command | Refused) -> Command | Refused:
    """`command` with the request id its message came with (when the command names none)
    and the trace position of its delivery."""
    current = context.current()
    request_id = command.meta.request_id or current.request_id
    if request_id == command.meta.request_id and not current.traceparent:
        return command
    from dataclasses import replace

    return replace(
        command, meta=replace(command.meta, request_id=request_id, traceparent=current.traceparent)
    )
