"""Order commands as the executor understands them, their validation, and ClOrdIDs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from svc_exec.domain.model import OrdType, Side, TimeInForce
from svc_runtime import names

PRICE_PLACES = 2
# FIX ClOrdID: unique forever. The first is the order id; each cancel or replace adds ".n".
CL_ORD_SEPARATOR = "."


class InvalidCommand(Exception):
    """A command the executor refuses to send; the reason goes back as a rejection."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CommandMeta:
    command_id: str
    order_id: str
    user_id: str
    request_id: str = ""
    # W3C traceparent of the span that delivered the command, when tracing is on.
    traceparent: str = ""


@dataclass(frozen=True)
class NewOrder:
    meta: CommandMeta
    symbol: str
    side: Side
    ord_type: OrdType
    time_in_force: TimeInForce
    quantity: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    expire_date: date | None = None  # GTD only
    display_quantity: int = 0  # an iceberg's shares shown at a time (MaxFloor); 0 shows all

    @property
    def cl_ord_id(self) -> str:
        return first_cl_ord_id(self.meta.order_id)


@dataclass(frozen=True)
class CancelOrder:
    meta: CommandMeta
    symbol: str
    side: Side
    quantity: int


@dataclass(frozen=True)
class ReplaceOrder:
    meta: CommandMeta
    symbol: str
    side: Side
    ord_type: OrdType
    time_in_force: TimeInForce
    quantity: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    display_quantity: int = 0  # restated with every replace, as FIX wants


@dataclass(frozen=True)
class QueryStatus:
    meta: CommandMeta
    symbol: str
    side: Side


@dataclass(frozen=True)
class Refused:
    """A command that failed validation: nothing is sent, the OMS hears why."""

    meta: CommandMeta
    kind: str  # "new", "cancel", "replace", "status"
    reason: str


Command = NewOrder | CancelOrder | ReplaceOrder | QueryStatus
Amendment = CancelOrder | ReplaceOrder


def first_cl_ord_id(order_id: str) -> str:
    return order_id


def next_cl_ord_id(order_id: str, counter: int) -> str:
    return f"{order_id}{CL_ORD_SEPARATOR}{counter}"


def check_symbol(symbol: str) -> str:
    if not names.SYMBOL.match(symbol or ""):
        raise InvalidCommand(f"symbol {symbol!r} is not a valid instrument symbol")
    return symbol


def check_quantity(quantity: int) -> int:
    if quantity <= 0:
        raise InvalidCommand(f"quantity must be a positive number of shares, got {quantity}")
    return quantity


def check_prices(ord_type: OrdType, limit_price: Decimal | None, stop_price: Decimal | None) -> None:
    """A limit price exactly when the type has one, likewise the stop price; both positive
    rupee prices with at most two decimals. Tick sizes are the exchange's to enforce."""
    for name, price, needed in (
        ("limit price", limit_price, ord_type.has_limit_price),
        ("stop price", stop_price, ord_type.has_stop_price),
    ):
        if needed and price is None:
            raise InvalidCommand(f"{ord_type.name} order needs a {name}")
        if not needed and price is not None:
            raise InvalidCommand(f"{ord_type.name} order takes no {name}")
        if price is not None:
            if price <= 0:
                raise InvalidCommand(f"{name} must be positive")
            exponent = price.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent > PRICE_PLACES:
                raise InvalidCommand(f"{name} has more than {PRICE_PLACES} decimals")


def check_display_quantity(ord_type: OrdType, quantity: int, display: int) -> None:
    """An iceberg shows part of a priced order: 0 < display < quantity. The broker's own
    rules (lots, the least share shown) are checked before a command is issued."""
    if not display:
        return
    if not ord_type.has_limit_price:
        raise InvalidCommand(f"{ord_type.name} order cannot have a display quantity")
    if not 0 < display < quantity:
        raise InvalidCommand(f"display quantity {display} must be above 0 and below the quantity {quantity}")


def validate(command: Command) -> Command:
    """Raise InvalidCommand for anything the exchange should never see."""
    check_symbol(command.symbol)
    if isinstance(command, NewOrder | ReplaceOrder):
        check_quantity(command.quantity)
        check_prices(command.ord_type, command.limit_price, command.stop_price)
        check_display_quantity(command.ord_type, command.quantity, command.display_quantity)
    elif isinstance(command, CancelOrder):
        check_quantity(command.quantity)
    return command
