"""`brokermesh.exec.v1.ExecutionService`: session state, order status, reconciliation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc, execution_report_pb2
from svc_exec.adapters.wire import report_to_proto
from svc_exec.app.ports import StoredIncident
from svc_exec.app.reconcile import Reconciler
from svc_runtime import context as call_context
from svc_runtime.errors import InvalidArgument, Unavailable

DEFAULT_STATUS_TIMEOUT_MS = 2000
MAX_STATUS_TIMEOUT_MS = 30_000
DEFAULT_INCIDENTS, MAX_INCIDENTS = 100, 1000
MAX_REASON = 300


@dataclass
class SessionState:
    """What GetSessionStatus reports; filled in by the composition root."""

    session_id: str = ""
    active: bool = False
    logged_on: bool = False
    next_sender_seq_num: int = 0
    next_target_seq_num: int = 0
    safe_next_target_seq_num: int = 0
    last_receive_time: float | None = None
    last_send_time: float | None = None
    commands_sent: int = 0
    reports_published: int = 0
    reports_pending: int = 0
    venue_incidents: int = 0


def _timestamp(epoch: float | None) -> Timestamp | None:
    if epoch is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(epoch * 1e9))
    return stamp


class ExecutionServicer(exec_pb2_grpc.ExecutionServiceServicer):
    def __init__(
        self,
        state: Callable[[], SessionState],
        reconciler: Callable[[], Reconciler | None],
        incidents: Callable[[int], Awaitable[tuple[list[StoredIncident], int]]],
    ) -> None:
        self.state = state
        self.reconciler = reconciler
        self.incidents = incidents

    def _active(self) -> Reconciler:
        reconciler = self.reconciler()
        if reconciler is None:
            raise Unavailable(
                "this replica does not hold the FIX session", reason="STANDBY", retry_after_seconds=1.0
            )
        return reconciler

    async def GetSessionStatus(
        self, request: exec_pb2.GetSessionStatusRequest, context: grpc.aio.ServicerContext
    ) -> exec_pb2.SessionStatus:
        state = self.state()
        status = exec_pb2.SessionStatus(
            session_id=state.session_id,
            logged_on=state.logged_on,
            next_sender_seq_num=state.next_sender_seq_num,
            next_target_seq_num=state.next_target_seq_num,
            commands_sent=state.commands_sent,
            reports_published=state.reports_published,
            active=state.active,
            reports_pending=state.reports_pending,
            safe_next_target_seq_num=state.safe_next_target_seq_num,
            venue_incidents=state.venue_incidents,
        )
        received = _timestamp(state.last_receive_time)
        if received is not None:
            status.last_receive_time.CopyFrom(received)
        sent = _timestamp(state.last_send_time)
        if sent is not None:
            status.last_send_time.CopyFrom(sent)
        return status

    async def GetExchangeOrderStatus(
        self, request: exec_pb2.GetExchangeOrderStatusRequest, context: grpc.aio.ServicerContext
    ) -> execution_report_pb2.ExecutionReport:
        if not request.order_id:
            raise InvalidArgument("order_id is required", field="order_id")
        if request.timeout_ms < 0 or request.timeout_ms > MAX_STATUS_TIMEOUT_MS:
            raise InvalidArgument(
                f"timeout_ms must be between 0 and {MAX_STATUS_TIMEOUT_MS}", field="timeout_ms"
            )
        timeout = (request.timeout_ms or DEFAULT_STATUS_TIMEOUT_MS) / 1000
        answer = await self._active().order_status(request.order_id, timeout)
        return report_to_proto(answer)

    async def ReconcileOrders(
        self, request: exec_pb2.ReconcileOrdersRequest, context: grpc.aio.ServicerContext
    ) -> exec_pb2.ReconcileOrdersResponse:
        result = await self._active().reconcile()
        return exec_pb2.ReconcileOrdersResponse(
            orders_reported=result.orders_reported, reports_published=result.reports_published
        )

    async def EndOrder(
        self, request: exec_pb2.EndOrderRequest, context: grpc.aio.ServicerContext
    ) -> execution_report_pb2.ExecutionReport:
        if not request.order_id:
            raise InvalidArgument("order_id is required", field="order_id")
        reason = request.reason.strip()
        if not reason or len(reason) > MAX_REASON or not reason.isprintable():
            raise InvalidArgument(
                f"reason is required: what the venue said, printable, at most {MAX_REASON} characters",
                field="reason",
            )
        operator = call_context.current().actor
        return report_to_proto(await self._active().end_order(request.order_id, reason, operator))

    async def ListVenueIncidents(
        self, request: exec_pb2.ListVenueIncidentsRequest, context: grpc.aio.ServicerContext
    ) -> exec_pb2.ListVenueIncidentsResponse:
        if request.limit < 0 or request.limit > MAX_INCIDENTS:
            raise InvalidArgument(f"limit must be between 0 and {MAX_INCIDENTS}", field="limit")
        rows, total = await self.incidents(request.limit or DEFAULT_INCIDENTS)
        response = exec_pb2.ListVenueIncidentsResponse(total=total)
        for row in rows:
            incident = response.incidents.add(
                id=row.id,
                venue=row.venue,
                kind=row.kind,
                reason=row.reason,
                text=row.text,
                raw=row.raw,
                order_id=row.order_id,
            )
            incident.record_time.FromDatetime(row.recorded_at)
        return response
