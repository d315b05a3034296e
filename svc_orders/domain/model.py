"""The order and what happens to it, in the domain's words."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

ZERO = Decimal(0)
_AVERAGE_PLACES = Decimal("0.0001")
_PAISA = Decimal("0.01")


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"  # stop-loss market (SL-M)
    STOP_LIMIT = "STOP_LIMIT"  # stop-loss limit (SL)


class TimeInForce(StrEnum):
    DAY = "DAY"  # expires at the close of the day it was placed
    IOC = "IOC"
    FOK = "FOK"
    GTC = "GTC"  # good till cancelled: works across closes
    GTD = "GTD"  # good till date: expires at the close of its expire date

    @property
    def rests_overnight(self) -> bool:
        return self in (TimeInForce.GTC, TimeInForce.GTD)

    @property
    def rests(self) -> bool:
        """What is not traded at once waits in the book (not IOC or FOK)."""
        return self not in (TimeInForce.IOC, TimeInForce.FOK)


class Product(StrEnum):
    CNC = "CNC"
    INTRADAY = "INTRADAY"


# --- order types as data --------------------------------------------------------------------
class Protection(StrEnum):
    """How an order without a limit price of its own is bounded: it goes to the exchange as
    a limit at the protection price (reference ± market protection), and a BUY blocks funds
    at that price, so no fill can cost more than was blocked."""

    NONE = "NONE"  # the client's limit price is the exchange's limit
    AT_REFERENCE = "AT_REFERENCE"  # from the last price (or close) when the order is placed
    AT_STOP = "AT_STOP"  # from the stop price, which is where it will trade


@dataclass(frozen=True)
class OrderTypeRules:
    """What one order type needs and how the broker handles it. Validation, risk, the
    price funds are blocked at, the state machine and the command sent to the executor all
    read this table, so a new type is one row here (plus its contracts)."""

    takes_limit_price: bool
    takes_stop_price: bool
    validities: frozenset[TimeInForce]
    # Why only those validities (told to a client who asks for another).
    validity_rule: str
    protection: Protection
    # The type the exchange is sent: protected types go out as their limit counterparts.
    sent_as: OrderType
    # Waits in TRIGGER_PENDING until the stop price trades.
    waits_for_trigger: bool
    # May be an iceberg: the least share of its quantity it must show, in percent (NSE's
    # rule for disclosed quantity); None: it always shows in full. Only what rests can hide
    # (DAY, GTC, GTD), the funds block is for the whole quantity, and the exchange is sent
    # the display quantity as FIX MaxFloor.
    min_display_percent: int | None = None


_ANY_VALIDITY = frozenset(TimeInForce)
_TODAY_ONLY = frozenset({TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK})
_STOP_VALIDITY = "stop orders wait for their trigger, so they must be DAY orders"
_MARKET_VALIDITY = "a market order trades now or not at all: DAY, IOC or FOK"

ORDER_TYPES: dict[OrderType, OrderTypeRules] = {
    OrderType.MARKET: OrderTypeRules(
        takes_limit_price=False,
        takes_stop_price=False,
        validities=_TODAY_ONLY,
        validity_rule=_MARKET_VALIDITY,
        protection=Protection.AT_REFERENCE,
        sent_as=OrderType.LIMIT,
        waits_for_trigger=False,
    ),
    OrderType.LIMIT: OrderTypeRules(
        takes_limit_price=True,
        takes_stop_price=False,
        validities=_ANY_VALIDITY,
        validity_rule="",
        protection=Protection.NONE,
        sent_as=OrderType.LIMIT,
        waits_for_trigger=False,
        min_display_percent=10,
    ),
    OrderType.STOP: OrderTypeRules(
        takes_limit_price=False,
        takes_stop_price=True,
        validities=frozenset({TimeInForce.DAY}),
        validity_rule=_STOP_VALIDITY,
        protection=Protection.AT_STOP,
        sent_as=OrderType.STOP_LIMIT,
        waits_for_trigger=True,
    ),
    OrderType.STOP_LIMIT: OrderTypeRules(
        takes_limit_price=True,
        takes_stop_price=True,
        validities=frozenset({TimeInForce.DAY}),
        validity_rule=_STOP_VALIDITY,
        protection=Protection.NONE,
        sent_as=OrderType.STOP_LIMIT,
        waits_for_trigger=True,
    ),
}


# --- contingent orders as data ---------------------------------------------------------
class Leg(StrEnum):
    """An order's place in a contingent family. A bracket is an ENTRY whose fill spawns a
    TARGET and a STOP_LOSS child; an OCO is a TARGET placed by the client with a STOP_LOSS
    sibling. TARGET and STOP_LOSS of one family form an OCO group: the first to fill
    cancels the other."""

    SINGLE = "SINGLE"
    ENTRY = "ENTRY"
    TARGET = "TARGET"
    STOP_LOSS = "STOP_LOSS"


@dataclass(frozen=True)
class LegRules:
    # Blocks funds or shares of its own. A STOP_LOSS exits the same shares its TARGET
    # sibling already blocked, so it takes none: the exit legs never block twice.
    own_block: bool
    # One of an OCO group: its first fill cancels the live siblings.
    one_cancels_other: bool
    # The order type the broker gives the leg when it creates it (None: the client's).
    type: OrderType | None
    # Where the leg's price comes from on the order that carries the exit terms.
    takes: str


LEGS: dict[Leg, LegRules] = {
    Leg.SINGLE: LegRules(own_block=True, one_cancels_other=False, type=None, takes=""),
    Leg.ENTRY: LegRules(own_block=True, one_cancels_other=False, type=None, takes=""),
    Leg.TARGET: LegRules(own_block=True, one_cancels_other=True, type=OrderType.LIMIT, takes="target"),
    Leg.STOP_LOSS: LegRules(own_block=False, one_cancels_other=True, type=OrderType.STOP, takes="stop_loss"),
}


class Contingency(StrEnum):
    """What a client asks for with an order (the order being the ENTRY or the TARGET)."""

    NONE = "NONE"
    BRACKET = "BRACKET"  # the order is the entry: exits at exit_target / exit_stop once it fills
    OCO = "OCO"  # the order is a SELL LIMIT target; a STOP_LOSS sibling at exit_stop goes with it


@dataclass(frozen=True)
class ExitTerms:
    """The exit prices carried by a bracket's entry, or by an OCO's target (stop only)."""

    contingency: Contingency
    target_price: Decimal | None = None
    stop_price: Decimal | None = None
    # The STOP_LOSS leg goes out as a limit at this price (market protection from its
    # stop), fixed when the order carrying the terms is placed.
    stop_protection: Decimal | None = None


NO_EXIT = ExitTerms(Contingency.NONE)


@dataclass(frozen=True)
class Trail:
    """A trailing stop: the broker moves the stop price after the last price, by a fixed
    amount or a percentage behind it, and only ever towards the market (up for a SELL, down
    for a BUY). One of the two is set."""

    amount: Decimal | None = None
    percent: Decimal | None = None


class Status(StrEnum):
    # Internal: recorded, funds not blocked yet. Clients see PENDING_EXCHANGE.
    FUNDS_PENDING = "FUNDS_PENDING"
    PENDING_EXCHANGE = "PENDING_EXCHANGE"
    OPEN = "OPEN"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    PENDING_CANCEL = "PENDING_CANCEL"
    PENDING_REPLACE = "PENDING_REPLACE"
    TRIGGER_PENDING = "TRIGGER_PENDING"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def public(self) -> Status:
        """What clients are shown."""
        return Status.PENDING_EXCHANGE if self is Status.FUNDS_PENDING else self


TERMINAL = frozenset({Status.FILLED, Status.CANCELLED, Status.REJECTED, Status.EXPIRED})
# Orders the exchange has not acknowledged yet; the sweeper watches these.
PRE_EXCHANGE = frozenset({Status.FUNDS_PENDING, Status.PENDING_EXCHANGE})
STOP_TYPES = frozenset(t for t, rules in ORDER_TYPES.items() if rules.waits_for_trigger)


class EventType(StrEnum):
    ACCEPTED = "ACCEPTED"
    OPENED = "OPENED"
    FILLED = "FILLED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELLED = "CANCELLED"
    MODIFY_REQUESTED = "MODIFY_REQUESTED"
    MODIFIED = "MODIFIED"
    REJECTED = "REJECTED"
    AMEND_REJECTED = "AMEND_REJECTED"
    EXPIRED = "EXPIRED"
    TRIGGERED = "TRIGGERED"
    NEEDS_ATTENTION = "NEEDS_ATTENTION"


class ExecType(StrEnum):
    """What an execution report reports (FIX ExecType, plus cancel rejects)."""

    NEW = "NEW"
    TRADE = "TRADE"
    CANCELED = "CANCELED"
    REPLACED = "REPLACED"
    PENDING_CANCEL = "PENDING_CANCEL"
    PENDING_REPLACE = "PENDING_REPLACE"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    ORDER_STATUS = "ORDER_STATUS"
    CANCEL_REJECTED = "CANCEL_REJECTED"
    TRIGGERED = "TRIGGERED"
    # Not a change: the venue said something svc_exec could not interpret about the order,
    # refused to answer about it, or denies knowing it. Kept for an operator.
    NEEDS_ATTENTION = "NEEDS_ATTENTION"


class ExchangeStatus(StrEnum):
    """The order's state at the exchange (FIX OrdStatus)."""

    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    PENDING_CANCEL = "PENDING_CANCEL"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    PENDING_REPLACE = "PENDING_REPLACE"
    PENDING_NEW = "PENDING_NEW"
    UNKNOWN = "UNKNOWN"


class Actor(StrEnum):
    """Who caused a change, for the audit trail (users appear as `user:{id}`)."""

    ADMIN = "admin"
    SYSTEM = "system"
    EXCHANGE = "exchange"


def user_actor(user_id: str) -> str:
    return f"user:{user_id}"


@dataclass(frozen=True)
class Instrument:
    symbol: str
    tick_size: Decimal
    lot_size: int
    previous_close: Decimal | None = None


@dataclass(frozen=True)
class MarketSnapshot:
    """What the market looked like when something happened (for risk and the audit)."""

    last_price: Decimal | None = None
    bid_price: Decimal | None = None
    ask_price: Decimal | None = None


@dataclass(frozen=True)
class OrderSpec:
    """A validated order request: what the client asked for, with defaults applied."""

    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    product: Product
    quantity: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    expire_date: date | None = None  # GTD only: the last trading date it works
    exit: ExitTerms = NO_EXIT
    trail: Trail | None = None
    display_quantity: int = 0  # an iceberg's shares shown at a time; 0 shows all


@dataclass(frozen=True)
class PendingChange:
    """A cancel or modification sent to the exchange and not yet answered."""

    kind: str  # "CANCEL" or "REPLACE"
    request_id: str
    quantity: int | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    protection_price: Decimal | None = None
    # The block was raised before sending (a bigger order): lower it again if refused.
    block_raised: bool = False


@dataclass(frozen=True)
class Order:
    order_id: str
    user_id: str
    client_order_id: str
    fingerprint: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    product: Product
    quantity: int
    limit_price: Decimal | None
    stop_price: Decimal | None
    # MARKET and STOP orders go to the exchange as limits at this price.
    protection_price: Decimal | None
    status: Status
    create_time: datetime
    update_time: datetime
    filled_quantity: int = 0
    # Σ fill quantity × fill price: the exact basis of the average price.
    filled_value: Decimal = ZERO
    exchange_order_id: str = ""
    status_reason: str = ""
    version: int = 0
    triggered: bool = False
    # While PENDING_CANCEL / PENDING_REPLACE: the request and the status to go back to.
    pending: PendingChange | None = None
    resume_status: Status | None = None
    # The placement's request context, for the audit of later system actions.
    request_id: str = ""
    client_ip: str = ""
    expire_date: date | None = None  # GTD only: the last trading date it works
    tag: str = ""  # the client's label, kept on the order's trades, block and ledger entries
    # Contingent family: the order's role, the entry it exits (bracket legs), the OCO group
    # it belongs to (the group's TARGET's order id), and the exit terms it carries.
    leg: Leg = Leg.SINGLE
    parent_order_id: str = ""
    oco_group: str = ""
    exit: ExitTerms = NO_EXIT
    trail: Trail | None = None
    # An iceberg: the shares the exchange shows at a time (FIX MaxFloor); 0 shows all.
    display_quantity: int = 0

    @property
    def leaves_quantity(self) -> int:
        return 0 if self.status.terminal else self.quantity - self.filled_quantity

    @property
    def in_family(self) -> bool:
        """A leg of a bracket or an OCO group: its changes may concern its other orders."""
        return self.leg is not Leg.SINGLE or bool(self.oco_group)

    @property
    def average_price(self) -> Decimal | None:
        if self.filled_quantity == 0:
            return None
        return average(self.filled_value, self.filled_quantity)

    @property
    def exchange_limit_price(self) -> Decimal | None:
        """The limit the exchange enforces: the user's limit, or the protection price."""
        if ORDER_TYPES[self.type].takes_limit_price:
            return self.limit_price
        return self.protection_price

    @property
    def spec(self) -> OrderSpec:
        return OrderSpec(
            symbol=self.symbol,
            side=self.side,
            type=self.type,
            time_in_force=self.time_in_force,
            product=self.product,
            quantity=self.quantity,
            limit_price=self.limit_price,
            stop_price=self.stop_price,
            expire_date=self.expire_date,
            exit=self.exit,
            trail=self.trail,
            display_quantity=self.display_quantity,
        )


def average(value: Decimal, quantity: int) -> Decimal:
    """Volume-weighted average price: 4 fraction digits at most, 2 when exact at 2."""
    avg = (value / quantity).quantize(_AVERAGE_PLACES, rounding=ROUND_HALF_UP)
    return avg.quantize(_PAISA) if avg == avg.quantize(_PAISA) else avg


@dataclass(frozen=True)
class ExchangeReport:
    """An execution report, in domain terms."""

    exec_id: str
    exec_type: ExecType
    ord_status: ExchangeStatus = ExchangeStatus.UNKNOWN
    order_quantity: int = 0
    last_quantity: int = 0
    last_price: Decimal | None = None
    cumulative_quantity: int = 0
    leaves_quantity: int = 0
    limit_price: Decimal | None = None
    exchange_order_id: str = ""
    text: str = ""
    transact_time: datetime | None = None


@dataclass(frozen=True)
class Fill:
    """One trade of an order at the exchange."""

    exec_id: str
    order_id: str
    quantity: int
    price: Decimal
    # The exchange's cumulative quantity after this fill: unique per order, so a fill
    # reported twice under different exec ids is still recognised.
    cumulative_quantity: int
    execute_time: datetime


@dataclass(frozen=True)
class FundsAction:
    """Something svc_funds must do for an order once the change commits (retried until
    done): release what is left of its block, or resize the block to the order's terms."""

    kind: str  # "RELEASE" or "ADJUST"
    order_id: str
    user_id: str
    reason: str = ""
    quantity: int | None = None
    price: Decimal | None = None


@dataclass(frozen=True)
class Transition:
    """The result of applying one trigger to an order."""

    before: Order
    after: Order
    trigger: str
    event: EventType | None = None
    fill: Fill | None = None
    funds_action: FundsAction | None = None
    # Something odd that was tolerated (logged, and kept in the audit detail).
    anomaly: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.after.version != self.before.version
