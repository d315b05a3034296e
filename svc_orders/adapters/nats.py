"""NATS: the execution-report consumer and the order-event feed for streams."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from brokermesh.exec.v1 import execution_report_pb2
from brokermesh.orders.v1 import orders_pb2
from svc_orders.app.fanout import OrderEventFanout
from svc_orders.app.ports import ReportEnvelope
from svc_orders.app.reports import ReportProcessor
from svc_orders.transport.wire import report_from_proto
from svc_runtime.errors import InvalidArgument
from svc_runtime.messaging import DurableConsumer, Topology, decode, request_context_of

log = logging.getLogger(__name__)

EXEC_REPORTS_DURABLE = "svc_orders_exec_reports"


def exec_report_consumer(
    js: JetStreamContext,
    topology: Topology,
    processor: ReportProcessor,
    *,
    batch_size: int = 128,
    ack_wait: float = 5.0,
) -> DurableConsumer:
    """Reports delivered to a replica that dies are redelivered after `ack_wait`: short, so
    fills are not held up for long by a crash. A batch that takes longer is redelivered
    while it runs; the exec-id claim makes the second attempt a no-op."""

    async def handle(msgs: Sequence[Msg]) -> None:
        envelopes: list[ReportEnvelope] = []
        for msg in msgs:
            try:
                envelope = report_from_proto(decode(msg, execution_report_pb2.ExecutionReport), msg.data)
            except (DecodeError, ValueError, InvalidArgument):
                # It can never be applied: say so loudly, with where to find it, and move on.
                log.error(
                    "undecodable execution report skipped",
                    exc_info=True,
                    extra={
                        "subject": msg.subject,
                        "stream_seq": msg.metadata.sequence.stream if msg.metadata else None,
                    },
                )
                continue
            envelopes.append(
                replace(
                    envelope,
                    request_id=envelope.request_id or request_context_of(msg).request_id,
                    delivery=msg.metadata.num_delivered if msg.metadata else 1,
                )
            )
        if envelopes:
            await processor.apply(envelopes)

    return DurableConsumer(
        js,
        stream=topology.exec_reports_stream,
        durable=EXEC_REPORTS_DURABLE,
        filter_subject=topology.wildcard(topology.exec_report_subject("x")),
        handler=handle,
        batch_size=batch_size,
        ack_wait=ack_wait,
        # A fill should reach the order at once, not when a batch fills up.
        linger=False,
    )


class OrderEventFeed:
    """Core-NATS subscription to every user's order events, feeding the in-process fan-out.
    Streams never miss an event to it: they replay from the database first."""

    def __init__(self, nc: NatsClient, topology: Topology, fanout: OrderEventFanout) -> None:
        self.nc = nc
        self.topology = topology
        self.fanout = fanout
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        # Also where replicas of the previous version publish, while a rolling upgrade lasts.
        for subject in (
            self.topology.order_event_subject("x"),
            self.topology.previous_order_event_subject("x"),
        ):
            self._subscriptions.append(
                await self.nc.subscribe(self.topology.wildcard(subject), cb=self._on_event)
            )

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.unsubscribe()

    async def _on_event(self, msg: Msg) -> None:
        user_id = msg.subject.rsplit(".", 1)[-1]
        if not self.fanout.wants(user_id):
            return
        event = orders_pb2.OrderEvent()
        try:
            event.ParseFromString(msg.data)
        except DecodeError:
            log.warning("undecodable order event", extra={"subject": msg.subject})
            return
        self.fanout.publish(event)
