"""Account statements and contract notes, made from the ledger's own entries.

A **statement** follows the user's cash — available + blocked + owed, all their rupee
accounts together — over a date range: the opening balance (every rupee entry before the
range), one line per journal transaction that changed it (a block or a release only moves
cash between the user's own accounts, so it nets to zero and is not a line), and the closing
balance. Opening + credits − debits = closing, to the paisa, by construction and checked.

A **contract note** lists one trading day's fills with the charges the ledger posted for each
(by charge), and the day's net: sales − purchases − charges, which must equal what the fills'
journal transactions moved in and out of the user's rupee accounts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from svc_funds.domain.ledger import LedgerError
from svc_funds.domain.model import Side
from svc_runtime.errors import InvalidArgument

ZERO = Decimal("0.00")
MAX_STATEMENT_DAYS = 366


def check_range(start: date, end: date) -> None:
    if end < start or (end - start).days >= MAX_STATEMENT_DAYS:
        raise InvalidArgument(
            f"the range must run forwards and cover at most {MAX_STATEMENT_DAYS} days",
            reason="INVALID_DATE_RANGE",
            field="end_date",
        )


@dataclass(frozen=True)
class Movement:
    """One journal transaction's net effect on a user's rupee accounts."""

    txn_id: str
    posted_at: datetime
    kind: str
    description: str
    order_id: str
    amount: Decimal  # signed: credit positive


@dataclass(frozen=True)
class StatementLine:
    movement: Movement
    balance: Decimal  # after this line


@dataclass(frozen=True)
class Statement:
    user_id: str
    start: date
    end: date
    opening: Decimal
    lines: list[StatementLine]
    closing: Decimal

    @property
    def credits(self) -> Decimal:
        return sum((line.movement.amount for line in self.lines if line.movement.amount > 0), ZERO)

    @property
    def debits(self) -> Decimal:
        return -sum((line.movement.amount for line in self.lines if line.movement.amount < 0), ZERO)


def make_statement(
    user_id: str,
    *,
    start: date,
    end: date,
    opening: Decimal,
    movements: Iterable[Movement],
    ledger_closing: Decimal,
) -> Statement:
    """Lines with running balances; `ledger_closing` (every rupee entry up to the end of the
    range, summed by the database) must be where the lines end."""
    balance = opening
    lines: list[StatementLine] = []
    for m in movements:
        if m.amount == 0:
            continue
        balance += m.amount
        lines.append(StatementLine(m, balance))
    if balance != ledger_closing:
        raise LedgerError(f"statement of {user_id} ends at {balance}, the ledger at {ledger_closing}")
    return Statement(user_id, start, end, opening, lines, balance)


@dataclass(frozen=True)
class ContractFill:
    exec_id: str
    order_id: str
    symbol: str
    side: Side
    product: str
    quantity: int
    price: Decimal
    value: Decimal
    executed_at: datetime
    charges: Mapping[str, Decimal] = field(default_factory=dict)  # posted by the ledger, by charge

    @property
    def total_charges(self) -> Decimal:
        return sum(self.charges.values(), ZERO)

    @property
    def net(self) -> Decimal:
        """What this fill paid the user (positive) or cost them (negative), charges included."""
        signed = self.value if self.side is Side.SELL else -self.value
        return signed - self.total_charges


@dataclass(frozen=True)
class ContractNote:
    user_id: str
    trading_day: date
    fills: list[ContractFill]
    charge_names: list[str]

    @property
    def bought(self) -> Decimal:
        return sum((f.value for f in self.fills if f.side is Side.BUY), ZERO)

    @property
    def sold(self) -> Decimal:
        return sum((f.value for f in self.fills if f.side is Side.SELL), ZERO)

    def charge_total(self, name: str) -> Decimal:
        return sum((f.charges.get(name, ZERO) for f in self.fills), ZERO)

    @property
    def total_charges(self) -> Decimal:
        return sum((f.total_charges for f in self.fills), ZERO)

    @property
    def net(self) -> Decimal:
        """Sales − purchases − charges: positive when the day paid the user."""
        return self.sold - self.bought - self.total_charges


def make_contract_note(
    user_id: str, day: date, fills: list[ContractFill], ledger_net: Decimal, schedule_names: Iterable[str]
) -> ContractNote:
    """The day's note; `ledger_net` (the fills' journal transactions summed over the user's
    rupee accounts) must equal its net."""
    names = list(schedule_names)
    names += sorted({n for f in fills for n in f.charges} - set(names))
    note = ContractNote(user_id, day, fills, names)
    if note.net != ledger_net:
        raise LedgerError(f"contract note of {user_id} for {day} nets {note.net}, the ledger {ledger_net}")
    return note
