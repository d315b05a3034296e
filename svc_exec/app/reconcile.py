"""Asking the exchange what it knows: one order (the OMS's stuck-order sweeper), or every
working order after each logon (OrderMassStatusRequest, falling back to one
OrderStatusRequest per order for venues without mass status).

Answers flow through the `ReportDesk` like any report, so whatever they reveal that the
broker never heard of — fills, a cancel, an expiry — is published as inferred reports.

A venue that refuses a status request (35=j, 35=3) is not asked the same again and again:
each refusal doubles the pause before the order may be asked about again (answered at
once with FAILED_PRECONDITION meanwhile), and the first refusal flags the order as needing
attention: a venue that will not say where an order stands is for an operator to settle.

A cancel the venue neither executed nor refused by the time it answers a reconciliation
(it reports the order working, nothing pending) never reached it — a venue that crashed
after taking the message off the wire but before acting on it loses it, and asks for no
resend — so after each logon such a cancel is sent again, under a new ClOrdID.

A venue that denies knowing a working order (an "unknown order" answer, or a cancel
refused as one) is asked again once the desk's `forgotten_after` has passed: a second
denial ends the order (see `ReportDesk`), an answer that knows the order clears the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter

from svc_exec.app.ports import ExecStore, OrderEntry
from svc_exec.app.reports import ReportDesk
from svc_exec.domain.commands import CancelOrder, Command, CommandMeta, Refused
from svc_exec.domain.model import Addressed, OrdStatus, VenueIncident
from svc_runtime import aio
from svc_runtime.errors import DeadlineExceeded, FailedPrecondition, NotFound, Unavailable
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)

# An order the venue holds with a cancel or replace pending: the request reached it.
PENDING_CHANGE = frozenset({OrdStatus.PENDING_CANCEL, OrdStatus.PENDING_REPLACE})

RECONCILIATIONS = Counter("exec_reconciliations_total", "Reconciliations with the exchange", ["outcome"])


@dataclass
class Refusals:
    """A venue's refusals to answer about one order."""

    count: int = 0
    until: float = 0.0  # monotonic time before which the order is not asked about again
    flagged: bool = False


@dataclass(frozen=True)
class Reconciliation:
    orders_reported: int
    reports_published: int


class Reconciler:
    def __init__(
        self,
        store: ExecStore,
        entry: OrderEntry,
        desk: ReportDesk,
        *,
        timeout: float = 10.0,
        max_single_queries: int = 500,
        refusal_pause: float = 30.0,
        refusal_pause_max: float = 900.0,
        flag_after_refusals: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.entry = entry
        self.desk = desk
        self.timeout = timeout
        self.max_single_queries = max_single_queries
        self.refusal_pause = refusal_pause
        self.refusal_pause_max = refusal_pause_max
        self.flag_after_refusals = flag_after_refusals
        self.clock = clock
        self._refusals: dict[str, Refusals] = {}
        self._asking_again: dict[str, asyncio.Task[None]] = {}
        desk.ask_again = self.ask_again
        # How a cancel is sent again (the executor's command path); None: never.
        self.resend: Callable[[Sequence[Command | Refused]], Awaitable[None]] | None = None

    def ask_again(self, order_id: str) -> None:
        """Ask the venue about an order it denied knowing, once the grace has passed."""
        if order_id not in self._asking_again:
            task = asyncio.get_running_loop().create_task(self._ask_again(order_id))
            self._asking_again[order_id] = task
            task.add_done_callback(lambda _task: self._asking_again.pop(order_id, None))

    async def _ask_again(self, order_id: str, max_failures: int = 5) -> None:
        """Until the venue has either ended the denial (an answer that knows the order) or
        confirmed it (the desk then ends the order), or cannot be asked."""
        failures = 0
        while failures < max_failures:
            # A little past the grace, so that the next answer is surely late enough.
            await asyncio.sleep(self.desk.forgotten_after + 0.5)
            view = await self.desk.view(order_id)
            if view is None or view.terminal:
                return
            try:
                await self.order_status(order_id, self.timeout)
            except Exception as error:
                failures += 1
                log.warning(
                    "asking the venue again about an order it denied knowing failed",
                    extra={"order_id": order_id, "failures": failures, "error": repr(error)},
                )
                continue
            RECONCILIATIONS.labels("asked_again").inc()
            if not self.desk.denied(order_id):
                return
        RECONCILIATIONS.labels("ask_again_failed").inc()

    async def order_status(self, order_id: str, timeout: float) -> Addressed:
        """The exchange's answer about one order. An order svc_exec never received is
        marked abandoned so that it can never be sent later: the caller may then release
        its funds safely (NOT_FOUND, reason ORDER_NOT_RECEIVED)."""
        view = await self.desk.view(order_id)
        if view is None:
            if await self.store.abandon_if_unknown(order_id):
                raise NotFound(
                    f"order {order_id} never reached the executor; it will not be sent",
                    reason="ORDER_NOT_RECEIVED",
                )
            view = await self.desk.view(order_id)
        cl_ord_id = await self.store.current_cl_ord_id(order_id)
        if view is None or cl_ord_id is None:
            raise NotFound(
                f"order {order_id} never reached the executor; it will not be sent",
                reason="ORDER_NOT_RECEIVED",
            )
        if not self.entry.logged_on:
            raise Unavailable("the FIX session to the exchange is down", reason="FIX_LOGGED_OUT")
        refusals = self._refusals.get(order_id)
        if refusals is not None and self.clock() < refusals.until:
            wait = refusals.until - self.clock()
            raise FailedPrecondition(
                f"the exchange refused {refusals.count} status request(s) about {order_id}; "
                f"not asking again for {wait:.0f}s",
                reason="STATUS_REQUEST_REFUSED",
                retry_after_seconds=wait,
            )
        request_id = new_id("osr")
        future = self.desk.expect_status(request_id, cl_ord_id)
        try:
            self.entry.send_status_request(
                cl_ord_id,
                view.symbol,
                view.side,
                request_id,
                exchange_order_id=view.exchange_order_id,
                account=view.user_id,
            )
            answer = await aio.within(future, timeout)
            self._refusals.pop(order_id, None)
            return answer
        except TimeoutError as error:
            raise DeadlineExceeded(
                f"the exchange did not answer about {order_id} within {timeout:.1f}s",
                reason="EXCHANGE_TIMEOUT",
            ) from error
        except LookupError as error:
            pause = await self._refused(order_id, cl_ord_id, str(error))
            raise FailedPrecondition(
                f"the exchange refused the status request: {error}",
                reason="STATUS_REQUEST_REFUSED",
                retry_after_seconds=pause,
            ) from error
        finally:
            self.desk.forget_status(request_id, cl_ord_id)

    async def end_order(self, order_id: str, reason: str, operator: str) -> Addressed:
        """An operator ends a working order the venue does not hold. The venue is asked
        first: an answer that knows the order refuses the request (cancel it instead); a
        denial, a refusal or no answer leaves it to the operator's word."""
        view = await self.desk.view(order_id)
        if view is None:
            raise NotFound(f"order {order_id} never reached the executor", reason="ORDER_NOT_RECEIVED")
        if view.terminal:
            raise FailedPrecondition(
                f"order {order_id} is already over ({view.status.name})", reason="ORDER_OVER"
            )
        raw = ""
        try:
            answer = await self.order_status(order_id, self.timeout)
        except (FailedPrecondition, DeadlineExceeded) as error:
            raw = f"the venue could not answer: {error}"
        else:
            if not answer.report.unknown_order:
                status = answer.report.status.name if answer.report.status else "?"
                raise FailedPrecondition(
                    f"the venue holds order {order_id} ({status}): cancel it instead",
                    reason="VENUE_HOLDS_ORDER",
                )
            raw = answer.report.raw
        cl_ord_id = await self.store.current_cl_ord_id(order_id) or ""
        return await self.desk.end_not_held(
            order_id,
            VenueIncident(
                kind="operator_ended",
                reason="ended",
                text=f"ended by {operator or 'an operator'}: {reason}",
                raw=raw,
                cl_ord_id=cl_ord_id,
                ref_msg_type="H",
            ),
        )

    async def _refused(self, order_id: str, cl_ord_id: str, why: str) -> float:
        """Back off from asking about this order; flag it once refusals repeat."""
        refusals = self._refusals.setdefault(order_id, Refusals())
        refusals.count += 1
        pause = min(self.refusal_pause * 2 ** (refusals.count - 1), self.refusal_pause_max)
        refusals.until = self.clock() + pause
        RECONCILIATIONS.labels("status_refused").inc()
        if refusals.count >= self.flag_after_refusals and not refusals.flagged:
            refusals.flagged = True
            await self.desk.flag(
                VenueIncident(
                    kind="status_refused",
                    reason="H:refused",
                    text=f"the venue refused {refusals.count} status requests about the order: {why}",
                    raw=f"order {order_id} ClOrdID {cl_ord_id}",
                    cl_ord_id=cl_ord_id,
                    ref_msg_type="H",
                ),
                order_id,
            )
        return pause

    async def reconcile(self) -> Reconciliation:
        """Ask about every working order; publish what the broker missed."""
        if not self.entry.logged_on:
            raise Unavailable("the FIX session to the exchange is down", reason="FIX_LOGGED_OUT")
        published_before = self.desk.published
        if not self.entry.has_mass_status:
            reported = await self._one_by_one(exclude=set())
            RECONCILIATIONS.labels("order_by_order").inc()
            await self._settle()
            return Reconciliation(reported, self.desk.published - published_before)
        request_id = new_id("msr")
        waiter = self.desk.expect_mass_status(request_id)
        try:
            self.entry.send_mass_status_request(request_id)
            try:
                await aio.within(waiter.done.wait(), self.timeout)
            except TimeoutError:
                waiter.refused = waiter.refused or "no complete answer"
        finally:
            self.desk.forget_mass_status(request_id)
        if not waiter.refused:
            # Orders the broker believes working but the exchange did not list have finished
            # there (venues list only working orders): ask about each of them.
            await self._settle()
            reported = waiter.reported + await self._one_by_one(exclude=waiter.order_ids)
            RECONCILIATIONS.labels("mass_status").inc()
        else:
            log.info("mass status unavailable; asking order by order", extra={"why": waiter.refused})
            reported = await self._one_by_one(exclude=set())
            RECONCILIATIONS.labels("order_by_order").inc()
        await self._settle()
        return Reconciliation(reported, self.desk.published - published_before)

    async def _one_by_one(self, exclude: set[str]) -> int:
        working = []
        for stored in await self.store.working_orders(self.max_single_queries):
            view = await self.desk.view(stored.order_id)
            if view is not None and not view.terminal and view.order_id not in exclude:
                working.append(view)
        semaphore = asyncio.Semaphore(50)

        async def ask(order_id: str) -> bool:
            try:
                async with semaphore:
                    await self.order_status(order_id, self.timeout)
                return True
            except Exception as error:
                log.warning("status query failed", extra={"order_id": order_id, "error": repr(error)})
                return False

        answers = await asyncio.gather(*(ask(view.order_id) for view in working))
        return sum(answers)

    async def _settle(self) -> None:
        """Give the publisher a moment to publish what the answers revealed."""
        await self.desk.drained(self.timeout)

    async def after_logon(self) -> None:
        try:
            if not await self.store.working_orders(1):
                return
            started = await self.store.now()
            result = await self.reconcile()
            log.info(
                "reconciled working orders after logon",
                extra={"orders_reported": result.orders_reported, "published": result.reports_published},
            )
            await self._resend_lost_cancels(started)
        except Exception:
            RECONCILIATIONS.labels("failed").inc()
            log.warning("reconciliation after logon failed", exc_info=True)

    async def _resend_lost_cancels(self, sent_before: datetime) -> None:
        """Cancels sent before this reconciliation that the venue shows no sign of: the
        order is over if the venue executed one, pending if it holds one, and a refusal is
        recorded; an order the venue reports simply working never got its cancel."""
        if self.resend is None:
            return
        for order_id, lost in await self.store.unanswered_cancels(sent_before):
            view = await self.desk.view(order_id)
            if view is None or view.terminal or view.status in PENDING_CHANGE:
                continue
            log.warning(
                "the venue shows no sign of a cancel sent before the reconnect; sending it again",
                extra={"order_id": order_id, "status": view.status.name},
            )
            RECONCILIATIONS.labels("cancel_resent").inc()
            # The venue never took it: the new cancel names the ClOrdID the venue knows.
            await self.store.mark_refused(lost)
            meta = CommandMeta(new_id("cxl"), order_id, view.user_id, view.request_id)
            await self.resend([CancelOrder(meta, view.symbol, view.side, view.order_qty)])
