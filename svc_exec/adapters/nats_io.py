"""JetStream: the order-command consumer and the execution-report publisher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.msg import Msg
from nats.js import JetStreamContext

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
    decode,
    request_context_of,
    traced,
)

log = logging.getLogger(__name__)

DURABLE = "svc_exec_order_commands"


class JetStreamReports:
    """Publishes reports pipelined (every message on the wire before the first ack is
    awaited), in order, each with `Nats-Msg-Id` = its dedup id. Raises if any ack is
    missing; the caller publishes the same reports again."""

    def __init__(self, js: JetStreamContext, topology: Topology, *, ack_timeout: float = 10.0) -> None:
        self.js = js
        self.topology = topology
        self.ack_timeout = ack_timeout
        self._type = "brokermesh.exec.v1.ExecutionReport"

    async def publish(self, reports: Sequence[Addressed]) -> None:
        await (await self.send(reports))

    async def send(self, reports: Sequence[Addressed]) -> Awaitable[None]:
        futures = []
        for addressed in reports:
            payload = report_to_proto(addressed).SerializeToString()
            subject = self.topology.exec_report_subject(addressed.user_id or "_")
            headers = {
                MSG_ID_HEADER: addressed.msg_id,
                context.REQUEST_ID_HEADER: addressed.request_id or context.new_request_id(),
                TYPE_HEADER: self._type,
            }
            if addressed.traceparent:
                traced(headers, subject, addressed.traceparent)
            futures.append(
                await self.js.publish_async(
                    subject,
                    payload,
                    headers=headers,
                    # No stall timeout: with one, nats-py wraps each publish in a task and
                    # yields, and every message goes out in a write of its own.
                    wait_stall=None,
                )
            )
        return self._acknowledged(futures)

    async def _acknowledged(self, futures: list[asyncio.Future[object]]) -> None:
        if futures:
            # A timeout cancels the futures, which frees nats-py's pending-publish slots.
            await aio.within(asyncio.gather(*futures), self.ack_timeout)


Handler = Callable[[Sequence[Command | Refused]], Awaitable[None]]


class CommandConsumer:
    """The durable consumer of order commands. A batch is acknowledged only after the
    executor returned, i.e. after every send was recorded. While the FIX session is down,
    the batch waits (its acknowledgement deadline extended) instead of failing."""

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
        await self.consumer.run()

    def stop(self) -> None:
        self.consumer.stop()

    async def _handle(self, msgs: Sequence[Msg]) -> None:
        if not msgs:
            return
        while not self.logged_on():
            if self.stopping.is_set():
                raise RuntimeError("stopping while the FIX session is down")
            for msg in msgs:
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
