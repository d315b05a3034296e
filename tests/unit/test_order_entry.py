"""OrderEntry (svc_orders/app/entry.py) over in-memory ports: every main branch of place,
cancel and modify, in milliseconds. Crash safety and concurrency stay with tests/orders/."""

from __future__ import annotations

from decimal import Decimal

import pytest

from svc_orders.app.controls import TradingControlsView
from svc_orders.app.entry import OrderEntry
from svc_orders.app.ports import CommandKind
from svc_orders.domain import state_machine
from svc_orders.domain.model import Order, OrderType, Side, Status
from svc_orders.domain.risk import RiskLimits, TradingControls
from svc_orders.domain.validation import ModificationDraft, OrderDraft
from svc_runtime.errors import Aborted, AlreadyExists, FailedPrecondition, ServiceError, Unavailable
from tests.unit.orders_fakes import (
    MemoryExchange,
    MemoryFunds,
    MemoryMarket,
    MemoryOrderStore,
    SteppingClock,
    report,
)

USER = "u_asha"


class Desk:
    """The use case with its fakes, and short ways to drive it."""

    def __init__(self, limits: RiskLimits | None = None) -> None:
        self.store = MemoryOrderStore()
        self.funds = MemoryFunds(cash=Decimal("100000.00"), shares={"TCS": 20})
        self.market = MemoryMarket()
        self.market.list("INFY", last="1500.00")
        self.market.list("TCS", last="3500.00")
        self.exchange = MemoryExchange()
        self.clock = SteppingClock()
        self.controls = TradingControlsView(self.store)
        self.entry = OrderEntry(
            store=self.store,
            funds=self.funds,
            market=self.market,
            controls=self.controls,
            limits=limits or RiskLimits(),
            clock=self.clock,
        )

    async def place(self, key: str = "k1", **fields: object):
        draft = {
            "symbol": "INFY",
            "side": Side.BUY,
            "type": OrderType.LIMIT,
            "time_in_force": None,
            "product": None,
            "quantity": 10,
            "limit_price": "1490.00",
            **fields,
        }
        return await self.entry.place(USER, OrderDraft(**draft), key)  # type: ignore[arg-type]

    def opened(self, order: Order) -> Order:
        """The exchange took the order (its NEW report applied)."""
        new = report(f"new-{order.order_id}", "NEW", ord_status="NEW")
        after = state_machine.apply_report(order, new, self.clock.now()).after
        self.store.book.orders[order.order_id] = after
        return after


async def refused(call) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await call
    return caught.value


async def test_a_limit_buy_blocks_cash_and_goes_to_the_exchange() -> None:
    desk = Desk()
    order = await desk.place()
    assert order.status is Status.PENDING_EXCHANGE
    assert desk.funds.blocks[order.order_id] == ("CASH", Decimal("14900.00"))
    assert desk.store.book.commands == [(CommandKind.NEW, order.order_id)]
    assert [entry.action for _, entry in desk.store.book.audit] == ["PLACE"]
    assert desk.store.book.events == [(order.order_id, "ACCEPTED")]


async def test_a_market_buy_blocks_at_its_protection_price() -> None:
    desk = Desk()
    order = await desk.place(type=OrderType.MARKET, limit_price="")
    assert order.protection_price == Decimal("1575.00")  # 5 % above the last price
    assert desk.funds.blocks[order.order_id] == ("CASH", Decimal("15750.00"))


async def test_a_sell_blocks_shares() -> None:
    desk = Desk()
    order = await desk.place(symbol="TCS", side=Side.SELL, limit_price="3500.00")
    assert desk.funds.blocks[order.order_id] == ("SHARES", Decimal(10))
    assert desk.funds.shares["TCS"] == 10


async def test_the_same_key_and_request_is_the_same_order() -> None:
    desk = Desk()
    first = await desk.place()
    again = await desk.place()
    assert again.order_id == first.order_id
    assert len(desk.store.book.orders) == 1 and len(desk.funds.blocks) == 1


async def test_the_same_key_with_another_request_is_refused() -> None:
    desk = Desk()
    first = await desk.place()
    error = await refused(desk.place(quantity=11))
    assert isinstance(error, AlreadyExists) and error.reason == "REQUEST_ID_REUSED"
    assert error.metadata["order"] == f"users/{USER}/orders/{first.order_id}"


async def test_refused_funds_keep_nothing_of_the_order() -> None:
    desk = Desk()
    error = await refused(desk.place(quantity=1000))
    assert error.reason == "INSUFFICIENT_FUNDS"
    assert desk.store.book.orders == {} and desk.funds.blocks == {}


async def test_a_user_without_an_account_is_told_so() -> None:
    desk = Desk()
    desk.funds.has_account = False
    error = await refused(desk.place())
    assert isinstance(error, FailedPrecondition) and error.reason == "ACCOUNT_NOT_FOUND"
    assert desk.store.book.orders == {}


async def test_an_unknown_funds_outcome_leaves_the_order_for_a_retry() -> None:
    desk = Desk()
    desk.funds.fail_next = Unavailable("svc_funds is down")
    error = await refused(desk.place())
    assert isinstance(error, Unavailable)
    (kept,) = desk.store.book.orders.values()
    assert kept.status is Status.FUNDS_PENDING
    retried = await desk.place()
    assert retried.order_id == kept.order_id and retried.status is Status.PENDING_EXCHANGE


async def test_the_kill_switch_refuses_new_orders_but_a_retry_gets_its_order() -> None:
    desk = Desk()
    placed = await desk.place()
    desk.controls.current = TradingControls(trading_halted=True, halt_reason="drill")
    error = await refused(desk.place(key="k2"))
    assert error.reason == "TRADING_HALTED"
    assert (await desk.place()).order_id == placed.order_id


async def test_a_halted_symbol_refuses_orders_in_it_only() -> None:
    desk = Desk()
    desk.controls.current = TradingControls(halted_symbols=frozenset({"INFY"}))
    assert (await refused(desk.place())).reason == "SYMBOL_HALTED"
    await desk.place(key="k2", symbol="TCS", limit_price="3500.00")


async def test_validation_and_risk_refuse_before_anything_is_written() -> None:
    desk = Desk(RiskLimits(max_order_quantity=50))
    assert (await refused(desk.place(symbol="NOPE"))).reason == "UNKNOWN_SYMBOL"
    assert (await refused(desk.place(quantity=51))).reason == "QUANTITY_LIMIT"
    assert (await refused(desk.place(limit_price="1490.03"))).reason == "PRICE_NOT_ON_TICK"
    assert (await refused(desk.place(limit_price="2000.00"))).reason == "PRICE_OUTSIDE_COLLAR"
    assert desk.store.book.orders == {} and desk.store.commits == 0


async def test_the_order_rate_refuses_past_the_users_tokens() -> None:
    desk = Desk()
    desk.store.order_tokens = 1
    await desk.place()
    assert (await refused(desk.place(key="k2"))).reason == "ORDER_RATE_LIMITED"


async def test_past_capacity_placements_are_refused_at_once() -> None:
    desk = Desk()
    desk.entry.max_placing = 0
    error = await refused(desk.place())
    assert error.reason == "SERVER_BUSY" and error.retry_after_seconds == 1.0
    assert desk.store.book.orders == {}


async def test_cancel_asks_the_exchange_once_per_request_id() -> None:
    desk = Desk()
    order = await desk.place()
    cancelling = await desk.entry.cancel(USER, order.order_id, "c1")
    assert cancelling.status is Status.PENDING_CANCEL
    assert (CommandKind.CANCEL, order.order_id) in desk.store.book.commands
    again = await desk.entry.cancel(USER, order.order_id, "c1")
    assert again.status is Status.PENDING_CANCEL
    assert desk.store.book.commands.count((CommandKind.CANCEL, order.order_id)) == 1
    # A second cancel under a new id changes nothing, but is audited.
    await desk.entry.cancel(USER, order.order_id, "c2")
    assert [e.detail for _, e in desk.store.book.audit][-1] == "a cancel is already pending"


async def test_cancel_of_someone_elses_or_no_order_is_not_found() -> None:
    desk = Desk()
    order = await desk.place()
    assert (await refused(desk.entry.cancel("u_ravi", order.order_id, "c1"))).reason == "ORDER_NOT_FOUND"
    assert (await refused(desk.entry.cancel(USER, "ord_nope", "c1"))).reason == "ORDER_NOT_FOUND"


async def test_a_request_id_reused_for_another_action_is_refused() -> None:
    desk = Desk()
    order = await desk.place()
    await desk.entry.cancel(USER, order.order_id, "r1")
    error = await refused(desk.entry.modify(USER, order.order_id, ModificationDraft(quantity=5), "r1"))
    assert error.reason == "REQUEST_ID_REUSED"


async def test_an_order_still_being_accepted_cannot_be_cancelled_yet() -> None:
    desk = Desk()
    desk.funds.fail_next = Unavailable("svc_funds is down")
    await refused(desk.place())
    (pending,) = desk.store.book.orders
    error = await refused(desk.entry.cancel(USER, pending, "c1"))
    assert isinstance(error, Aborted) and error.reason == "ORDER_BEING_ACCEPTED"


async def test_a_bigger_modification_raises_the_block_first() -> None:
    desk = Desk()
    order = desk.opened(await desk.place())
    modified = await desk.entry.modify(USER, order.order_id, ModificationDraft(quantity=20), "m1")
    assert modified.status is Status.PENDING_REPLACE
    assert desk.funds.blocks[order.order_id] == ("CASH", Decimal("29800.00"))
    assert (CommandKind.REPLACE, order.order_id) in desk.store.book.commands


async def test_a_modification_funds_refuse_writes_nothing() -> None:
    desk = Desk()
    order = desk.opened(await desk.place())
    commits = desk.store.commits
    error = await refused(desk.entry.modify(USER, order.order_id, ModificationDraft(quantity=500), "m1"))
    assert error.reason == "INSUFFICIENT_FUNDS"
    assert desk.store.commits == commits and desk.store.book.orders[order.order_id] == order


async def test_a_modification_before_the_exchange_took_the_order_is_refused() -> None:
    desk = Desk()
    order = await desk.place()
    error = await refused(desk.entry.modify(USER, order.order_id, ModificationDraft(quantity=5), "m1"))
    assert error.reason == "ORDER_NOT_MODIFIABLE" and error.metadata["status"] == "PENDING_EXCHANGE"


async def test_a_modification_that_changes_nothing_or_a_finished_order_is_refused() -> None:
    desk = Desk()
    order = desk.opened(await desk.place())
    assert (
        await refused(desk.entry.modify(USER, order.order_id, ModificationDraft(quantity=10), "m1"))
    ).reason == "NO_CHANGE"
    await desk.entry.cancel(USER, order.order_id, "c1")
    error = await refused(desk.entry.modify(USER, order.order_id, ModificationDraft(quantity=5), "m2"))
    assert error.reason == "ORDER_NOT_MODIFIABLE" and error.metadata["status"] == "PENDING_CANCEL"
    assert (
        await refused(desk.entry.modify(USER, "ord_nope", ModificationDraft(quantity=5), "m3"))
    ).reason == "ORDER_NOT_FOUND"
