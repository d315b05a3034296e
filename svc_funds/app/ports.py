"""The ports the application needs; the PostgreSQL and gRPC adapters implement them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from svc_funds.domain.accounts import Account
from svc_funds.domain.invariants import AccountKey
from svc_funds.domain.ledger import Block, Changes, LedgerState, Withdrawal
from svc_funds.domain.model import BlockState
from svc_funds.domain.operations import Needs
from svc_funds.domain.portfolio import DaySettlement, HoldingRow, HoldingState, PositionRow
from svc_funds.domain.statements import ContractFill, ContractNote, Movement, Statement


class LedgerUnitOfWork(Protocol):
    """One database transaction of the ledger engine."""

    async def load(self, needs: Needs, *, read_blocks: bool = True) -> LedgerState:
        """Lock and read every row `needs` names (and the owners of the blocks found), in
        one fixed order: blocks, cash, shares, each in key order. Share balances of existing
        users are created, empty, when missing. House accounts are given at zero: no rule
        reads their balance, and `save` locks them (after everything else, in key order)
        and adds their balances to what the batch moved. `read_blocks=False` skips reading
        blocks (a batch that only creates them)."""
        ...

    async def save(self, changes: Changes) -> None: ...


class LedgerStore(Protocol):
    def unit_of_work(self) -> AbstractAsyncContextManager[LedgerUnitOfWork]: ...

    def is_retryable(self, error: BaseException) -> bool:
        """A conflict with a concurrent transaction (unique key raced, deadlock,
        serialization failure) or a lost connection: running the batch again is safe."""
        ...


@dataclass(frozen=True)
class CreatedAccount:
    account: Account
    created: bool  # False: an earlier call with the same request id created it


class AccountStore(Protocol):
    async def create(
        self, user_id: str, username: str, display_name: str, password_hash: str, request_id: str
    ) -> CreatedAccount | None:
        """Create the account and its empty balances; None if the username is taken by
        another request."""
        ...

    async def get(self, user_id: str) -> Account | None: ...

    async def credentials(self, username: str) -> tuple[Account, str] | None: ...

    async def list(self, after: str, limit: int) -> list[Account]: ...


@dataclass(frozen=True)
class EntryRow:
    entry_id: int
    txn_id: str
    user_id: str
    account: str
    unit: str
    amount: Decimal
    balance_after: Decimal
    kind: str
    order_id: str | None
    exec_id: str | None
    request_id: str | None
    description: str
    created_at: datetime
    tag: str = ""


@dataclass(frozen=True)
class FundsRow:
    user_id: str
    available: Decimal
    blocked: Decimal
    dues: Decimal
    updated_at: datetime


class FundsQueries(Protocol):
    async def funds(self, user_id: str) -> FundsRow | None: ...

    async def user_exists(self, user_id: str) -> bool: ...

    async def entries(self, user_id: str, before: int | None, limit: int) -> list[EntryRow]: ...

    async def block(self, order_id: str) -> Block | None: ...

    async def blocks(
        self, user_id: str | None, state: BlockState | None, after: str, limit: int
    ) -> list[Block]: ...


@dataclass(frozen=True)
class PortfolioRows:
    holdings: list[HoldingRow]
    positions: list[PositionRow]
    blocked_shares: dict[str, int]
    # Realized P&L of the days the end of day closed, newest first (at most DAILY_PNL_DAYS).
    daily_realized: list[tuple[date, Decimal]] = field(default_factory=list)
    # Shares bought net (CNC), by trading day and symbol, of the days the end of day closed
    # in the last RECENT_DAYS: the holdings' part that may not have settled yet.
    recent_buys: list[tuple[date, str, int]] = field(default_factory=list)


DAILY_PNL_DAYS = 30
RECENT_DAYS = 10


EndOfDayFold = Callable[[dict[tuple[str, str], HoldingState], list[PositionRow]], DaySettlement]


@dataclass(frozen=True)
class EndOfDayResult:
    already_closed: bool
    positions_settled: int
    anomalies: list[str] = field(default_factory=list)


class PortfolioStore(Protocol):
    async def rows(self, user_id: str, tag: str = "") -> PortfolioRows:
        """Holdings and unsettled positions; with a tag, only the positions its fills made
        (from the fills with that tag) and no holdings (a holding mixes every order's shares)."""
        ...

    async def run_end_of_day(self, day: date, fold: EndOfDayFold) -> EndOfDayResult:
        """In one transaction: claim `day` (once ever), lock every unsettled position of that
        day or earlier and the holdings they touch, fold them with `fold`, write holdings
        back and move the positions to history."""
        ...


class QuoteSource(Protocol):
    async def last_prices(self, symbols: list[str]) -> dict[str, Decimal]:
        """Last traded prices of the symbols it knows; an empty answer when unavailable."""
        ...


@dataclass
class AuditFigures:
    """Everything the invariant checks compare, read from one snapshot."""

    accounts: int
    unbalanced: list[tuple[str, str, Decimal]]  # (journal transaction, unit, sum)
    orphans: list[tuple[int, str]]  # (entry, user) of entries whose transaction is missing
    balances: dict[AccountKey, Decimal]  # materialized, by (user or "", account)
    rebuilt: dict[AccountKey, Decimal]  # sums of journal entries
    last_balance_after: dict[AccountKey, Decimal]  # balance_after of each account's latest entry
    # (user, account, entry, expected, recorded) of entries whose balance_after is not the
    # previous entry's plus their amount (at most the first hundred)
    broken_chains: list[tuple[str, str, int, Decimal, Decimal]]
    active_blocks: dict[
        AccountKey, Decimal
    ]  # remaining of ACTIVE blocks, by (user, cash_blocked / shares_blocked:S)
    bad_blocks: list[tuple[str, str, str]]  # (user, order, what is wrong)
    fills_by_block: list[tuple[str, str, int, int, int]]  # (user, order, block filled, fills sum, order qty)
    shares_from_trades: dict[AccountKey, Decimal]  # (user, shares:S) → fills + share deposits
    shares_in_portfolio: dict[AccountKey, Decimal]  # (user, shares:S) → holdings + unsettled positions
    parked: list[tuple[str, str, str]]  # (exec id, user, reason)
    payouts_balance: Decimal = Decimal(0)  # house:payouts
    withdrawals_held: Decimal = Decimal(0)  # sum of HELD withdrawals
    # (user, withdrawal, what is wrong) of withdrawals whose journal does not match their state
    bad_withdrawals: list[tuple[str, str, str]] = field(default_factory=list)


class AuditStore(Protocol):
    async def figures(self) -> AuditFigures: ...


Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class BankAccount:
    user_id: str
    account_number: str
    ifsc: str


@dataclass(frozen=True)
class PayoutInstruction:
    """What the bank is asked to pay: keyed by the withdrawal id, so asking twice pays once."""

    withdrawal_id: str
    account_number: str
    ifsc: str
    amount: Decimal


@dataclass(frozen=True)
class PayoutOutcome:
    paid: bool
    bank_reference: str = ""  # the bank's id of the transfer, when paid
    failure: str = ""  # why not, when refused


class Payouts(Protocol):
    """The bank that pays withdrawals out. Both calls are safe to repeat."""

    async def send(self, instruction: PayoutInstruction) -> None:
        """Ask for the payout (accepted for later; the same withdrawal id again is a no-op)."""
        ...

    async def outcome(self, withdrawal_id: str) -> PayoutOutcome | None:
        """The bank's final answer, or None while it is still processing (or never heard of it)."""
        ...


class WithdrawalQueries(Protocol):
    async def bank_account(self, user_id: str) -> BankAccount | None: ...

    async def set_bank_account(self, account: BankAccount) -> bool:
        """Register (or replace) the user's account; False if the user does not exist."""
        ...

    async def withdrawal(self, withdrawal_id: str) -> Withdrawal | None: ...

    async def withdrawals(
        self, user_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> list[Withdrawal]:
        """The user's withdrawals, newest first, strictly before the (created_at, id) given."""
        ...

    async def held(self, limit: int) -> list[Withdrawal]:
        """Withdrawals still HELD (waiting for the bank), oldest first."""
        ...

    async def unsettled_proceeds(self, user_id: str) -> Decimal:
        """Net proceeds (value − charges) of the user's sales not yet settled by end of day."""
        ...


@dataclass(frozen=True)
class StatementRows:
    """A user's rupee ledger over a range, from one snapshot."""

    opening: Decimal  # every rupee entry before the range
    movements: list[Movement]  # per journal transaction in the range, in posting order
    closing: Decimal  # every rupee entry up to the end of the range


@dataclass(frozen=True)
class ContractRows:
    fills: list[ContractFill]  # the day's fills with the charges posted for each
    ledger_net: Decimal  # what the fills' journal transactions moved in the user's rupee accounts


class StatementQueries(Protocol):
    async def statement_rows(self, user_id: str, start: datetime, end: datetime) -> StatementRows:
        """Entries posted in [start, end)."""
        ...

    async def contract_rows(self, user_id: str, day: date) -> ContractRows: ...


class DocumentFormat(StrEnum):
    CSV = "CSV"
    PDF = "PDF"


@dataclass(frozen=True)
class Document:
    content_type: str
    filename: str
    content: bytes


class DocumentRenderer(Protocol):
    def statement(self, statement: Statement, fmt: DocumentFormat) -> Document: ...

    def contract_note(self, note: ContractNote, fmt: DocumentFormat) -> Document: ...
