"""From the broker to the exchange: each command sent once, and only once recorded.

For a batch of commands (in stream order):
1. Record every new order and its ClOrdID in one transaction (unique on command id and
   ClOrdID: a redelivered command finds its row instead of a second one).
2. Send each over FIX; quickfix writes it to its persistent store before the wire.
3. Mark the sent ones in one transaction; the consumer acknowledges the batch afterwards.

A command found recorded but not marked sent (a crash between 1 and 3) is looked up in the
FIX store: there → it was sent, mark it; absent → send it now. If the store cannot tell,
the exchange is asked (OrderStatusRequest) before anything is sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import Counter

from svc_exec.app.ports import ExecStore, OrderEntry, Recorded, Recording
from svc_exec.app.reports import ReportDesk
from svc_exec.domain.commands import (
    CancelOrder,
    Command,
    CommandMeta,
    NewOrder,
    QueryStatus,
    Refused,
    ReplaceOrder,
)
from svc_exec.domain.model import Addressed, ExecKind, OrdStatus, Report
from svc_exec.domain.orders import OrderView
from svc_runtime import aio, context, tracing
from svc_runtime.errors import Unavailable
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)

COMMANDS = Counter("exec_commands_total", "Order commands handled", ["kind", "outcome"])


class Executor:
    def __init__(
        self,
        store: ExecStore,
        entry: OrderEntry,
        desk: ReportDesk,
        *,
        status_timeout: float = 5.0,
        crash_point: Callable[[str], None] = lambda _point: None,
    ) -> None:
        self.store = store
        self.entry = entry
        self.desk = desk
        self.status_timeout = status_timeout
        self.crash_point = crash_point
        self.sent = 0

    async def handle(self, commands: Sequence[Command | Refused]) -> None:
        """Send a batch; return only when every send is safely recorded. Raises if some
        command's fate is unknown: the batch is then redelivered and resolved again."""
        if not commands:
            return
        refusals: list[Addressed] = []
        news = [c for c in commands if isinstance(c, NewOrder)]
        recorded: dict[str, Recording] = {}
        if news:
            recorded = await self.store.record_new_orders(news)
            for order in news:
                if recorded[order.meta.command_id].outcome is Recorded.FRESH:
                    self.desk.track(_view_of(order), order.cl_ord_id)
        self.crash_point("after_record")
        sent: list[str] = []
        unconfirmed: list[str] = []
        news_sent: set[str] = set()  # orders whose New went out in this batch (not yet marked)
        for index, command in enumerate(commands):
            with context.bind(
                request_id=command.meta.request_id or None,  # type: ignore[arg-type]
                traceparent=command.meta.traceparent or None,  # type: ignore[arg-type]
            ):
                if isinstance(command, Refused):
                    log.warning(
                        "command refused", extra={"order_id": command.meta.order_id, "reason": command.reason}
                    )
                    refusal = _refusal(command.meta, command.kind, command.reason)
                    if refusal is not None:
                        refusals.append(refusal)
                    COMMANDS.labels(command.kind, "refused").inc()
                    continue
                if isinstance(command, NewOrder):
                    outcome = await self._new_order(command, recorded[command.meta.command_id], refusals)
                    if outcome in ("sent", "done"):
                        news_sent.add(command.meta.order_id)
                elif isinstance(command, CancelOrder | ReplaceOrder):
                    outcome = await self._amend(command, refusals, news_sent)
                else:
                    outcome = await self._query(command)
                if outcome == "sent":
                    sent.append(command.meta.command_id)
                elif outcome == "unconfirmed":
                    unconfirmed.append(command.meta.command_id)
            if index % 64 == 63:
                await asyncio.sleep(0)  # let the report pipeline breathe between sends
        self.crash_point("after_send")
        if sent:
            await self.store.mark_sent(sent)
            self.sent += len(sent)
        await self.desk.publish_now(refusals)
        if unconfirmed:
            raise Unavailable(
                f"{len(unconfirmed)} command(s) not confirmed on the FIX session; will retry",
                reason="FIX_SEND_UNCONFIRMED",
            )

    async def _new_order(self, order: NewOrder, recording: Recording, refusals: list[Addressed]) -> str:
        outcome = recording.outcome
        if outcome is Recorded.ABANDONED:
            refusal = _refusal(
                order.meta, "new", "the order was abandoned before it reached the exchange", order.symbol
            )
            assert refusal is not None, "a new order is always refused with a report"
            refusals.append(refusal)
            COMMANDS.labels("new", "abandoned").inc()
            return "refused"
        if outcome is Recorded.SENT:
            COMMANDS.labels("new", "duplicate").inc()
            return "done"
        if outcome is Recorded.UNSURE and await self._was_sent(order.cl_ord_id, "D", recording, order):
            COMMANDS.labels("new", "found_sent").inc()
            return "sent"
        if outcome is Recorded.UNSURE:
            # Recorded before a crash but never sent: the tracking view may be missing.
            self.desk.track(_view_of(order), order.cl_ord_id)
        COMMANDS.labels("new", "sent").inc()
        with self._sending("NewOrderSingle", order.cl_ord_id, order.meta.order_id):
            ok = self.entry.send_new_order(order.cl_ord_id, order)
        return "sent" if ok else "unconfirmed"

    async def _amend(
        self, command: CancelOrder | ReplaceOrder, refusals: list[Addressed], news_sent: set[str]
    ) -> str:
        kind = "cancel" if isinstance(command, CancelOrder) else "replace"
        if (
            command.meta.order_id not in news_sent
            and await self.store.new_order_sent(command.meta.order_id) is False
        ):
            # The order's New has not gone out (its delivery failed while the session was
            # down and comes back later): sent first, the cancel would reach the venue
            # before the order and be refused as an unknown order, and the order would
            # then work on, cancelled in vain. It waits, unconfirmed, for its New.
            COMMANDS.labels(kind, "waits_for_new").inc()
            return "unconfirmed"
        recording = await self.store.record_amendment(command)
        if recording.outcome is Recorded.UNKNOWN_ORDER:
            refusals.append(_refusal(command.meta, kind, "unknown order", command.symbol))  # type: ignore[arg-type]
            COMMANDS.labels(kind, "unknown_order").inc()
            return "refused"
        if recording.outcome is Recorded.SENT:
            COMMANDS.labels(kind, "duplicate").inc()
            return "done"
        msg_type = "F" if kind == "cancel" else "G"
        if recording.outcome is Recorded.UNSURE and await self._was_sent(
            recording.cl_ord_id, msg_type, recording, command
        ):
            COMMANDS.labels(kind, "found_sent").inc()
            return "sent"
        self.desk.map_cl_ord(recording.cl_ord_id, command.meta.order_id)
        if isinstance(command, CancelOrder):
            with self._sending("OrderCancelRequest", recording.cl_ord_id, command.meta.order_id):
                ok = self.entry.send_cancel(recording.cl_ord_id, recording.orig_cl_ord_id, command)
        else:
            with self._sending("OrderCancelReplaceRequest", recording.cl_ord_id, command.meta.order_id):
                ok = self.entry.send_replace(recording.cl_ord_id, recording.orig_cl_ord_id, command)
        COMMANDS.labels(kind, "sent").inc()
        return "sent" if ok else "unconfirmed"

    @contextmanager
    def _sending(self, message: str, cl_ord_id: str, order_id: str) -> Iterator[None]:
        """A span for a FIX message sent, when tracing is on. FIX carries no trace context
        to the venue (a user-defined tag would not come back from every venue), so the
        desk remembers the span by ClOrdID and the venue's reports continue from it."""
        with tracing.span(
            f"FIX send {message}",
            kind="producer",
            attributes={"fix.cl_ord_id": cl_ord_id, "brokermesh.order_id": order_id},
        ) as sent:
            yield
        self.desk.note_sent(cl_ord_id, sent.traceparent)

    async def _query(self, command: QueryStatus) -> str:
        cl_ord_id = await self.store.current_cl_ord_id(command.meta.order_id)
        if cl_ord_id is None:
            COMMANDS.labels("status", "unknown_order").inc()
            return "done"
        self.desk.publish_answer(command.meta.command_id)
        self.entry.send_status_request(cl_ord_id, command.symbol, command.side, command.meta.command_id)
        COMMANDS.labels("status", "sent").inc()
        return "done"

    async def _was_sent(
        self,
        cl_ord_id: str,
        msg_type: str,
        recording: Recording,
        command: NewOrder | CancelOrder | ReplaceOrder,
    ) -> bool:
        found = self.entry.in_store(cl_ord_id, msg_type, recording.recorded_at)
        if found is not None:
            log.info(
                "resolved a command recorded before a restart from the FIX store",
                extra={"cl_ord_id": cl_ord_id, "in_store": found},
            )
            return found
        # The store cannot tell: ask the exchange before sending anything again.
        request_id = new_id("osr")
        future = self.desk.expect_status(request_id, cl_ord_id)
        try:
            self.entry.send_status_request(cl_ord_id, command.symbol, command.side, request_id)
            answer = await aio.within(future, self.status_timeout)
        except (TimeoutError, LookupError) as error:
            raise Unavailable(
                f"cannot tell whether {cl_ord_id} reached the exchange", reason="FIX_STATUS_UNKNOWN"
            ) from error
        finally:
            self.desk.forget_status(request_id, cl_ord_id)
        return not answer.report.unknown_order


def _view_of(order: NewOrder) -> OrderView:
    return OrderView(
        order_id=order.meta.order_id,
        user_id=order.meta.user_id,
        symbol=order.symbol,
        side=order.side,
        order_qty=order.quantity,
        limit_price=order.limit_price,
        request_id=order.meta.request_id,
    )


def _refusal(meta: CommandMeta, kind: str, reason: str, symbol: str = "") -> Addressed | None:
    """How the broker hears of a command the executor will not send: a new order is
    rejected; a cancel or replace is cancel-rejected; a status query has no answer."""
    if kind == "new":
        report = Report(
            kind=ExecKind.REJECTED,
            exec_id=f"refused-{meta.command_id}",
            cl_ord_id=meta.order_id,
            status=OrdStatus.REJECTED,
            symbol=symbol,
            text=reason,
        )
    elif kind in ("cancel", "replace"):
        report = Report(
            kind=ExecKind.CANCEL_REJECTED,
            exec_id="",
            cl_ord_id=f"refused-{meta.command_id}",
            symbol=symbol,
            text=reason,
        )
    else:
        return None
    return Addressed(report, meta.order_id, meta.user_id, meta.request_id)
