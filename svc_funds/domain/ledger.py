"""The ledger book: balances, blocks and the double-entry journal of one unit of work.

A `Book` is loaded with the rows a batch of commands touches (locked by the caller), the
commands run against it one after another, and `changes()` says what to write back. Every
movement goes through `move`, which debits one account and credits another by the same
amount in the same unit, so every journal transaction sums to zero per unit by construction,
and every entry records the balance of its account after it.

Each command runs between a checkpoint and either success or `rollback`: a command that
fails (insufficient funds, a reused key, ...) leaves no trace, not even in memory, while
the other commands of its batch go ahead.
"""

from __future__ import annotations

import copy
from collections.abc import MutableSet
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from svc_funds.domain.model import (
    CASH,
    CASH_BLOCKED,
    CASH_DUES,
    CURRENCY,
    SHARES,
    SHARES_BLOCKED,
    SHARES_DUES,
    BlockKind,
    BlockState,
    Product,
    Side,
    WithdrawalState,
    house_unit,
    split_share_account,
)
from svc_runtime.errors import NotFound

ZERO = Decimal(0)

# (user_id, account code); user_id None for house accounts.
AccountRef = tuple[str | None, str]
PositionKey = tuple[str, date, str, Product]


class LedgerError(AssertionError):
    """A broken ledger rule: a bug in a command, never a user error."""


@dataclass
class CashBalance:
    user_id: str
    available: Decimal
    blocked: Decimal
    dues: Decimal  # what the user owes: zero or negative
    updated_at: datetime


@dataclass
class ShareBalance:
    user_id: str
    symbol: str
    free: int
    blocked: int
    dues: int  # shares the user owes: zero or negative
    updated_at: datetime


@dataclass
class Block:
    """Cash (BUY) or shares (SELL) set aside for one order."""

    order_id: str
    user_id: str
    kind: BlockKind
    side: Side
    symbol: str
    product: Product
    requested_quantity: int  # the terms it was created with: a retry must repeat them
    requested_price: Decimal | None
    quantity: int  # the order's quantity, after any adjustment
    price: Decimal | None  # cash blocks: the price blocked at
    amount: Decimal  # everything ever blocked (rupees or shares)
    remaining: Decimal  # what is still blocked
    filled_quantity: int
    filled_value: Decimal
    charges: Decimal  # charges of the fills so far
    released: Decimal  # what went back to the user's free balance
    terminal_quantity: int | None  # the exchange's final CumQty, once the order ended there
    terminal_reason: str | None
    state: BlockState
    close_reason: str | None
    created_at: datetime
    updated_at: datetime
    tag: str = ""  # the order's client tag, carried to its fills and ledger entries


@dataclass
class Withdrawal:
    """Cash on its way from a user's account to their registered bank account."""

    withdrawal_id: str
    user_id: str
    request_id: str  # the caller's idempotency key
    amount: Decimal
    account_number: str
    ifsc: str
    state: WithdrawalState
    failure: str  # why the bank refused it (RETURNED)
    bank_reference: str  # the bank's id of the payout (PAID)
    created_at: datetime
    updated_at: datetime


@dataclass
class Entry:
    user_id: str | None
    account: str
    unit: str
    amount: Decimal
    balance_after: Decimal
    kind: str
    description: str


@dataclass
class JournalTxn:
    kind: str
    user_id: str | None
    order_id: str | None
    exec_id: str | None
    request_id: str | None
    description: str
    created_at: datetime
    entries: list[Entry] = field(default_factory=list)
    tag: str = ""  # the client tag of the order it is for, if any


@dataclass(frozen=True)
class Fill:
    exec_id: str
    order_id: str
    user_id: str
    symbol: str
    side: Side
    product: Product
    quantity: int
    price: Decimal
    value: Decimal
    charges: Decimal
    trading_day: date
    executed_at: datetime
    tag: str = ""


@dataclass
class PositionDelta:
    buy_quantity: int = 0
    buy_value: Decimal = ZERO
    sell_quantity: int = 0
    sell_value: Decimal = ZERO


@dataclass
class HoldingDelta:
    quantity: int = 0
    cost: Decimal = ZERO


@dataclass(frozen=True)
class StoredRequest:
    """An idempotency key already used, with what its first use answered."""

    key: str
    user_id: str
    fingerprint: str
    response: dict[str, Any]


@dataclass(frozen=True)
class ParkedReport:
    """An execution report that cannot be applied as it is; kept for an operator."""

    exec_id: str
    order_id: str
    user_id: str
    reason: str
    raw: bytes


@dataclass(frozen=True)
class Shortfall:
    """A fill that cost more than its block and the free balance: the rest became dues."""

    user_id: str
    order_id: str
    exec_id: str
    unit: str
    amount: Decimal


@dataclass(frozen=True)
class FundsView:
    user_id: str
    available: Decimal
    blocked: Decimal
    dues: Decimal
    updated_at: datetime

    @property
    def total(self) -> Decimal:
        return self.available + self.blocked

    def to_dict(self) -> dict[str, str]:
        return {
            "user_id": self.user_id,
            "available": str(self.available),
            "blocked": str(self.blocked),
            "dues": str(self.dues),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FundsView:
        return cls(
            data["user_id"],
            Decimal(data["available"]),
            Decimal(data["blocked"]),
            Decimal(data["dues"]),
            datetime.fromisoformat(data["updated_at"]),
        )


@dataclass
class LedgerState:
    """The rows a unit of work loaded (and locked)."""

    cash: dict[str, CashBalance] = field(default_factory=dict)
    shares: dict[tuple[str, str], ShareBalance] = field(default_factory=dict)
    # House accounts' balances, or zero for each: no rule reads a house balance, so a store
    # may lock them only when it writes and add its balances to the entries then.
    house: dict[str, Decimal] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    requests: dict[str, StoredRequest] = field(default_factory=dict)
    seen_exec_ids: set[str] = field(default_factory=set)
    withdrawals: dict[str, Withdrawal] = field(default_factory=dict)


@dataclass
class Changes:
    """What a unit of work writes back."""

    cash: list[CashBalance]
    shares: list[ShareBalance]
    house: dict[str, Decimal]
    new_blocks: list[Block]
    updated_blocks: list[Block]
    journal: list[JournalTxn]
    requests: list[StoredRequest]
    fills: list[Fill]
    parked: list[ParkedReport]
    positions: dict[PositionKey, PositionDelta]
    holdings: dict[tuple[str, str], HoldingDelta]
    withdrawals: list[Withdrawal] = field(default_factory=list)  # new or changed

    def __bool__(self) -> bool:
        return any(
            (
                self.cash,
                self.shares,
                self.house,
                self.new_blocks,
                self.updated_blocks,
                self.journal,
                self.requests,
                self.fills,
                self.parked,
                self.positions,
                self.holdings,
                self.withdrawals,
            )
        )


_CASH_FIELDS = {CASH: "available", CASH_BLOCKED: "blocked", CASH_DUES: "dues"}
_SHARE_FIELDS = {SHARES: "free", SHARES_BLOCKED: "blocked", SHARES_DUES: "dues"}


def unit_of(account: AccountRef) -> str:
    user_id, code = account
    if user_id is None:
        return house_unit(code)
    if code in _CASH_FIELDS:
        return CURRENCY
    return split_share_account(code)[1]


class Book:
    def __init__(self, state: LedgerState, now: datetime) -> None:
        self.cash = state.cash
        self.shares = state.shares
        self.house = state.house
        self.blocks = state.blocks
        self.requests = state.requests
        self.seen_exec_ids = state.seen_exec_ids
        self.withdrawals = state.withdrawals
        self.now = now
        self.journal: list[JournalTxn] = []
        self.new_requests: list[StoredRequest] = []
        self.fills: list[Fill] = []
        self.parked: list[ParkedReport] = []
        self.shortfalls: list[Shortfall] = []
        self.positions: dict[PositionKey, PositionDelta] = {}
        self.holdings: dict[tuple[str, str], HoldingDelta] = {}
        self._new_blocks: dict[str, Block] = {}
        self._dirty_cash: set[str] = set()
        self._dirty_shares: set[tuple[str, str]] = set()
        self._dirty_house: set[str] = set()
        self._dirty_blocks: set[str] = set()
        self._dirty_withdrawals: set[str] = set()
        # What to do to take a command back, newest last: (setattr, obj, attr, old value) or
        # (a callable, its argument). Tuples, not closures: a batch records thousands.
        self._undo: list[tuple[Any, ...]] = []

    # --- all-or-nothing commands -------------------------------------------------------
    def checkpoint(self) -> int:
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        while len(self._undo) > mark:
            action, *args = self._undo.pop()
            action(*args)

    def set(self, obj: object, attr: str, value: object) -> None:
        self._undo.append((setattr, obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    def _append(self, items: list[Any], item: object) -> None:
        items.append(item)
        self._undo.append((items.pop,))

    def _put(self, mapping: dict[Any, Any], key: object, value: object) -> None:
        if key in mapping:
            self._undo.append((mapping.__setitem__, key, mapping[key]))
        else:
            self._undo.append((mapping.pop, key))
        mapping[key] = value

    def _add(self, items: MutableSet[Any], item: object) -> None:
        if item not in items:
            items.add(item)
            self._undo.append((items.discard, item))

    # --- lookups -----------------------------------------------------------------------
    def cash_of(self, user_id: str) -> CashBalance:
        balance = self.cash.get(user_id)
        if balance is None:
            raise NotFound(
                f"user {user_id} not found", reason="USER_NOT_FOUND", metadata={"user_id": user_id}
            )
        return balance

    def shares_of(self, user_id: str, symbol: str) -> ShareBalance:
        self.cash_of(user_id)
        balance = self.shares.get((user_id, symbol))
        if balance is None:  # the unit of work creates a row for every (user, symbol) it names
            raise LedgerError(f"share balance {user_id}/{symbol} was not loaded")
        return balance

    def funds_view(self, user_id: str) -> FundsView:
        b = self.cash_of(user_id)
        return FundsView(user_id, b.available, b.blocked, b.dues, b.updated_at)

    # --- journal -----------------------------------------------------------------------
    def transaction(
        self,
        kind: str,
        *,
        user_id: str | None,
        order_id: str | None = None,
        exec_id: str | None = None,
        request_id: str | None = None,
        description: str = "",
    ) -> JournalTxn:
        # An order's transactions (block, fills, charges, release) carry its client tag.
        block = self.blocks.get(order_id) if order_id else None
        tag = block.tag if block is not None else ""
        txn = JournalTxn(kind, user_id, order_id, exec_id, request_id or None, description, self.now, tag=tag)
        self._append(self.journal, txn)
        return txn

    def move(
        self,
        txn: JournalTxn,
        source: AccountRef,
        dest: AccountRef,
        amount: Decimal | int,
        *,
        kind: str,
        description: str = "",
    ) -> None:
        """Debit `source` and credit `dest` by `amount` (positive, same unit)."""
        amount = Decimal(amount)
        if amount <= 0:
            raise LedgerError(f"a movement must be positive, not {amount}")
        unit = unit_of(source)
        if unit_of(dest) != unit:
            raise LedgerError(f"cannot move {unit} from {source} to {dest}")
        if unit == CURRENCY and amount != amount.quantize(Decimal("0.01")):
            raise LedgerError(f"{amount} is not a whole number of paise")
        if unit != CURRENCY and amount != amount.to_integral_value():
            raise LedgerError(f"{amount} is not a whole number of shares")
        self._post(txn, source, -amount, unit=unit, kind=kind, description=description)
        self._post(txn, dest, amount, unit=unit, kind=kind, description=description)

    def _post(
        self, txn: JournalTxn, account: AccountRef, amount: Decimal, *, unit: str, kind: str, description: str
    ) -> None:
        after = self._apply(account, amount)
        self._append(txn.entries, Entry(account[0], account[1], unit, amount, after, kind, description))

    def _apply(self, account: AccountRef, amount: Decimal) -> Decimal:
        user_id, code = account
        if user_id is None:
            if code not in self.house:
                raise LedgerError(f"house account {code} was not loaded")
            after = self.house[code] + amount
            self._put(self.house, code, after)
            self._dirty_house.add(code)
            return after
        if code in _CASH_FIELDS:
            cash = self.cash_of(user_id)
            attr = _CASH_FIELDS[code]
            after = getattr(cash, attr) + amount
            self._check_sign(code, after)
            self.set(cash, attr, after)
            cash.updated_at = self.now  # a timestamp only: not worth undoing
            self._dirty_cash.add(user_id)
            return after
        kind, symbol = split_share_account(code)
        if kind not in _SHARE_FIELDS:
            raise LedgerError(f"unknown account {code}")
        shares = self.shares_of(user_id, symbol)
        attr = _SHARE_FIELDS[kind]
        value = getattr(shares, attr) + int(amount)
        self._check_sign(kind, value)
        self.set(shares, attr, value)
        shares.updated_at = self.now
        self._dirty_shares.add((user_id, symbol))
        return Decimal(value)

    @staticmethod
    def _check_sign(code: str, value: Decimal | int) -> None:
        if code in (CASH_DUES, SHARES_DUES):
            if value > 0:
                raise LedgerError(f"{code} cannot be positive ({value})")
        elif value < 0:
            raise LedgerError(f"{code} cannot go negative ({value})")

    # --- other records -----------------------------------------------------------------
    def add_block(self, block: Block) -> None:
        if block.order_id in self.blocks:
            raise LedgerError(f"block {block.order_id} exists")
        self._put(self.blocks, block.order_id, block)
        self._put(self._new_blocks, block.order_id, block)

    def touch_block(self, block: Block, **changes: object) -> None:
        for attr, value in changes.items():
            self.set(block, attr, value)
        self.set(block, "updated_at", self.now)
        self._dirty_blocks.add(block.order_id)

    def add_withdrawal(self, withdrawal: Withdrawal) -> None:
        if withdrawal.withdrawal_id in self.withdrawals:
            raise LedgerError(f"withdrawal {withdrawal.withdrawal_id} exists")
        self._put(self.withdrawals, withdrawal.withdrawal_id, withdrawal)
        self._add(self._dirty_withdrawals, withdrawal.withdrawal_id)

    def touch_withdrawal(self, withdrawal: Withdrawal, **changes: object) -> None:
        for attr, value in changes.items():
            self.set(withdrawal, attr, value)
        self.set(withdrawal, "updated_at", self.now)
        self._add(self._dirty_withdrawals, withdrawal.withdrawal_id)

    def remember(self, key: str, user_id: str, fingerprint: str, response: dict[str, Any]) -> None:
        stored = StoredRequest(key, user_id, fingerprint, response)
        self._put(self.requests, key, stored)
        self._append(self.new_requests, stored)

    def add_fill(self, fill: Fill) -> None:
        self._append(self.fills, fill)
        self._add(self.seen_exec_ids, fill.exec_id)

    def park(self, parked: ParkedReport) -> None:
        self._append(self.parked, parked)
        self._add(self.seen_exec_ids, parked.exec_id)

    def note_shortfall(self, shortfall: Shortfall) -> None:
        self._append(self.shortfalls, shortfall)

    def add_position(self, key: PositionKey, side: Side, quantity: int, value: Decimal) -> None:
        delta = self.positions.get(key)
        if delta is None:
            delta = PositionDelta()
            self._put(self.positions, key, delta)
        if side is Side.BUY:
            self.set(delta, "buy_quantity", delta.buy_quantity + quantity)
            self.set(delta, "buy_value", delta.buy_value + value)
        else:
            self.set(delta, "sell_quantity", delta.sell_quantity + quantity)
            self.set(delta, "sell_value", delta.sell_value + value)

    def add_holding(self, user_id: str, symbol: str, quantity: int, cost: Decimal) -> None:
        key = (user_id, symbol)
        delta = self.holdings.get(key)
        if delta is None:
            delta = HoldingDelta()
            self._put(self.holdings, key, delta)
        self.set(delta, "quantity", delta.quantity + quantity)
        self.set(delta, "cost", delta.cost + cost)

    def changes(self) -> Changes:
        new = [b for oid, b in self._new_blocks.items() if self.blocks.get(oid) is b]
        updated = [
            self.blocks[oid]
            for oid in sorted(self._dirty_blocks - set(self._new_blocks))
            if oid in self.blocks
        ]
        return Changes(
            cash=[self.cash[u] for u in sorted(self._dirty_cash)],
            shares=[self.shares[k] for k in sorted(self._dirty_shares)],
            house={code: self.house[code] for code in sorted(self._dirty_house)},
            new_blocks=new,
            updated_blocks=updated,
            journal=[t for t in self.journal if t.entries],
            requests=list(self.new_requests),
            fills=list(self.fills),
            parked=list(self.parked),
            positions=dict(self.positions),
            holdings=dict(self.holdings),
            withdrawals=[self.withdrawals[w] for w in sorted(self._dirty_withdrawals)],
        )


def snapshot(block: Block) -> Block:
    """A copy of a block to hand out of the unit of work."""
    return copy.copy(block)
