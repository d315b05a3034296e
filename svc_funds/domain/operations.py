"""The ledger's commands and what each does to a `Book`.

Commands are plain values (validated where they are made); `execute` runs one against a
book and returns its result, or the `ServiceError` that refused it with nothing changed.
Each command also says which rows it needs (`needs`), so that a unit of work can load and
lock them, in one fixed order, before any command runs.

Money rules, in one place:
- A BUY block sets aside quantity × price plus the most the charges can be, rounded up to
  the paisa; a SELL block sets aside the shares.
- A fill is real and is always applied. A BUY fill is paid from its block first, then from
  available cash, and whatever is still missing becomes dues (the user owes it) instead of
  available cash going negative. The same holds for shares of a SELL fill. Money coming
  back to a user (a deposit, a release, sale proceeds) pays dues off first.
- A block is released exactly once, when its order is over: fully filled, or ended at the
  exchange (cancelled, rejected, expired) with every fill up to the exchange's final
  cumulative quantity applied, or released by the order service for an order that never
  reached the exchange. Fills that arrive after that are still applied, from free balances.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from svc_funds.domain.charges import ChargesSchedule
from svc_funds.domain.ledger import (
    ZERO,
    AccountRef,
    Block,
    Book,
    Fill,
    FundsView,
    JournalTxn,
    ParkedReport,
    Shortfall,
    Withdrawal,
    snapshot,
)
from svc_funds.domain.model import (
    CASH,
    CASH_BLOCKED,
    CASH_DUES,
    CURRENCY,
    HOUSE_BANK,
    HOUSE_EXCHANGE_CASH,
    HOUSE_PAYOUTS,
    MAX_QUANTITY,
    SHARES,
    SHARES_BLOCKED,
    SHARES_DUES,
    BlockKind,
    BlockState,
    Product,
    Side,
    WithdrawalState,
    house_charges,
    house_exchange_shares,
    house_share_deposits,
    money,
    share_account,
    trading_day,
)
from svc_runtime.decimals import round_money_up
from svc_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ServiceError


@dataclass
class Needs:
    """The rows a batch of commands reads and writes."""

    users: set[str] = field(default_factory=set)
    shares: set[tuple[str, str]] = field(default_factory=set)
    orders: set[str] = field(default_factory=set)
    house: set[str] = field(default_factory=set)
    request_keys: set[str] = field(default_factory=set)
    exec_ids: set[str] = field(default_factory=set)
    withdrawals: set[str] = field(default_factory=set)

    def merge(self, other: Needs) -> None:
        self.users |= other.users
        self.shares |= other.shares
        self.orders |= other.orders
        self.house |= other.house
        self.request_keys |= other.request_keys
        self.exec_ids |= other.exec_ids
        self.withdrawals |= other.withdrawals

    def add_block_owners(self, blocks: list[Block]) -> None:
        """A block's owner and, for share blocks, its share balance are needed too."""
        for block in blocks:
            self.users.add(block.user_id)
            if block.kind is BlockKind.SHARES:
                self.shares.add((block.user_id, block.symbol))


# --- commands -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _CashMovement:
    """Money in from or out to the user's bank, idempotent by the caller's request id."""

    user_id: str
    amount: Decimal
    request_id: str
    reference: str = ""
    KIND: ClassVar[str]

    @property
    def key(self) -> str:
        return f"{self.KIND}:{self.user_id}:{self.request_id}"

    def needs(self, schedule: ChargesSchedule) -> Needs:
        return Needs(users={self.user_id}, house={HOUSE_BANK}, request_keys={self.key})


@dataclass(frozen=True)
class Deposit(_CashMovement):
    KIND = "deposit"


@dataclass(frozen=True)
class Withdraw(_CashMovement):
    KIND = "withdraw"


@dataclass(frozen=True)
class RequestWithdrawal:
    """Hold cash for a payout to the user's bank account: it leaves available cash now, and
    the bank's answer later pays it out or returns it (`SettleWithdrawal`)."""

    user_id: str
    amount: Decimal
    request_id: str
    withdrawal_id: str  # made by the caller; a retry answers with the first one's
    account_number: str
    ifsc: str
    # Cash the user has but may not withdraw yet (proceeds of sales not yet settled).
    withheld: Decimal = ZERO

    @property
    def key(self) -> str:
        return f"withdrawal:{self.user_id}:{self.request_id}"

    def needs(self, schedule: ChargesSchedule) -> Needs:
        return Needs(users={self.user_id}, house={HOUSE_PAYOUTS}, request_keys={self.key})


@dataclass(frozen=True)
class SettleWithdrawal:
    """The bank's answer to a held withdrawal: paid out, or refused and returned. Once: a
    withdrawal that is no longer HELD is answered as it is, with nothing written."""

    user_id: str
    withdrawal_id: str
    paid: bool
    bank_reference: str = ""
    failure: str = ""

    def needs(self, schedule: ChargesSchedule) -> Needs:
        return Needs(
            users={self.user_id}, house={HOUSE_PAYOUTS, HOUSE_BANK}, withdrawals={self.withdrawal_id}
        )


@dataclass(frozen=True)
class DepositShares:
    """Shares transferred in from elsewhere, already settled: they become a holding."""

    user_id: str
    symbol: str
    quantity: int
    average_price: Decimal
    request_id: str
    reference: str = ""

    @property
    def key(self) -> str:
        return f"deposit_shares:{self.user_id}:{self.request_id}"

    def needs(self, schedule: ChargesSchedule) -> Needs:
        return Needs(
            users={self.user_id},
            shares={(self.user_id, self.symbol)},
            house={house_share_deposits(self.symbol)},
            request_keys={self.key},
        )


@dataclass(frozen=True)
class BlockCash:
    user_id: str
    order_id: str
    symbol: str
    quantity: int
    price: Decimal
    product: Product
    request_id: str = ""  # for tracing only; the order id is the idempotency key
    tag: str = ""  # the order's client tag

    def needs(self, schedule: ChargesSchedule) -> Needs:
        return Needs(users={self.user_id}, orders={self.order_id})


@dataclass(frozen=True)
class BlockShares:
    user_id: str
    order_id: str
    symbol: str
    quantity: int
    product: Product
    request_id: str = ""
    tag: str = ""

    def needs(self, schedule: ChargesSchedule) -> Needs:
        return Needs(users={self.user_id}, shares={(self.user_id, self.symbol)}, orders={self.order_id})


@dataclass(frozen=True)
class AdjustBlock:
    user_id: str
    order_id: str
    quantity: int
    price: Decimal | None  # cash blocks; None keeps the current price
    request_id: str

    @property
    def key(self) -> str:
        return f"adjust:{self.order_id}:{self.request_id}"

    def needs(self, schedule: ChargesSchedule) -> Needs:
        return Needs(users={self.user_id}, orders={self.order_id}, request_keys={self.key})


@dataclass(frozen=True)
class ReleaseBlock:
    user_id: str
    order_id: str
    reason: str
    request_id: str = ""

    def needs(self, schedule: ChargesSchedule) -> Needs:
        return Needs(users={self.user_id}, orders={self.order_id})


@dataclass(frozen=True)
class ExecReport:
    """What settlement needs from an execution report."""

    exec_id: str
    order_id: str
    user_id: str
    symbol: str
    side: Side | None
    fill_quantity: int  # > 0 only for a fill
    fill_price: Decimal | None
    cumulative_quantity: int
    terminal: str | None  # FILLED, CANCELED, REJECTED or EXPIRED once the order is over
    executed_at: datetime
    request_id: str = ""
    problem: str = ""  # set when the report could not even be read
    trading_day: date | None = None  # None: the exchange-time date of `executed_at`
    raw: bytes = b""


@dataclass(frozen=True)
class ApplyReport:
    report: ExecReport

    def needs(self, schedule: ChargesSchedule) -> Needs:
        r = self.report
        needs = Needs(orders={r.order_id} if r.order_id else set(), exec_ids={r.exec_id})
        if r.user_id:
            needs.users.add(r.user_id)
        if r.fill_quantity > 0 and r.user_id and r.symbol and not r.problem:
            needs.shares.add((r.user_id, r.symbol))
            needs.house |= {HOUSE_EXCHANGE_CASH, house_exchange_shares(r.symbol)}
            needs.house |= {house_charges(name) for name in schedule.names}
        return needs


Command = (
    Deposit
    | Withdraw
    | RequestWithdrawal
    | SettleWithdrawal
    | DepositShares
    | BlockCash
    | BlockShares
    | AdjustBlock
    | ReleaseBlock
    | ApplyReport
)


@dataclass(frozen=True)
class ReportResult:
    exec_id: str
    filled: bool = False
    closed: bool = False
    duplicate: bool = False
    parked: str = ""  # why, when parked


@dataclass(frozen=True)
class SharesView:
    user_id: str
    symbol: str
    free: int
    blocked: int
    dues: int


Result = FundsView | Block | SharesView | ReportResult | Withdrawal


def execute(book: Book, schedule: ChargesSchedule, command: Command) -> Result | ServiceError:
    """Run one command; on a refusal, undo whatever it did and return the error."""
    mark = book.checkpoint()
    try:
        return _HANDLERS[type(command)](book, schedule, command)
    except ServiceError as error:
        book.rollback(mark)
        return error


# --- money in and out ---------------------------------------------------------------------
def _replay(book: Book, key: str, fingerprint: str) -> dict[str, Any] | None:
    """The first answer for an idempotency key used with the same request; None if unused."""
    stored = book.requests.get(key)
    if stored is None:
        return None
    if stored.fingerprint != fingerprint:
        raise AlreadyExists(
            "request_id was already used for a different request",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": key.rsplit(":", 1)[-1]},
        )
    return stored.response


def _deposit(book: Book, schedule: ChargesSchedule, c: Deposit) -> FundsView:
    fingerprint = str(c.amount)
    replay = _replay(book, c.key, fingerprint)
    if replay is not None:
        return FundsView.from_dict(replay)
    book.cash_of(c.user_id)
    txn = book.transaction(
        "DEPOSIT", user_id=c.user_id, request_id=c.request_id, description=c.reference or "deposit"
    )
    credit_cash(book, txn, (None, HOUSE_BANK), c.user_id, c.amount, kind="DEPOSIT", description="deposit")
    view = book.funds_view(c.user_id)
    book.remember(c.key, c.user_id, fingerprint, view.to_dict())
    return view


def _withdraw(book: Book, schedule: ChargesSchedule, c: Withdraw) -> FundsView:
    fingerprint = str(c.amount)
    replay = _replay(book, c.key, fingerprint)
    if replay is not None:
        return FundsView.from_dict(replay)
    cash = book.cash_of(c.user_id)
    if cash.available < c.amount:
        raise FailedPrecondition(
            f"cannot withdraw {c.amount}: only {cash.available} is available",
            reason="INSUFFICIENT_FUNDS",
            metadata={"available": str(cash.available), "requested": str(c.amount)},
        )
    txn = book.transaction(
        "WITHDRAWAL", user_id=c.user_id, request_id=c.request_id, description=c.reference or "withdrawal"
    )
    book.move(
        txn, (c.user_id, CASH), (None, HOUSE_BANK), c.amount, kind="WITHDRAWAL", description="withdrawal"
    )
    view = book.funds_view(c.user_id)
    book.remember(c.key, c.user_id, fingerprint, view.to_dict())
    return view


def _withdrawal_dict(w: Withdrawal) -> dict[str, str]:
    return {
        "withdrawal_id": w.withdrawal_id,
        "user_id": w.user_id,
        "request_id": w.request_id,
        "amount": str(w.amount),
        "account_number": w.account_number,
        "ifsc": w.ifsc,
        "state": str(w.state),
        "created_at": w.created_at.isoformat(),
    }


def withdrawal_from_dict(d: dict[str, Any]) -> Withdrawal:
    created = datetime.fromisoformat(d["created_at"])
    return Withdrawal(
        d["withdrawal_id"],
        d["user_id"],
        d["request_id"],
        Decimal(d["amount"]),
        d["account_number"],
        d["ifsc"],
        WithdrawalState(d["state"]),
        "",
        "",
        created,
        created,
    )


def _request_withdrawal(book: Book, schedule: ChargesSchedule, c: RequestWithdrawal) -> Withdrawal:
    fingerprint = str(c.amount)
    replay = _replay(book, c.key, fingerprint)
    if replay is not None:  # the first answer: the caller reads its state now if it needs it
        return withdrawal_from_dict(replay)
    cash = book.cash_of(c.user_id)
    withdrawable = max(cash.available - c.withheld, ZERO)
    if withdrawable < c.amount:
        raise FailedPrecondition(
            f"cannot withdraw {c.amount}: only {withdrawable} can be withdrawn now",
            reason="INSUFFICIENT_FUNDS",
            metadata={
                "available": str(withdrawable),
                "requested": str(c.amount),
                "unsettled_proceeds": str(c.withheld),
            },
        )
    withdrawal = Withdrawal(
        c.withdrawal_id,
        c.user_id,
        c.request_id,
        c.amount,
        c.account_number,
        c.ifsc,
        WithdrawalState.HELD,
        "",
        "",
        book.now,
        book.now,
    )
    txn = book.transaction(
        "WITHDRAWAL",
        user_id=c.user_id,
        request_id=c.withdrawal_id,
        description=f"withdrawal {c.withdrawal_id}",
    )
    book.move(
        txn,
        (c.user_id, CASH),
        (None, HOUSE_PAYOUTS),
        c.amount,
        kind="WITHDRAWAL",
        description="withdrawal held",
    )
    book.add_withdrawal(withdrawal)
    book.remember(c.key, c.user_id, fingerprint, _withdrawal_dict(withdrawal))
    return copy.copy(withdrawal)


def _settle_withdrawal(book: Book, schedule: ChargesSchedule, c: SettleWithdrawal) -> Withdrawal:
    w = book.withdrawals.get(c.withdrawal_id)
    if w is None or w.user_id != c.user_id:
        raise NotFound(
            f"withdrawal {c.withdrawal_id} not found",
            reason="WITHDRAWAL_NOT_FOUND",
            metadata={"withdrawal_id": c.withdrawal_id},
        )
    if w.state is not WithdrawalState.HELD:
        return copy.copy(w)  # settled before: paid out or returned exactly once
    if c.paid:
        txn = book.transaction(
            "WITHDRAWAL_PAID",
            user_id=w.user_id,
            request_id=w.withdrawal_id,
            description=f"withdrawal {w.withdrawal_id} paid, bank reference {c.bank_reference}",
        )
        book.move(
            txn,
            (None, HOUSE_PAYOUTS),
            (None, HOUSE_BANK),
            w.amount,
            kind="WITHDRAWAL_PAID",
            description="paid out",
        )
        book.touch_withdrawal(w, state=WithdrawalState.PAID, bank_reference=c.bank_reference)
    else:
        txn = book.transaction(
            "WITHDRAWAL_RETURNED",
            user_id=w.user_id,
            request_id=w.withdrawal_id,
            description=f"withdrawal {w.withdrawal_id} returned: {c.failure}",
        )
        credit_cash(
            book,
            txn,
            (None, HOUSE_PAYOUTS),
            w.user_id,
            w.amount,
            kind="WITHDRAWAL_RETURNED",
            description="returned",
        )
        book.touch_withdrawal(w, state=WithdrawalState.RETURNED, failure=c.failure)
    return copy.copy(w)


def _deposit_shares(book: Book, schedule: ChargesSchedule, c: DepositShares) -> SharesView:
    fingerprint = f"{c.symbol}|{c.quantity}|{c.average_price}"
    replay = _replay(book, c.key, fingerprint)
    if replay is not None:
        return SharesView(**replay)
    book.shares_of(c.user_id, c.symbol)
    txn = book.transaction(
        "SHARE_DEPOSIT",
        user_id=c.user_id,
        request_id=c.request_id,
        description=c.reference or f"deposit of {c.quantity} {c.symbol}",
    )
    credit_shares(
        book,
        txn,
        (None, house_share_deposits(c.symbol)),
        (c.user_id, c.symbol),
        c.quantity,
        kind="SHARE_DEPOSIT",
        description=f"{c.quantity} {c.symbol} @ {c.average_price}",
    )
    book.add_holding(c.user_id, c.symbol, c.quantity, money(c.quantity * c.average_price))
    s = book.shares_of(c.user_id, c.symbol)
    view = SharesView(c.user_id, c.symbol, s.free, s.blocked, s.dues)
    book.remember(c.key, c.user_id, fingerprint, view.__dict__.copy())
    return view


def credit_cash(
    book: Book,
    txn: JournalTxn,
    source: AccountRef,
    user_id: str,
    amount: Decimal,
    *,
    kind: str,
    description: str,
) -> None:
    """Money coming to a user: it pays dues off first, the rest becomes available."""
    cash = book.cash_of(user_id)
    pays = min(amount, -cash.dues)
    if pays > 0:
        book.move(
            txn, source, (user_id, CASH_DUES), pays, kind=kind, description=f"{description} (pays dues)"
        )
    if amount - pays > 0:
        book.move(txn, source, (user_id, CASH), amount - pays, kind=kind, description=description)


def debit_cash(
    book: Book,
    txn: JournalTxn,
    user_id: str,
    dest: AccountRef,
    amount: Decimal,
    *,
    block: Block | None,
    kind: str,
    description: str,
) -> None:
    """Money a user pays: from the order's active cash block first, then available cash,
    and what is still missing becomes dues."""
    from_block = ZERO
    if block is not None and block.kind is BlockKind.CASH and block.state is BlockState.ACTIVE:
        from_block = min(amount, block.remaining)
    if block is not None and from_block > 0:
        book.move(txn, (user_id, CASH_BLOCKED), dest, from_block, kind=kind, description=description)
        book.touch_block(block, remaining=block.remaining - from_block)
    rest = amount - from_block
    from_available = min(rest, book.cash_of(user_id).available)
    if from_available > 0:
        book.move(txn, (user_id, CASH), dest, from_available, kind=kind, description=description)
    short = rest - from_available
    if short > 0:
        book.move(txn, (user_id, CASH_DUES), dest, short, kind=kind, description=f"{description} (owed)")
        book.note_shortfall(Shortfall(user_id, txn.order_id or "", txn.exec_id or "", CURRENCY, short))


def credit_shares(
    book: Book,
    txn: JournalTxn,
    source: AccountRef,
    holder: tuple[str, str],
    quantity: int,
    *,
    kind: str,
    description: str,
) -> None:
    """Shares coming to `holder` (user, symbol): they pay owed shares off first."""
    user_id, symbol = holder
    shares = book.shares_of(user_id, symbol)
    pays = min(quantity, -shares.dues)
    if pays > 0:
        book.move(
            txn,
            source,
            (user_id, share_account(SHARES_DUES, symbol)),
            pays,
            kind=kind,
            description=description,
        )
    if quantity - pays > 0:
        book.move(
            txn,
            source,
            (user_id, share_account(SHARES, symbol)),
            quantity - pays,
            kind=kind,
            description=description,
        )


def debit_shares(
    book: Book,
    txn: JournalTxn,
    holder: tuple[str, str],
    dest: AccountRef,
    quantity: int,
    *,
    block: Block | None,
    kind: str,
    description: str,
) -> None:
    """Shares `holder` (user, symbol) delivers: from the order's active share block first,
    then free shares, and what is still missing becomes owed shares."""
    user_id, symbol = holder
    from_block = 0
    if block is not None and block.kind is BlockKind.SHARES and block.state is BlockState.ACTIVE:
        from_block = min(quantity, int(block.remaining))
    if block is not None and from_block > 0:
        book.move(
            txn,
            (user_id, share_account(SHARES_BLOCKED, symbol)),
            dest,
            from_block,
            kind=kind,
            description=description,
        )
        book.touch_block(block, remaining=block.remaining - from_block)
    rest = quantity - from_block
    from_free = min(rest, book.shares_of(user_id, symbol).free)
    if from_free > 0:
        book.move(
            txn, (user_id, share_account(SHARES, symbol)), dest, from_free, kind=kind, description=description
        )
    short = rest - from_free
    if short > 0:
        book.move(
            txn,
            (user_id, share_account(SHARES_DUES, symbol)),
            dest,
            short,
            kind=kind,
            description=f"{description} (owed)",
        )
        book.note_shortfall(Shortfall(user_id, txn.order_id or "", txn.exec_id or "", symbol, Decimal(short)))


# --- blocks -------------------------------------------------------------------------------
def cash_block_amount(schedule: ChargesSchedule, quantity: int, price: Decimal, product: Product) -> Decimal:
    """What a BUY order must set aside: its value plus the most its charges can be."""
    value = quantity * price
    return round_money_up(value + schedule.max_charges(Side.BUY, product, value))


@dataclass(frozen=True)
class BlockPreview:
    """What a block for an order would be, made now (nothing is kept)."""

    kind: BlockKind
    amount: Decimal  # rupees (BUY) or shares (SELL)
    order_value: Decimal | None
    charges: dict[str, Decimal]
    available: Decimal  # free cash (BUY) or free shares of the symbol (SELL)
    refusal: ServiceError | None


def preview_block(
    book: Book, schedule: ChargesSchedule, c: BlockCash | BlockShares, sale_price: Decimal | None = None
) -> BlockPreview:
    """Make the block on `book` and report it: the caller throws the book away. Running the
    very command a placement runs is what makes the preview the block the order would get."""
    price: Decimal | None
    if isinstance(c, BlockCash):
        kind, side, price = BlockKind.CASH, Side.BUY, c.price
        available = book.cash_of(c.user_id).available
        wanted = cash_block_amount(schedule, c.quantity, c.price, c.product)
    else:
        kind, side, price = BlockKind.SHARES, Side.SELL, sale_price
        available = Decimal(book.shares_of(c.user_id, c.symbol).free)
        wanted = Decimal(c.quantity)
    value = None if price is None else c.quantity * price
    outcome = execute(book, schedule, c)
    return BlockPreview(
        kind=kind,
        amount=outcome.amount if isinstance(outcome, Block) else wanted,
        order_value=value,
        charges={} if value is None else schedule.order_charges(side, c.product, value),
        available=available,
        refusal=outcome if isinstance(outcome, ServiceError) else None,
    )


def _existing_block(
    book: Book, order_id: str, user_id: str, same_terms: Callable[[Block], bool]
) -> Block | None:
    block = book.blocks.get(order_id)
    if block is None:
        return None
    if block.user_id != user_id or not same_terms(block):
        raise AlreadyExists(
            f"order {order_id} already has a block with different terms",
            reason="BLOCK_TERMS_DIFFER",
            metadata={"order_id": order_id},
        )
    return snapshot(block)


def _new_block(
    book: Book,
    *,
    order_id: str,
    user_id: str,
    kind: BlockKind,
    side: Side,
    symbol: str,
    product: Product,
    quantity: int,
    price: Decimal | None,
    amount: Decimal,
    tag: str = "",
) -> Block:
    block = Block(
        order_id=order_id,
        user_id=user_id,
        kind=kind,
        side=side,
        symbol=symbol,
        product=product,
        requested_quantity=quantity,
        requested_price=price,
        quantity=quantity,
        price=price,
        amount=amount,
        remaining=amount,
        filled_quantity=0,
        filled_value=ZERO,
        charges=ZERO,
        released=ZERO,
        terminal_quantity=None,
        terminal_reason=None,
        state=BlockState.ACTIVE,
        close_reason=None,
        created_at=book.now,
        updated_at=book.now,
        tag=tag,
    )
    book.add_block(block)
    return block


def _block_cash(book: Book, schedule: ChargesSchedule, c: BlockCash) -> Block:
    existing = _existing_block(
        book,
        c.order_id,
        c.user_id,
        lambda b: (
            b.kind is BlockKind.CASH
            and b.symbol == c.symbol
            and b.requested_quantity == c.quantity
            and b.requested_price == c.price
            and b.product is c.product
        ),
    )
    if existing is not None:
        return existing
    cash = book.cash_of(c.user_id)
    amount = cash_block_amount(schedule, c.quantity, c.price, c.product)
    if cash.available < amount:
        raise FailedPrecondition(
            f"insufficient funds: the order needs {amount}, {cash.available} is available",
            reason="INSUFFICIENT_FUNDS",
            metadata={"available": str(cash.available), "required": str(amount)},
        )
    block = _new_block(
        book,
        order_id=c.order_id,
        user_id=c.user_id,
        kind=BlockKind.CASH,
        side=Side.BUY,
        symbol=c.symbol,
        product=c.product,
        quantity=c.quantity,
        price=c.price,
        amount=amount,
        tag=c.tag,
    )
    txn = book.transaction(
        "BLOCK",
        user_id=c.user_id,
        order_id=c.order_id,
        request_id=c.request_id,
        description=f"block for BUY {c.quantity} {c.symbol} @ {c.price}",
    )
    book.move(
        txn, (c.user_id, CASH), (c.user_id, CASH_BLOCKED), amount, kind="BLOCK", description=txn.description
    )
    return snapshot(block)


def _block_shares(book: Book, schedule: ChargesSchedule, c: BlockShares) -> Block:
    existing = _existing_block(
        book,
        c.order_id,
        c.user_id,
        lambda b: (
            b.kind is BlockKind.SHARES
            and b.symbol == c.symbol
            and b.requested_quantity == c.quantity
            and b.product is c.product
        ),
    )
    if existing is not None:
        return existing
    shares = book.shares_of(c.user_id, c.symbol)
    if shares.free < c.quantity:
        raise FailedPrecondition(
            f"insufficient holdings: the order sells {c.quantity} {c.symbol}, {shares.free} are free",
            reason="INSUFFICIENT_HOLDINGS",
            metadata={"symbol": c.symbol, "free": str(shares.free), "required": str(c.quantity)},
        )
    block = _new_block(
        book,
        order_id=c.order_id,
        user_id=c.user_id,
        kind=BlockKind.SHARES,
        side=Side.SELL,
        symbol=c.symbol,
        product=c.product,
        quantity=c.quantity,
        price=None,
        amount=Decimal(c.quantity),
        tag=c.tag,
    )
    txn = book.transaction(
        "BLOCK",
        user_id=c.user_id,
        order_id=c.order_id,
        request_id=c.request_id,
        description=f"block for SELL {c.quantity} {c.symbol}",
    )
    book.move(
        txn,
        (c.user_id, share_account(SHARES, c.symbol)),
        (c.user_id, share_account(SHARES_BLOCKED, c.symbol)),
        c.quantity,
        kind="BLOCK",
        description=txn.description,
    )
    return snapshot(block)


def _owned_block(book: Book, user_id: str, order_id: str) -> Block:
    block = book.blocks.get(order_id)
    if block is None or block.user_id != user_id:  # another user's block is not found either
        raise NotFound(
            f"no block for order {order_id}", reason="BLOCK_NOT_FOUND", metadata={"order_id": order_id}
        )
    return block


def _closed(block: Block) -> FailedPrecondition:
    return FailedPrecondition(
        f"the block of order {block.order_id} is closed ({block.close_reason}); nothing was changed",
        reason="BLOCK_CLOSED",
        metadata={"order_id": block.order_id, "close_reason": block.close_reason or ""},
    )


def _adjust_block(book: Book, schedule: ChargesSchedule, c: AdjustBlock) -> Block:
    block = _owned_block(book, c.user_id, c.order_id)
    fingerprint = f"{c.quantity}|{'' if c.price is None else c.price}"
    if _replay(book, c.key, fingerprint) is not None:
        return snapshot(block)
    if block.state is BlockState.CLOSED or block.terminal_quantity is not None:
        raise _closed(block)
    if c.quantity <= block.filled_quantity:
        raise InvalidArgument(
            f"quantity must exceed the {block.filled_quantity} shares already filled",
            reason="QUANTITY_BELOW_FILLED",
            field="quantity",
        )
    if block.kind is BlockKind.CASH:
        price = block.price if c.price is None else c.price
        assert price is not None
        rest_value = (c.quantity - block.filled_quantity) * price
        charges_left = (
            schedule.max_charges(Side.BUY, block.product, block.filled_value + rest_value) - block.charges
        )
        needed = round_money_up(rest_value + max(charges_left, ZERO))
    else:
        price = None
        needed = Decimal(c.quantity - block.filled_quantity)
    delta = needed - block.remaining
    txn = book.transaction(
        "ADJUST",
        user_id=c.user_id,
        order_id=c.order_id,
        request_id=c.request_id,
        description=f"block adjusted to {c.quantity}" + (f" @ {price}" if price is not None else ""),
    )
    if block.kind is BlockKind.CASH:
        if delta > 0:
            available = book.cash_of(c.user_id).available
            if available < delta:
                raise FailedPrecondition(
                    f"insufficient funds: the change needs {delta} more, {available} is available",
                    reason="INSUFFICIENT_FUNDS",
                    metadata={"available": str(available), "required": str(delta)},
                )
            book.move(
                txn,
                (c.user_id, CASH),
                (c.user_id, CASH_BLOCKED),
                delta,
                kind="ADJUST",
                description=txn.description,
            )
        elif delta < 0:
            credit_cash(
                book,
                txn,
                (c.user_id, CASH_BLOCKED),
                c.user_id,
                -delta,
                kind="ADJUST",
                description=txn.description,
            )
    else:
        free_account = (c.user_id, share_account(SHARES, block.symbol))
        blocked_account = (c.user_id, share_account(SHARES_BLOCKED, block.symbol))
        if delta > 0:
            free = book.shares_of(c.user_id, block.symbol).free
            if free < delta:
                raise FailedPrecondition(
                    f"insufficient holdings: the change needs {delta} more {block.symbol}, {free} are free",
                    reason="INSUFFICIENT_HOLDINGS",
                    metadata={"symbol": block.symbol, "free": str(free), "required": str(delta)},
                )
            book.move(txn, free_account, blocked_account, delta, kind="ADJUST", description=txn.description)
        elif delta < 0:
            credit_shares(
                book,
                txn,
                blocked_account,
                (c.user_id, block.symbol),
                int(-delta),
                kind="ADJUST",
                description=txn.description,
            )
    book.touch_block(block, quantity=c.quantity, price=price, amount=block.amount + delta, remaining=needed)
    book.remember(c.key, c.user_id, fingerprint, {})
    return snapshot(block)


def close_block(book: Book, block: Block, reason: str, request_id: str = "") -> None:
    """Give back what is left of a block, once, and close it."""
    remaining = block.remaining
    if remaining > 0:
        txn = book.transaction(
            "RELEASE",
            user_id=block.user_id,
            order_id=block.order_id,
            request_id=request_id,
            description=f"release ({reason})",
        )
        if block.kind is BlockKind.CASH:
            credit_cash(
                book,
                txn,
                (block.user_id, CASH_BLOCKED),
                block.user_id,
                remaining,
                kind="RELEASE",
                description=txn.description,
            )
        else:
            credit_shares(
                book,
                txn,
                (block.user_id, share_account(SHARES_BLOCKED, block.symbol)),
                (block.user_id, block.symbol),
                int(remaining),
                kind="RELEASE",
                description=txn.description,
            )
    book.touch_block(
        block,
        released=block.released + remaining,
        remaining=ZERO,
        state=BlockState.CLOSED,
        close_reason=reason,
    )


def _release_block(book: Book, schedule: ChargesSchedule, c: ReleaseBlock) -> Block:
    block = _owned_block(book, c.user_id, c.order_id)
    if block.state is BlockState.CLOSED:
        raise _closed(block)
    close_block(book, block, c.reason, c.request_id)
    return snapshot(block)


# --- settlement ---------------------------------------------------------------------------
def _fill_problem(book: Book, r: ExecReport, block: Block | None) -> str:
    if r.problem:
        return r.problem
    if not r.order_id or not r.user_id or not r.symbol:
        return "the report lacks an order id, user id or symbol"
    if r.user_id not in book.cash:
        return f"unknown user {r.user_id}"
    if r.fill_quantity > MAX_QUANTITY:
        return f"fill quantity {r.fill_quantity} is out of range"
    if r.fill_price is None or r.fill_price <= 0 or r.fill_price != r.fill_price.quantize(Decimal("0.01")):
        return f"fill price {r.fill_price} is not a positive amount in paise"
    if block is not None:
        if block.user_id != r.user_id:
            return f"order {r.order_id} belongs to another user"
        if block.symbol != r.symbol:
            return f"the report is for {r.symbol}, the order's block for {block.symbol}"
        if r.side is not None and r.side is not block.side:
            return f"the report is a {r.side}, the order's block a {block.side}"
    elif r.side is None:
        return "the report has no side and the order has no block"
    return ""


def _settle_fill(book: Book, schedule: ChargesSchedule, r: ExecReport, block: Block | None) -> None:
    side = block.side if block is not None else r.side
    product = block.product if block is not None else Product.CNC
    assert side is not None and r.fill_price is not None
    quantity, price, user, symbol = r.fill_quantity, r.fill_price, r.user_id, r.symbol
    value = money(quantity * price)
    before = block.filled_value if block is not None else ZERO
    charges = schedule.fill_charges(side, product, before, before + value)
    txn = book.transaction(
        "FILL",
        user_id=user,
        order_id=r.order_id,
        exec_id=r.exec_id,
        request_id=r.request_id,
        description=f"{side} {quantity} {symbol} @ {price}",
    )
    exchange_shares = (None, house_exchange_shares(symbol))
    if side is Side.BUY:
        debit_cash(
            book,
            txn,
            user,
            (None, HOUSE_EXCHANGE_CASH),
            value,
            block=block,
            kind="FILL",
            description=txn.description,
        )
        for name, amount in charges.items():
            debit_cash(
                book,
                txn,
                user,
                (None, house_charges(name)),
                amount,
                block=block,
                kind="CHARGES",
                description=name,
            )
        credit_shares(
            book, txn, exchange_shares, (user, symbol), quantity, kind="FILL", description=txn.description
        )
    else:
        debit_shares(
            book,
            txn,
            (user, symbol),
            exchange_shares,
            quantity,
            block=block,
            kind="FILL",
            description=txn.description,
        )
        credit_cash(
            book, txn, (None, HOUSE_EXCHANGE_CASH), user, value, kind="FILL", description=txn.description
        )
        for name, amount in charges.items():
            debit_cash(
                book,
                txn,
                user,
                (None, house_charges(name)),
                amount,
                block=None,
                kind="CHARGES",
                description=name,
            )
    total_charges = sum(charges.values(), ZERO)
    if block is not None:
        book.touch_block(
            block,
            filled_quantity=block.filled_quantity + quantity,
            filled_value=block.filled_value + value,
            charges=block.charges + total_charges,
        )
    day = r.trading_day or trading_day(r.executed_at)
    book.add_fill(
        Fill(
            r.exec_id,
            r.order_id,
            user,
            symbol,
            side,
            product,
            quantity,
            price,
            value,
            total_charges,
            day,
            r.executed_at,
            txn.tag,
        )
    )
    book.add_position((user, day, symbol, product), side, quantity, value)


def _order_is_over(block: Block) -> str | None:
    """Why the block's order is over, or None while fills may still come."""
    if block.filled_quantity >= block.quantity:
        return "FILLED"
    if block.terminal_quantity is not None and block.filled_quantity >= block.terminal_quantity:
        return block.terminal_reason or "DONE"
    return None


def _apply_report(book: Book, schedule: ChargesSchedule, c: ApplyReport) -> ReportResult:
    r = c.report
    if r.exec_id in book.seen_exec_ids:
        return ReportResult(r.exec_id, duplicate=True)
    block = book.blocks.get(r.order_id)
    filled = False
    if r.fill_quantity > 0 or r.problem:
        problem = _fill_problem(book, r, block)
        if problem:
            book.park(ParkedReport(r.exec_id, r.order_id, r.user_id, problem, r.raw))
            return ReportResult(r.exec_id, parked=problem)
        _settle_fill(book, schedule, r, block)
        filled = True
    if block is None or block.state is BlockState.CLOSED or block.user_id != r.user_id:
        return ReportResult(r.exec_id, filled=filled)
    if r.terminal is not None and (
        block.terminal_quantity is None or r.cumulative_quantity > block.terminal_quantity
    ):
        book.touch_block(block, terminal_quantity=r.cumulative_quantity, terminal_reason=r.terminal)
    reason = _order_is_over(block)
    if reason is None:
        return ReportResult(r.exec_id, filled=filled)
    close_block(book, block, reason, r.request_id)
    return ReportResult(r.exec_id, filled=filled, closed=True)


_HANDLERS: dict[type, Callable[[Book, ChargesSchedule, Any], Result]] = {
    Deposit: _deposit,
    Withdraw: _withdraw,
    RequestWithdrawal: _request_withdrawal,
    SettleWithdrawal: _settle_withdrawal,
    DepositShares: _deposit_shares,
    BlockCash: _block_cash,
    BlockShares: _block_shares,
    AdjustBlock: _adjust_block,
    ReleaseBlock: _release_block,
    ApplyReport: _apply_report,
}
