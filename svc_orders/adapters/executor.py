"""svc_exec over gRPC (order status, reconciliation) and the order-command stream's state."""

from __future__ import annotations

import logging
import time

import grpc
from nats.js import JetStreamContext

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc
from svc_orders.app.ports import StatusAnswer
from svc_orders.transport.wire import report_from_proto
from svc_runtime.errors import details_of, reraise_remote
from svc_runtime.messaging import Topology

log = logging.getLogger(__name__)

NEVER_SENT_REASON = "ORDER_NOT_RECEIVED"


class ExecutorClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        js: JetStreamContext,
        topology: Topology,
        *,
        status_timeout_ms: int = 2000,
        reconcile_every: float = 10.0,
    ) -> None:
        self.stub = exec_pb2_grpc.ExecutionServiceStub(channel)
        self.js = js
        self.topology = topology
        self.status_timeout_ms = status_timeout_ms
        self.reconcile_every = reconcile_every
        self._last_reconcile = 0.0

    async def order_status(self, order_id: str) -> StatusAnswer:
        request = exec_pb2.GetExchangeOrderStatusRequest(order_id=order_id, timeout_ms=self.status_timeout_ms)
        try:
            message = await self.stub.GetExchangeOrderStatus(
                request, timeout=self.status_timeout_ms / 1000 + 3
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                # ORDER_NOT_RECEIVED: svc_exec never got the command and has marked the
                # order so that it never will send it.
                return StatusAnswer(report=None, never_sent=details_of(error).reason == NEVER_SENT_REASON)
            raise reraise_remote(error) from error
        return StatusAnswer(report=report_from_proto(message).report)

    async def request_reconciliation(self) -> None:
        """Ask svc_exec to replay reports the broker missed; at most every few seconds."""
        if time.monotonic() - self._last_reconcile < self.reconcile_every:
            return
        self._last_reconcile = time.monotonic()
        try:
            reply = await self.stub.ReconcileOrders(exec_pb2.ReconcileOrdersRequest(), timeout=30)
        except grpc.aio.AioRpcError as error:
            log.warning("reconciliation request failed", extra={"code": error.code().name})
            return
        log.info(
            "reconciliation requested",
            extra={"orders_reported": reply.orders_reported, "reports_published": reply.reports_published},
        )

    async def commands_drained(self) -> bool:
        # Work-queue retention: a command leaves the stream once the executor acknowledges it.
        info = await self.js.stream_info(self.topology.order_commands_stream)
        return info.state.messages == 0
