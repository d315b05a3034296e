"""Order entry: place, cancel and modify (docs/architecture.md §3, "Place an order", steps 2–5).

Placing is crash-safe in two commits. First the order is recorded as FUNDS_PENDING (the
(user, key) constraint makes a retry find it, and the user's order-rate token is taken in
the same transaction). Then, holding that row's lock, svc_funds blocks the money — keyed
by the order id, so repeating the call never blocks twice — and the order moves to
PENDING_EXCHANGE with its event, its audit row and the executor's command in one commit.
A crash in between leaves a FUNDS_PENDING row that a retry or the sweeper finishes (the
block exists) or rejects (it does not): no block without an order, no order without a block.

Both commits are shared (group commit). Reservations made at the same moment are written
in one statement by the store, each with its own outcome. Placements
reserved while earlier acceptances are still out wait and go together in the next
acceptance transaction, with their blocks in one call to svc_funds; each keeps its own
outcome, event, audit row and command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal, InvalidOperation

from svc_orders.app import metrics
from svc_orders.app.controls import TradingControlsView
from svc_orders.app.ports import (
    AuditEntry,
    BlockQuote,
    Clock,
    CommandKind,
    FamilyHook,
    FundsPort,
    MarketPort,
    OrderStore,
    UnitOfWork,
)
from svc_orders.app.risk_limits import RiskLimitBook
from svc_orders.domain import contingent, limits, risk, state_machine, validation
from svc_orders.domain.limits import RiskCheck
from svc_orders.domain.model import (
    Instrument,
    Leg,
    MarketSnapshot,
    Order,
    OrderSpec,
    Side,
    Status,
    Transition,
    user_actor,
)
from svc_orders.domain.risk import RiskLimits
from svc_orders.domain.validation import ModificationDraft, OrderDraft
from svc_runtime import context, market_clock
from svc_runtime.batching import Coalescer
from svc_runtime.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Acceptance:
    """A reserved placement waiting for its block and acceptance."""

    order: Order
    snapshot: MarketSnapshot
    ctx: context.RequestContext


# Errors after which svc_funds may or may not have acted: the order stays FUNDS_PENDING.
UNKNOWN_OUTCOME = (Unavailable, DeadlineExceeded)


@dataclass(frozen=True)
class OrderPreview:
    refusal: ServiceError | None  # why placing would be refused now; None: it would be accepted
    block_price: Decimal | None  # the limit the exchange would enforce, which a BUY blocks at
    reference_price: Decimal | None
    block: BlockQuote | None  # None when refused before svc_funds was asked
    risk_checks: tuple[RiskCheck, ...] = ()  # every limit checked, in order; empty if refused before


@dataclass
class OrderEntry:
    store: OrderStore
    funds: FundsPort
    market: MarketPort
    controls: TradingControlsView
    limits: RiskLimits
    clock: Clock
    # Modifications hold a database connection while svc_funds answers; at most this many
    # at once, so a slow svc_funds cannot take every connection from the report consumer,
    # the relay and reads (placements hold one per acceptance batch: `accepts_in_flight`).
    funds_calls_in_flight: int = 12
    # Placements in progress beyond which a new one is refused at once, before anything is
    # written: past capacity, queueing every order would only make every order late (and
    # let clients time out on orders that were then placed); a refusal tells them to retry.
    max_placing: int = 64

    # Acceptance transactions at once; placements arriving meanwhile wait and go together
    # in the next one.
    accepts_in_flight: int = 4
    # The market's date (a fast market clock in tests and demos): what GTD dates start from.
    market_today: Callable[[], date] = market_clock.today
    # Operators' per-user and per-segment limits; None: only the broker-wide ones apply.
    risk_limits: RiskLimitBook | None = None
    # Brackets and OCO groups: an OCO's stop-loss is recorded with its target's acceptance.
    family: FamilyHook | None = None

    def __post_init__(self) -> None:
        self._funds_slots = asyncio.Semaphore(self.funds_calls_in_flight)
        self._placing = 0
        self._acceptances: Coalescer[_Acceptance, Order] = Coalescer(
            self._accept_batch, max_batch=self.max_placing, max_in_flight=self.accepts_in_flight
        )

    # --- place --------------------------------------------------------------------------
    async def place(self, user_id: str, draft: OrderDraft, request_id: str) -> Order:
        started = time.perf_counter()
        try:
            if self._placing >= self.max_placing:
                raise ResourceExhausted(
                    "the order service is at capacity; retry shortly",
                    reason="SERVER_BUSY",
                    retry_after_seconds=1.0,
                )
            self._placing += 1
            try:
                order = await self._place(user_id, draft, request_id)
            finally:
                self._placing -= 1
        except ServiceError as error:
            metrics.ORDERS_REFUSED.labels(error.reason).inc()
            raise
        metrics.PLACE_SECONDS.observe(time.perf_counter() - started)
        return order

    async def _place(self, user_id: str, draft: OrderDraft, request_id: str) -> Order:
        started = time.perf_counter()
        spec, instrument, snapshot = await self._validated(draft)
        # The tag is part of the request: the same key with another tag is another order.
        fingerprint = validation.fingerprint(spec) + (f"|tag={draft.tag}" if draft.tag else "")
        try:
            risk.check_controls(self.controls.current, spec.symbol)
            decision = risk.pre_trade(spec, instrument, snapshot, self.limits)
            guard = None
            if self.risk_limits is not None:
                checks, guard = await self.risk_limits.check_placement(user_id, spec, decision.order_value)
                refusal = limits.first_refusal(checks)
                if refusal is not None:
                    raise refusal
        except ServiceError:
            # A retry of an order accepted before (say) a halt still gets its order back.
            existing = await self.store.find_by_key(user_id, request_id)
            if existing is None:
                raise
            return await self._continue(existing, fingerprint, snapshot)
        ctx = context.current()
        now = self.clock.now()
        order_id = new_id("ord")
        leg = contingent.leg_of(spec)
        exit_terms = spec.exit
        if exit_terms.stop_price is not None:
            exit_terms = replace(
                exit_terms,
                stop_protection=risk.protection_price(
                    Side.SELL, exit_terms.stop_price, self.limits.market_protection, instrument.tick_size
                ),
            )
        order = Order(
            order_id=order_id,
            user_id=user_id,
            client_order_id=request_id,
            fingerprint=fingerprint,
            symbol=spec.symbol,
            side=spec.side,
            type=spec.type,
            time_in_force=spec.time_in_force,
            product=spec.product,
            quantity=spec.quantity,
            limit_price=spec.limit_price,
            stop_price=spec.stop_price,
            protection_price=decision.protection_price,
            status=Status.FUNDS_PENDING,
            create_time=now,
            update_time=now,
            request_id=ctx.request_id,
            client_ip=ctx.client_ip,
            expire_date=spec.expire_date,
            tag=draft.tag,
            leg=leg,
            oco_group=order_id if leg is Leg.TARGET else "",
            exit=exit_terms,
            trail=spec.trail,
            display_quantity=spec.display_quantity,
        )
        reserving = time.perf_counter()
        metrics.PLACE_STAGE_SECONDS.labels("checks").observe(reserving - started)
        reservation = await self.store.reserve(order, self.limits, guard)
        metrics.PLACE_STAGE_SECONDS.labels("reserve").observe(time.perf_counter() - reserving)
        if not reservation.created:
            return await self._continue(reservation.order, fingerprint, snapshot)
        return await self._block_and_accept(order, snapshot)

    async def _scoped_checks(
        self, user_id: str, spec: OrderSpec, decision: risk.RiskDecision
    ) -> list[RiskCheck]:
        if self.risk_limits is None:
            return []
        return await self.risk_limits.check(user_id, spec, decision.order_value)

    async def _validated(self, draft: OrderDraft) -> tuple[OrderSpec, Instrument, MarketSnapshot]:
        """The order checked against its instrument, and the market it meets."""
        symbol = validation.symbol(draft.symbol)
        instrument = await self.market.instrument(symbol)
        spec = validation.new_order(replace(draft, symbol=symbol), instrument, self.market_today())
        return spec, instrument, await self.market.snapshot(symbol)

    async def _continue(self, existing: Order, fingerprint: str, snapshot: MarketSnapshot) -> Order:
        """The key was used before: the same request gets that order (finishing it if it
        stopped halfway), a different one is a conflict."""
        if existing.fingerprint != fingerprint:
            raise AlreadyExists(
                "request_id was already used for a different order",
                reason="REQUEST_ID_REUSED",
                field="request_id",
                metadata={"order": f"users/{existing.user_id}/orders/{existing.order_id}"},
            )
        metrics.PLACE_REPLAYS.inc()
        if existing.status is Status.FUNDS_PENDING:
            return await self._block_and_accept(existing, snapshot)
        return existing

    async def _block_and_accept(self, order: Order, snapshot: MarketSnapshot) -> Order:
        return await self._acceptances.submit(_Acceptance(order, snapshot, context.current()))

    async def _accept_batch(self, batch: list[_Acceptance]) -> list[Order | BaseException]:
        """Block and accept concurrent placements in one transaction (group commit): their
        rows locked in one statement, their blocks asked for together, one commit. Each
        placement's outcome is its own: a refusal deletes its reservation, an unknown
        outcome leaves it FUNDS_PENDING for a retry or the sweeper, exactly as alone."""
        locking = time.perf_counter()
        outcomes: list[Order | BaseException | None] = [None] * len(batch)
        accepted: list[Transition] = []
        to_save: list[tuple[Transition, AuditEntry]] = []
        async with self.store.unit_of_work() as uow:
            # The row locks keep the sweeper (and concurrent retries) off these orders while
            # svc_funds is being asked.
            locked = await uow.lock_orders([item.order for item in batch])
            first: dict[str, int] = {}
            to_block: list[int] = []
            for k, item in enumerate(batch):
                current = locked.get(item.order.order_id)
                if current is None:
                    outcomes[k] = Aborted(
                        "a concurrent attempt with this request_id just failed; retry", reason="RETRY"
                    )
                elif current.status is not Status.FUNDS_PENDING:
                    outcomes[k] = current
                elif current.order_id not in first:  # two retries of one key: blocked once
                    first[current.order_id] = k
                    to_block.append(k)
            blocking = time.perf_counter()
            metrics.PLACE_STAGE_SECONDS.labels("lock").observe(blocking - locking)
            refusals = await asyncio.gather(
                *(self._block_as(batch[k].ctx, locked[batch[k].order.order_id]) for k in to_block),
                return_exceptions=True,
            )
            accepting = time.perf_counter()
            metrics.PLACE_STAGE_SECONDS.labels("funds").observe(accepting - blocking)
            for k, refusal in zip(to_block, refusals, strict=True):
                current = locked[batch[k].order.order_id]
                if isinstance(refusal, UNKNOWN_OUTCOME) or (
                    refusal is not None and not isinstance(refusal, ServiceError)
                ):
                    outcomes[k] = refusal  # svc_funds may have acted: the order stays FUNDS_PENDING
                elif refusal is not None:
                    outcomes[k] = await self._refused(uow, current, refusal)
                else:
                    transition = state_machine.accept(current, self.clock.now())
                    item = batch[k]
                    to_save.append(
                        (
                            transition,
                            AuditEntry(
                                action="PLACE",
                                actor=item.ctx.actor or user_actor(current.user_id),
                                request_id=item.ctx.request_id,
                                client_ip=item.ctx.client_ip,
                                snapshot=item.snapshot,
                            ),
                        )
                    )
                    if self.family is not None and transition.after.in_family:
                        # The family's rules read its other orders in the database.
                        await uow.save_changes(to_save, command=CommandKind.NEW)
                        to_save = []
                        await self.family.after_change(uow, transition)
                    accepted.append(transition)
                    outcomes[k] = transition.after
            if to_save:  # the acceptances in one statement, each with its NewOrder command
                await uow.save_changes(to_save, command=CommandKind.NEW)
            await uow.commit()
        metrics.PLACE_STAGE_SECONDS.labels("accept").observe(time.perf_counter() - accepting)
        for transition in accepted:
            order = transition.after
            metrics.ORDERS_PLACED.labels(order.side.value, order.type.value).inc()
            metrics.TRANSITIONS.labels(transition.trigger, order.status.value).inc()
            log.info(
                "order placed",
                extra={
                    "order_id": order.order_id,
                    "user_id": order.user_id,
                    "symbol": order.symbol,
                    "side": order.side.value,
                    "type": order.type.value,
                    "quantity": order.quantity,
                },
            )
        # A repeated retry in the batch gets what its first attempt got.
        return [
            outcome if outcome is not None else outcomes[first[item.order.order_id]]  # type: ignore[misc]
            for item, outcome in zip(batch, outcomes, strict=True)
        ]

    @staticmethod
    async def _refused(uow: UnitOfWork, reserved: Order, refusal: BaseException) -> BaseException:
        """svc_funds refused the block (e.g. INSUFFICIENT_FUNDS): nothing is blocked, so
        nothing of the order is kept either."""
        await uow.delete_reserved(reserved.user_id, reserved.order_id)
        if isinstance(refusal, NotFound):
            error = _no_account()
            error.__cause__ = refusal
            return error
        return refusal

    async def _block_as(self, ctx: context.RequestContext, order: Order) -> None:
        """`_block` in the placement's own request context (request id, caller, address)."""
        context.set_current(ctx)
        await self._block(order)

    async def _block(self, order: Order) -> None:
        if order.side is Side.BUY:
            price = order.exchange_limit_price
            assert price is not None, "a BUY order always has a price to block at"
            await self.funds.block_funds(order, price)
        else:
            await self.funds.block_holdings(order)

    # --- preview ------------------------------------------------------------------------
    async def preview(self, user_id: str, draft: OrderDraft) -> OrderPreview:
        """What placing `draft` now would do, with nothing written: the same validation
        (a malformed order raises, as placing does), controls and risk checks (a refusal is
        reported, not raised), and the block svc_funds would make."""
        spec, instrument, snapshot = await self._validated(draft)
        reference = risk.reference_price(snapshot, instrument)
        try:
            risk.check_controls(self.controls.current, spec.symbol)
            decision = risk.pre_trade(spec, instrument, snapshot, self.limits)
            checks = (*decision.checks, *await self._scoped_checks(user_id, spec, decision))
        except ServiceError as error:
            return OrderPreview(refusal=error, block_price=None, reference_price=reference, block=None)
        refusal = limits.first_refusal(list(checks))
        try:
            # A BUY always has a block price; a SELL without one is valued at the market's.
            block = await self.funds.quote_block(user_id, spec, decision.block_price or reference)
        except NotFound:
            return OrderPreview(
                refusal=refusal or _no_account(),
                block_price=decision.block_price,
                reference_price=reference,
                block=None,
                risk_checks=checks,
            )
        return OrderPreview(
            refusal=refusal or block.refusal,
            block_price=decision.block_price,
            reference_price=reference,
            block=block,
            risk_checks=checks,
        )

    # --- cancel -------------------------------------------------------------------------
    async def cancel(self, user_id: str, order_id: str, request_id: str) -> Order:
        ctx = context.current()
        fingerprint = validation.action_fingerprint("CANCEL")
        async with self.store.unit_of_work() as uow:
            order = await uow.lock_order(user_id, order_id)
            if order is None or order.user_id != user_id:
                raise NotFound(f"order {order_id} not found", reason="ORDER_NOT_FOUND")
            used = await uow.claim_request(order, request_id, "CANCEL", fingerprint)
            if used is not None:
                if used != fingerprint:
                    raise AlreadyExists(
                        "request_id was already used for another request on this order",
                        reason="REQUEST_ID_REUSED",
                        field="request_id",
                    )
                return order
            _not_while_being_accepted(order)
            transition = state_machine.request_cancel(order, request_id, self.clock.now())
            audit = AuditEntry(
                action="CANCEL",
                actor=ctx.actor or user_actor(user_id),
                request_id=ctx.request_id,
                client_ip=ctx.client_ip,
                snapshot=self.market.cached_snapshot(order.symbol),
                detail="" if transition.changed else "a cancel is already pending",
            )
            if transition.changed:
                await uow.save(transition, audit, command=CommandKind.CANCEL)
            else:
                await uow.audit_only(order, audit)
            await uow.commit()
        if transition.changed:
            metrics.TRANSITIONS.labels(transition.trigger, transition.after.status.value).inc()
        return transition.after

    # --- modify -------------------------------------------------------------------------
    async def modify(self, user_id: str, order_id: str, draft: ModificationDraft, request_id: str) -> Order:
        ctx = context.current()
        fingerprint = validation.action_fingerprint(
            "MODIFY", draft.quantity, _canonical(draft.limit_price), _canonical(draft.stop_price)
        )
        # The symbol never changes: look up what the checks need before taking the lock.
        known = await self.store.get(user_id, order_id)
        if known is None:
            raise NotFound(f"order {order_id} not found", reason="ORDER_NOT_FOUND")
        instrument = await self.market.instrument(known.symbol)
        snapshot = await self.market.snapshot(known.symbol)
        async with self._funds_slots, self.store.unit_of_work() as uow:
            order = await uow.lock_order(user_id, order_id)
            assert order is not None
            used = await uow.claim_request(order, request_id, "MODIFY", fingerprint)
            if used is not None:
                if used != fingerprint:
                    raise AlreadyExists(
                        "request_id was already used for another request on this order",
                        reason="REQUEST_ID_REUSED",
                        field="request_id",
                    )
                return order
            risk.check_controls(self.controls.current, order.symbol)
            _not_while_being_accepted(order)
            if not state_machine.allowed(order.status, state_machine.Trigger.MODIFY_REQUEST):
                raise FailedPrecondition(
                    f"cannot modify an order that is {order.status.public}",
                    reason="ORDER_NOT_MODIFIABLE",
                    metadata={"status": order.status.public.value},
                )
            change = validation.modification(order, draft, instrument)
            if change.quantity != order.quantity and order.leg is not Leg.SINGLE:
                # The exits share one block sized to the entry's fill, and an entry's size
                # decides its exits': a leg's quantity is part of its family's terms.
                raise FailedPrecondition(
                    f"a {order.leg} order of a contingent family keeps its quantity",
                    reason="CONTINGENT_QUANTITY_FIXED",
                    metadata={"leg": order.leg.value},
                )
            new_spec = replace(
                order.spec,
                quantity=change.quantity,
                limit_price=change.limit_price,
                stop_price=change.stop_price,
            )
            decision = risk.modification(new_spec, order.protection_price, instrument, snapshot, self.limits)
            if self.risk_limits is not None:
                await self.risk_limits.check_modification(user_id, new_spec, decision.order_value)
            old_basis = state_machine.block_basis(order.side, order.quantity, order.exchange_limit_price)
            new_basis = state_machine.block_basis(order.side, change.quantity, decision.block_price)
            raised = new_basis > old_basis
            if raised:
                # A bigger order needs more blocked before it goes out; svc_funds refuses
                # cleanly (INSUFFICIENT_FUNDS) and then nothing here is written.
                await self.funds.adjust_block(
                    user_id,
                    order_id,
                    change.quantity,
                    decision.block_price if order.side is Side.BUY else None,
                    f"{order_id}-modify-{request_id}",
                )
            transition = state_machine.request_modify(
                order, change, decision.protection_price, request_id, self.clock.now(), block_raised=raised
            )
            await uow.save(
                transition,
                AuditEntry(
                    action="MODIFY",
                    actor=ctx.actor or user_actor(user_id),
                    request_id=ctx.request_id,
                    client_ip=ctx.client_ip,
                    snapshot=snapshot,
                    detail=f"quantity {change.quantity}, limit {change.limit_price}, stop {change.stop_price}",
                ),
                command=CommandKind.REPLACE,
            )
            await uow.commit()
        metrics.TRANSITIONS.labels(transition.trigger, transition.after.status.value).inc()
        return transition.after


def _no_account() -> FailedPrecondition:
    return FailedPrecondition("the user has no trading account", reason="ACCOUNT_NOT_FOUND")


def _not_while_being_accepted(order: Order) -> None:
    """An order whose funds are still being blocked cannot be amended yet: a moment later
    it can (ABORTED: retry)."""
    if order.status is Status.FUNDS_PENDING:
        raise Aborted(
            "the order is still being accepted; retry in a moment",
            reason="ORDER_BEING_ACCEPTED",
            retry_after_seconds=1.0,
        )


def _canonical(text: str) -> str:
    try:
        return str(Decimal(text.strip()).quantize(Decimal("0.01"))) if text.strip() else ""
    except InvalidOperation:
        return text
