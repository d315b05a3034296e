"""Proto ↔ domain: resource names, enums, decimals, timestamps."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from google.protobuf import timestamp_pb2

from brokermesh.funds.v1 import accounts_pb2, funds_pb2, portfolio_pb2
from brokermesh.type.v1 import charges_pb2, decimal_pb2, trading_pb2
from svc_funds.app.portfolio import HoldingView, PortfolioView, PositionView
from svc_funds.app.ports import BankAccount, Document, DocumentFormat, EntryRow, FundsRow
from svc_funds.domain.accounts import Account
from svc_funds.domain.ledger import Block, FundsView, Withdrawal
from svc_funds.domain.model import CURRENCY, BlockKind, BlockState, Product, check_order_id
from svc_funds.domain.operations import BlockPreview
from svc_runtime import names
from svc_runtime.decimals import PAISA, format_decimal, parse_decimal
from svc_runtime.errors import InvalidArgument, to_item_status


def user_of_parent(parent: str, field: str = "parent") -> str:
    return names.user_of(parent, field)


def user_or_all(parent: str) -> str | None:
    """`users/{user}` → the user; `users/-` → None (every user, AIP-159)."""
    return names.user_or_every(parent)


def _user_in(template: str, name: str) -> str:
    return names.pattern(template).ids(name)[0]


def user_of_funds(name: str) -> str:
    return _user_in("users/{user}/funds", name)


def user_of_portfolio(name: str) -> str:
    return _user_in("users/{user}/portfolio", name)


def user_of_account(name: str) -> str:
    return names.user_of(name, "name")


def user_of_bank_account(name: str, field: str = "name") -> str:
    return names.pattern("users/{user}/bankAccount").ids(name, field)[0]


def withdrawal_name(name: str) -> tuple[str, str]:
    user, withdrawal = names.pattern("users/{user}/withdrawals/{withdrawal}").ids(name)
    return user, withdrawal


def bank_account_out(account: BankAccount) -> funds_pb2.BankAccount:
    return funds_pb2.BankAccount(
        name=f"users/{account.user_id}/bankAccount", account_number=account.account_number, ifsc=account.ifsc
    )


def withdrawal_out(w: Withdrawal) -> funds_pb2.Withdrawal:
    return funds_pb2.Withdrawal(
        name=f"users/{w.user_id}/withdrawals/{w.withdrawal_id}",
        withdrawal_id=w.withdrawal_id,
        amount=money_out(w.amount),
        state=funds_pb2.WithdrawalState.Value(f"WITHDRAWAL_STATE_{w.state}"),
        bank_account=bank_account_out(BankAccount(w.user_id, w.account_number, w.ifsc)),
        request_id=w.request_id,
        bank_reference=w.bank_reference,
        failure=w.failure,
        create_time=timestamp(w.created_at),
        update_time=timestamp(w.updated_at),
    )


def date_in(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidArgument(
            f"{field} must be a date, YYYY-MM-DD", reason="INVALID_DATE", field=field
        ) from None


def format_in(value: int) -> DocumentFormat:
    if value == funds_pb2.DOCUMENT_FORMAT_PDF:
        return DocumentFormat.PDF
    if value in (funds_pb2.DOCUMENT_FORMAT_UNSPECIFIED, funds_pb2.DOCUMENT_FORMAT_CSV):
        return DocumentFormat.CSV
    raise InvalidArgument("format must be CSV or PDF", reason="INVALID_ARGUMENT", field="format")


def document_out(document: Document, totals: dict[str, Decimal]) -> funds_pb2.Document:
    return funds_pb2.Document(
        content_type=document.content_type,
        filename=document.filename,
        content=document.content,
        totals=[funds_pb2.DocumentTotal(name=k, amount=money_out(v)) for k, v in totals.items()],
    )


def block_name(name: str) -> tuple[str, str]:
    user, order = names.pattern("users/{user}/blocks/{order}").ids(name)
    return user, check_order_id(order, field="name")


# --- values -------------------------------------------------------------------------------
def money_in(message: decimal_pb2.Decimal, field: str) -> Decimal:
    return parse_decimal(message.value, field=field, max_places=2, positive=True)


def money_out(value: Decimal | None) -> decimal_pb2.Decimal | None:
    if value is None:
        return None
    return decimal_pb2.Decimal(value=format_decimal(value.quantize(PAISA)))


def price_out(value: Decimal | None) -> decimal_pb2.Decimal | None:
    """Prices keep up to 4 places (averages), and at least 2."""
    if value is None:
        return None
    if value == value.quantize(PAISA):
        value = value.quantize(PAISA)
    return decimal_pb2.Decimal(value=format_decimal(value))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    # Integer arithmetic on the difference: exact, and cheaper than FromDatetime.
    delta = moment - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def product_in(product: int) -> Product:
    if product == trading_pb2.PRODUCT_INTRADAY:
        return Product.INTRADAY
    if product in (trading_pb2.PRODUCT_UNSPECIFIED, trading_pb2.PRODUCT_CNC):
        return Product.CNC
    raise InvalidArgument("product must be CNC or INTRADAY", reason="INVALID_PRODUCT", field="product")


def product_out(product: Product) -> trading_pb2.Product:
    return trading_pb2.PRODUCT_INTRADAY if product is Product.INTRADAY else trading_pb2.PRODUCT_CNC


def state_in(state: int) -> BlockState | None:
    if state == funds_pb2.BLOCK_STATE_UNSPECIFIED:
        return None
    if state == funds_pb2.BLOCK_STATE_ACTIVE:
        return BlockState.ACTIVE
    if state == funds_pb2.BLOCK_STATE_CLOSED:
        return BlockState.CLOSED
    raise InvalidArgument("state is not a block state", reason="INVALID_STATE", field="state")


# --- messages -----------------------------------------------------------------------------
def account_out(account: Account) -> accounts_pb2.Account:
    return accounts_pb2.Account(
        name=f"users/{account.user_id}",
        user_id=account.user_id,
        username=account.username,
        display_name=account.display_name,
        create_time=timestamp(account.created_at),
    )


def funds_out(funds: FundsView | FundsRow) -> funds_pb2.Funds:
    return funds_pb2.Funds(
        name=f"users/{funds.user_id}/funds",
        user_id=funds.user_id,
        currency_code=CURRENCY,
        available=money_out(funds.available),
        blocked=money_out(funds.blocked),
        total=money_out(funds.available + funds.blocked),
        update_time=timestamp(funds.updated_at),
        dues=money_out(-funds.dues),
    )


def _amount_out(block: Block, value: Decimal) -> decimal_pb2.Decimal | None:
    if block.kind is BlockKind.CASH:
        return money_out(value)
    return decimal_pb2.Decimal(value=str(int(value)))


def block_out(block: Block) -> funds_pb2.Block:
    return funds_pb2.Block(
        name=f"users/{block.user_id}/blocks/{block.order_id}",
        order_id=block.order_id,
        user_id=block.user_id,
        kind=funds_pb2.BLOCK_KIND_CASH if block.kind is BlockKind.CASH else funds_pb2.BLOCK_KIND_SHARES,
        symbol=block.symbol,
        amount=_amount_out(block, block.amount),
        remaining=_amount_out(block, block.remaining),
        state=funds_pb2.BLOCK_STATE_ACTIVE
        if block.state is BlockState.ACTIVE
        else funds_pb2.BLOCK_STATE_CLOSED,
        create_time=timestamp(block.created_at),
        product=product_out(block.product),
        quantity=block.quantity,
        price=money_out(block.price),
        filled_quantity=block.filled_quantity,
        charges=money_out(block.charges) if block.kind is BlockKind.CASH else None,
        released=_amount_out(block, block.released),
        close_reason=block.close_reason or "",
        update_time=timestamp(block.updated_at),
    )


def block_preview_out(preview: BlockPreview) -> funds_pb2.BlockPreview:
    cash = preview.kind is BlockKind.CASH
    return funds_pb2.BlockPreview(
        kind=funds_pb2.BLOCK_KIND_CASH if cash else funds_pb2.BLOCK_KIND_SHARES,
        amount=money_out(preview.amount) if cash else shares_out(preview.amount),
        order_value=money_out(preview.order_value),
        charges=[charges_pb2.Charge(name=n, amount=money_out(a)) for n, a in preview.charges.items()],
        charges_total=money_out(sum(preview.charges.values(), Decimal(0))),
        available=money_out(preview.available) if cash else shares_out(preview.available),
        refusal=None if preview.refusal is None else to_item_status(preview.refusal),
    )


def shares_out(quantity: Decimal) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=str(int(quantity)))


def entry_out(entry: EntryRow) -> funds_pb2.LedgerEntry:
    amount = entry.amount.quantize(PAISA) if entry.unit == CURRENCY else entry.amount.to_integral_value()
    after = (
        entry.balance_after.quantize(PAISA)
        if entry.unit == CURRENCY
        else entry.balance_after.to_integral_value()
    )
    return funds_pb2.LedgerEntry(
        name=f"users/{entry.user_id}/ledgerEntries/{entry.entry_id}",
        entry_id=str(entry.entry_id),
        transaction_id=str(entry.txn_id),
        account=entry.account,
        amount=decimal_pb2.Decimal(value=format_decimal(amount)),
        balance_after=decimal_pb2.Decimal(value=format_decimal(after)),
        kind=entry.kind,
        order_id=entry.order_id or "",
        exec_id=entry.exec_id or "",
        request_id=entry.request_id or "",
        description=entry.description,
        create_time=timestamp(entry.created_at),
        tag=entry.tag,
    )


def holding_out(h: HoldingView) -> portfolio_pb2.Holding:
    f = h.figures
    return portfolio_pb2.Holding(
        symbol=h.row.symbol,
        quantity=h.row.quantity,
        blocked_quantity=h.blocked_quantity,
        average_buy_price=price_out(f.average_buy_price),
        invested_value=money_out(f.invested_value),
        last_price=price_out(h.last_price),
        current_value=money_out(f.current_value),
        unrealized_pnl=money_out(f.unrealized_pnl),
        realized_pnl=money_out(h.row.realized_pnl),
        t1_quantity=h.t1_quantity,
    )


def position_out(p: PositionView) -> portfolio_pb2.Position:
    f = p.figures
    return portfolio_pb2.Position(
        symbol=p.row.symbol,
        product=product_out(p.row.product),
        net_quantity=f.net_quantity,
        average_price=price_out(f.average_price),
        buy_quantity=p.row.buy_quantity,
        sell_quantity=p.row.sell_quantity,
        buy_value=money_out(p.row.buy_value),
        sell_value=money_out(p.row.sell_value),
        last_price=price_out(p.last_price),
        realized_pnl=money_out(f.realized_pnl),
        unrealized_pnl=money_out(f.unrealized_pnl),
        trading_day=p.row.trading_day.isoformat(),
        settlement_date=p.settlement_date.isoformat(),
        charges=money_out(f.charges),
        pnl_after_charges=money_out(f.pnl_after_charges),
    )


def portfolio_out(view: PortfolioView) -> portfolio_pb2.Portfolio:
    return portfolio_pb2.Portfolio(
        name=f"users/{view.user_id}/portfolio",
        holdings=[holding_out(h) for h in view.holdings],
        positions=[position_out(p) for p in view.positions],
        pnl_basis=view.pnl_basis,
        daily_realized_pnl=[
            portfolio_pb2.DailyRealizedPnl(trading_day=day.isoformat(), realized_pnl=money_out(amount))
            for day, amount in view.daily_realized
        ],
        pnl_includes_charges=False,  # realized and unrealized P&L are before charges
    )
