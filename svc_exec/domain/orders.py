"""What the broker has been told about each order, and which reports still need telling.

The executor keeps, per order, the fills and status it has already published. Every report
from the exchange passes through `OrderView.apply`, which decides what to publish:

- A fill whose cumulative quantity does not advance the published one was published
  already (a resend, a PossDup) or was inferred from a status answer: nothing to publish.
  This makes fills exactly-once even beyond JetStream's bounded dedup window.
- A status answer (after a reconnect, on request) that shows more filled than published, or
  a terminal state the broker never heard of, yields inferred reports with ids derived from
  the order and the figures, so inferring twice publishes once (nautilus_trader's
  reconciliation reports are the model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal

from svc_exec.domain.model import TERMINAL_KIND, ExecKind, OrdStatus, Report, Side
from svc_runtime.reports import NOT_HELD_BY_VENUE

INFERRED_PRICE_QUANTUM = Decimal("0.0001")
ZERO = Decimal(0)


@dataclass(frozen=True)
class OrderSnapshot:
    """The persisted part of an `OrderView`, taken when its reports were published."""

    order_id: str
    exchange_order_id: str
    order_qty: int
    limit_price: Decimal | None
    cum_qty: int
    notional: Decimal
    status: OrdStatus


@dataclass
class OrderView:
    order_id: str
    user_id: str
    symbol: str
    side: Side
    order_qty: int
    limit_price: Decimal | None = None
    request_id: str = ""
    exchange_order_id: str = ""
    cum_qty: int = 0
    notional: Decimal = ZERO  # sum of fill price × quantity, exact
    status: OrdStatus = OrdStatus.PENDING_NEW

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def avg_px(self) -> Decimal:
        if not self.cum_qty:
            return ZERO
        return (self.notional / self.cum_qty).quantize(INFERRED_PRICE_QUANTUM).normalize()

    def snapshot(self) -> OrderSnapshot:
        return OrderSnapshot(
            self.order_id,
            self.exchange_order_id,
            self.order_qty,
            self.limit_price,
            self.cum_qty,
            self.notional,
            self.status,
        )

    def apply(self, report: Report) -> list[Report]:
        """Fold `report` into the view; return the reports to publish, in order."""
        if report.exchange_order_id and report.exchange_order_id != "NONE":
            self.exchange_order_id = report.exchange_order_id
        if report.kind is ExecKind.TRADE:
            return self._apply_fill(report)
        if report.kind is ExecKind.ORDER_STATUS:
            return self._apply_status(report)
        if report.kind is ExecKind.CANCEL_REJECTED:
            return [report]
        if report.kind is ExecKind.REPLACED:
            if report.order_qty:
                self.order_qty = report.order_qty
            if report.limit_px is not None:
                self.limit_price = report.limit_px
        self._move_to(report.status)
        return [report]

    def _move_to(self, status: OrdStatus | None) -> None:
        # A replayed report must not bring a finished order back to life.
        if status is not None and not self.status.terminal:
            self.status = status

    def _apply_fill(self, report: Report) -> list[Report]:
        if report.cum_qty <= self.cum_qty:
            return []
        out: list[Report] = []
        before = report.cum_qty - report.last_qty
        if before > self.cum_qty and report.avg_px is not None and report.last_px is not None:
            # Earlier fills never reached us (a venue that gap-fills instead of resending):
            # infer them from the figures this report carries.
            notional_before = report.avg_px * report.cum_qty - report.last_px * report.last_qty
            out.append(self._inferred_fill(report, before, notional_before))
        if report.cum_qty - report.last_qty < self.cum_qty:
            # Part of this fill was already inferred from a status answer: publish the rest.
            rest = report.cum_qty - self.cum_qty
            report = replace(report, exec_id=f"{report.exec_id}.rest", last_qty=rest)
        self._add_fill(report.last_qty, report.last_px or ZERO)
        self._move_to(report.status)
        out.append(report)
        return out

    def _apply_status(self, report: Report) -> list[Report]:
        """A status answer is published only when it tells the broker something: a status it
        has not heard, or fills and terminal states it missed (inferred). An answer that
        repeats what was published concerns only whoever asked."""
        if report.unknown_order:
            return []
        before = self.status
        inferred: list[Report] = []
        if report.cum_qty > self.cum_qty:
            avg = report.avg_px if report.avg_px is not None else (report.limit_px or ZERO)
            inferred.append(self._inferred_fill(report, report.cum_qty, avg * report.cum_qty))
        status = report.status
        if status in TERMINAL_KIND and not self.terminal:
            inferred.append(
                replace(
                    report,
                    kind=TERMINAL_KIND[status],
                    exec_id=f"inferred-{self.order_id}-{status.value}",
                    last_qty=0,
                    last_px=None,
                    text=report.text or "inferred from the exchange's order status",
                )
            )
            self.status = status
        elif status is not None and status is not OrdStatus.FILLED and not self.terminal:
            self.status = status
        if inferred or (status is not None and status is not before):
            return [report, *inferred]
        return []

    def not_held_by_venue(self, cl_ord_id: str, reason: str) -> Report:
        """The venue no longer holds this working order (it denied knowing it twice, or an
        operator settled it with the venue), so nothing more can fill. The order ends
        cancelled (its fills stand), with an id derived from the order so that ending it
        twice publishes once."""
        self.status = OrdStatus.CANCELED
        return Report(
            kind=ExecKind.CANCELED,
            exec_id=f"forgotten-{self.order_id}",
            cl_ord_id=cl_ord_id,
            status=OrdStatus.CANCELED,
            exchange_order_id=self.exchange_order_id,
            symbol=self.symbol,
            side=self.side,
            order_qty=self.order_qty,
            cum_qty=self.cum_qty,
            leaves_qty=0,
            avg_px=self.avg_px if self.cum_qty else None,
            limit_px=self.limit_price,
            text=f"{NOT_HELD_BY_VENUE} ({reason})"[:500],
        )

    def _inferred_fill(self, source: Report, cum_qty: int, notional: Decimal) -> Report:
        """A fill bringing the published fills to `cum_qty` shares worth `notional` in all."""
        quantity = cum_qty - self.cum_qty
        price = (notional - self.notional) / quantity
        price = price.quantize(INFERRED_PRICE_QUANTUM, rounding=ROUND_HALF_EVEN).normalize()
        self._add_fill(quantity, price)
        status = OrdStatus.FILLED if self.cum_qty >= self.order_qty else OrdStatus.PARTIALLY_FILLED
        self._move_to(status)
        return replace(
            source,
            kind=ExecKind.TRADE,
            exec_id=f"inferred-{self.order_id}-{cum_qty}",
            status=status,
            last_qty=quantity,
            last_px=price,
            cum_qty=self.cum_qty,
            leaves_qty=max(0, self.order_qty - self.cum_qty),
            avg_px=self.avg_px,
            text="fill inferred from the exchange's order status",
        )

    def _add_fill(self, quantity: int, price: Decimal) -> None:
        self.notional += price * quantity
        self.cum_qty += quantity
