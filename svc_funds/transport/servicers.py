"""The gRPC servicers of AccountService, FundsService and PortfolioService.

Each method validates and converts its request, calls one use case and converts the answer;
errors are ServiceErrors that the shared interceptor turns into statuses with details.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import grpc

from brokermesh.funds.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    funds_pb2,
    funds_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
)
from brokermesh.type.v1 import invariants_pb2, trading_pb2
from svc_funds.app.accounts import AccountsApp
from svc_funds.app.audit import AuditApp
from svc_funds.app.funds import FundsApp
from svc_funds.app.portfolio import PortfolioApp
from svc_funds.app.ports import BankAccount
from svc_funds.app.statements import StatementsApp
from svc_funds.app.withdrawals import WithdrawalsApp
from svc_funds.domain import model
from svc_funds.domain import operations as ops
from svc_funds.domain.ledger import Block
from svc_funds.transport import wire
from svc_runtime import pagination
from svc_runtime.decimals import parse_decimal
from svc_runtime.errors import InvalidArgument, NotFound, ServiceError, to_item_status
from svc_runtime.tags import check_tag

Context = grpc.aio.ServicerContext

PREVIEW_ORDER_ID = "preview"

# Blocks per BatchBlockFunds / BatchBlockHoldings call: one ledger transaction's worth at most.
MAX_BATCH_BLOCKS = 1000


_BlockRequest = funds_pb2.BlockFundsRequest | funds_pb2.BlockHoldingsRequest


def _order_terms(request: _BlockRequest, default_parent: str) -> dict[str, Any]:
    """The terms a cash and a share block share, checked."""
    return {
        "user_id": wire.user_of_parent(request.parent or default_parent),
        "order_id": model.check_order_id(request.order_id),
        "symbol": model.check_symbol(request.symbol),
        "quantity": model.check_quantity(request.quantity),
        "product": wire.product_in(request.product),
        "request_id": model.check_request_id(request.request_id) if request.request_id else "",
        "tag": check_tag(request.tag),
    }


def _cash_block(request: funds_pb2.BlockFundsRequest, *, default_parent: str = "") -> ops.BlockCash:
    terms = _order_terms(request, default_parent)
    return ops.BlockCash(price=model.check_price(wire.money_in(request.price, "price")), **terms)


def _share_block(request: funds_pb2.BlockHoldingsRequest, *, default_parent: str = "") -> ops.BlockShares:
    return ops.BlockShares(**_order_terms(request, default_parent))


def _withdrawal_cursor(key: list[Any]) -> tuple[datetime, str]:
    try:
        return datetime.fromisoformat(str(key[0])), str(key[1])
    except ValueError:
        raise InvalidArgument(
            "page_token is not valid", reason="INVALID_PAGE_TOKEN", field="page_token"
        ) from None


class AccountServicer(accounts_pb2_grpc.AccountServiceServicer):
    def __init__(self, app: AccountsApp) -> None:
        self.app = app

    async def CreateAccount(
        self, request: accounts_pb2.CreateAccountRequest, context: Context
    ) -> accounts_pb2.Account:
        account = await self.app.create(
            request.username, request.password, request.display_name, request.request_id
        )
        return wire.account_out(account)

    async def GetAccount(
        self, request: accounts_pb2.GetAccountRequest, context: Context
    ) -> accounts_pb2.Account:
        return wire.account_out(await self.app.get(wire.user_of_account(request.name)))

    async def ListAccounts(
        self, request: accounts_pb2.ListAccountsRequest, context: Context
    ) -> accounts_pb2.ListAccountsResponse:
        size = pagination.page_size(request.page_size, default=100, maximum=1000)
        after = pagination.decode_token(request.page_token, "accounts") or ""
        accounts = await self.app.list(str(after), size + 1)
        token = (
            pagination.encode_token(accounts[size - 1].user_id, "accounts") if len(accounts) > size else ""
        )
        return accounts_pb2.ListAccountsResponse(
            accounts=[wire.account_out(a) for a in accounts[:size]], next_page_token=token
        )

    async def VerifyCredentials(
        self, request: accounts_pb2.VerifyCredentialsRequest, context: Context
    ) -> accounts_pb2.Account:
        return wire.account_out(await self.app.verify(request.username, request.password))


class FundsServicer(funds_pb2_grpc.FundsServiceServicer):
    def __init__(
        self, app: FundsApp, audit: AuditApp, withdrawals: WithdrawalsApp, statements: StatementsApp
    ) -> None:
        self.app = app
        self.audit = audit
        self.withdrawals = withdrawals
        self.statements = statements

    # --- statements and contract notes -------------------------------------------------------
    async def GetAccountStatement(
        self, request: funds_pb2.GetAccountStatementRequest, context: Context
    ) -> funds_pb2.Document:
        user_id = wire.user_of_parent(request.parent)
        start = wire.date_in(request.start_date, "start_date")
        end = wire.date_in(request.end_date, "end_date")
        statement = await self.statements.statement(user_id, start, end)
        document = self.statements.render_statement(statement, wire.format_in(request.format))
        totals = {
            "opening": statement.opening,
            "debits": statement.debits,
            "credits": statement.credits,
            "closing": statement.closing,
        }
        return wire.document_out(document, totals)

    async def GetContractNote(
        self, request: funds_pb2.GetContractNoteRequest, context: Context
    ) -> funds_pb2.Document:
        user_id = wire.user_of_parent(request.parent)
        day = wire.date_in(request.trading_day, "trading_day")
        note = await self.statements.contract_note(user_id, day)
        document = self.statements.render_contract_note(note, wire.format_in(request.format))
        totals = {"bought": note.bought, "sold": note.sold, "charges": note.total_charges, "net": note.net}
        totals |= {f"charges:{name}": note.charge_total(name) for name in note.charge_names}
        return wire.document_out(document, totals)

    # --- withdrawals -----------------------------------------------------------------------
    async def SetBankAccount(
        self, request: funds_pb2.SetBankAccountRequest, context: Context
    ) -> funds_pb2.BankAccount:
        account = request.bank_account
        user_id = wire.user_of_bank_account(account.name, "bank_account.name")
        number, ifsc = model.check_bank_account(account.account_number, account.ifsc)
        saved = await self.withdrawals.set_bank_account(BankAccount(user_id, number, ifsc))
        return wire.bank_account_out(saved)

    async def GetBankAccount(
        self, request: funds_pb2.GetBankAccountRequest, context: Context
    ) -> funds_pb2.BankAccount:
        return wire.bank_account_out(
            await self.withdrawals.bank_account(wire.user_of_bank_account(request.name))
        )

    async def CreateWithdrawal(
        self, request: funds_pb2.CreateWithdrawalRequest, context: Context
    ) -> funds_pb2.Withdrawal:
        user_id = wire.user_of_parent(request.parent)
        amount = model.check_amount(wire.money_in(request.amount, "amount"))
        request_id = model.check_request_id(request.request_id)
        return wire.withdrawal_out(await self.withdrawals.request(user_id, amount, request_id))

    async def GetWithdrawal(
        self, request: funds_pb2.GetWithdrawalRequest, context: Context
    ) -> funds_pb2.Withdrawal:
        user_id, withdrawal_id = wire.withdrawal_name(request.name)
        return wire.withdrawal_out(await self.withdrawals.get(user_id, withdrawal_id))

    async def ListWithdrawals(
        self, request: funds_pb2.ListWithdrawalsRequest, context: Context
    ) -> funds_pb2.ListWithdrawalsResponse:
        user_id = wire.user_of_parent(request.parent)
        size = pagination.page_size(request.page_size, default=50, maximum=500)
        before = pagination.decode_token(request.page_token, "withdrawals", user_id)
        if before is not None and not (isinstance(before, list) and len(before) == 2):
            raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN", field="page_token")
        cursor = None if before is None else _withdrawal_cursor(before)
        found = await self.withdrawals.list(user_id, cursor, size + 1)
        token = ""
        if len(found) > size:
            last = found[size - 1]
            token = pagination.encode_token(
                [last.created_at.isoformat(), last.withdrawal_id], "withdrawals", user_id
            )
        return funds_pb2.ListWithdrawalsResponse(
            withdrawals=[wire.withdrawal_out(w) for w in found[:size]], next_page_token=token
        )

    async def GetFunds(self, request: funds_pb2.GetFundsRequest, context: Context) -> funds_pb2.Funds:
        return wire.funds_out(await self.app.funds(wire.user_of_funds(request.name)))

    async def Deposit(self, request: funds_pb2.DepositRequest, context: Context) -> funds_pb2.Funds:
        user_id = wire.user_of_funds(request.name)
        amount = model.check_amount(wire.money_in(request.amount, "amount"))
        request_id = model.check_request_id(request.request_id)
        funds = await self.app.deposit(user_id, amount, request_id, _reference(request.reference))
        return wire.funds_out(funds)

    async def Withdraw(self, request: funds_pb2.WithdrawRequest, context: Context) -> funds_pb2.Funds:
        user_id = wire.user_of_funds(request.name)
        amount = model.check_amount(wire.money_in(request.amount, "amount"))
        request_id = model.check_request_id(request.request_id)
        funds = await self.app.withdraw(user_id, amount, request_id, _reference(request.reference))
        return wire.funds_out(funds)

    async def ListLedgerEntries(
        self, request: funds_pb2.ListLedgerEntriesRequest, context: Context
    ) -> funds_pb2.ListLedgerEntriesResponse:
        user_id = wire.user_of_parent(request.parent)
        size = pagination.page_size(request.page_size, default=50, maximum=500)
        before = pagination.decode_token(request.page_token, "entries", user_id)
        if before is not None and not isinstance(before, int):
            raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN", field="page_token")
        entries = await self.app.entries(user_id, before, size + 1)
        token = (
            pagination.encode_token(entries[size - 1].entry_id, "entries", user_id)
            if len(entries) > size
            else ""
        )
        return funds_pb2.ListLedgerEntriesResponse(
            entries=[wire.entry_out(e) for e in entries[:size]], next_page_token=token
        )

    async def BlockFunds(self, request: funds_pb2.BlockFundsRequest, context: Context) -> funds_pb2.Block:
        return wire.block_out(await self.app.make_block(_cash_block(request)))

    async def BatchBlockFunds(
        self, request: funds_pb2.BatchBlockFundsRequest, context: Context
    ) -> funds_pb2.BatchBlockFundsResponse:
        return funds_pb2.BatchBlockFundsResponse(
            results=await self._batch_of_blocks(request.parent, request.requests, _cash_block)
        )

    async def BlockHoldings(
        self, request: funds_pb2.BlockHoldingsRequest, context: Context
    ) -> funds_pb2.Block:
        return wire.block_out(await self.app.make_block(_share_block(request)))

    async def BatchBlockHoldings(
        self, request: funds_pb2.BatchBlockHoldingsRequest, context: Context
    ) -> funds_pb2.BatchBlockHoldingsResponse:
        return funds_pb2.BatchBlockHoldingsResponse(
            results=await self._batch_of_blocks(request.parent, request.requests, _share_block)
        )

    async def _batch_of_blocks(
        self,
        parent: str,
        items: Sequence[_BlockRequest],
        to_command: Callable[..., ops.BlockCash | ops.BlockShares],
    ) -> list[funds_pb2.BlockResult]:
        """A batch's results: a malformed batch is refused whole; then each request is
        checked on its own, and a bad one gets its error while the others go on."""
        batch_user = wire.user_or_all(parent)
        if not 1 <= len(items) <= MAX_BATCH_BLOCKS:
            raise InvalidArgument(
                f"requests must hold 1 to {MAX_BATCH_BLOCKS} blocks", reason="INVALID_BATCH", field="requests"
            )
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.order_id in seen:
                raise InvalidArgument(
                    f"order id {item.order_id!r} is in requests[{seen[item.order_id]}] and requests[{i}]",
                    reason="INVALID_BATCH",
                    field=f"requests[{i}].order_id",
                )
            seen[item.order_id] = i
        default_parent = "" if batch_user is None else parent
        outcomes: dict[int, Block | ServiceError] = {}
        valid: list[tuple[int, ops.BlockCash | ops.BlockShares]] = []
        for i, item in enumerate(items):
            try:
                if item.parent not in ("", parent) and batch_user is not None:
                    raise InvalidArgument(
                        f"parent must be empty or {parent}", reason="INVALID_BATCH", field="parent"
                    )
                valid.append((i, to_command(item, default_parent=default_parent)))
            except ServiceError as error:
                outcomes[i] = error
        if valid:
            blocks = await self.app.make_blocks([command for _, command in valid])
            outcomes.update(zip((i for i, _ in valid), blocks, strict=True))
        return [
            funds_pb2.BlockResult(error=to_item_status(outcome, f"requests[{i}]."))
            if isinstance(outcome, ServiceError)
            else funds_pb2.BlockResult(block=wire.block_out(outcome))
            for i, outcome in sorted(outcomes.items())
        ]

    async def PreviewBlock(
        self, request: funds_pb2.PreviewBlockRequest, context: Context
    ) -> funds_pb2.BlockPreview:
        terms = {
            "user_id": wire.user_of_parent(request.parent),
            # Never a real order's id: the block is made and thrown away.
            "order_id": PREVIEW_ORDER_ID,
            "symbol": model.check_symbol(request.symbol),
            "quantity": model.check_quantity(request.quantity),
            "product": wire.product_in(request.product),
        }
        price = (
            model.check_price(wire.money_in(request.price, "price")) if request.HasField("price") else None
        )
        command: ops.BlockCash | ops.BlockShares
        if request.side == trading_pb2.SIDE_BUY:
            if price is None:
                raise InvalidArgument(
                    "a BUY preview needs the price", reason="MISSING_LIMIT_PRICE", field="price"
                )
            command = ops.BlockCash(price=price, **terms)
        elif request.side == trading_pb2.SIDE_SELL:
            command = ops.BlockShares(**terms)
        else:
            raise InvalidArgument("side must be BUY or SELL", reason="MISSING_SIDE", field="side")
        return wire.block_preview_out(await self.app.preview_block(command, price))

    async def AdjustBlock(self, request: funds_pb2.AdjustBlockRequest, context: Context) -> funds_pb2.Block:
        user_id, order_id = wire.block_name(request.name)
        quantity = model.check_quantity(request.quantity)
        price = None
        if request.HasField("price") and request.price.value:
            price = model.check_price(wire.money_in(request.price, "price"))
        request_id = model.check_request_id(request.request_id)
        return wire.block_out(await self.app.adjust_block(user_id, order_id, quantity, price, request_id))

    async def ReleaseBlock(self, request: funds_pb2.ReleaseBlockRequest, context: Context) -> funds_pb2.Block:
        user_id, order_id = wire.block_name(request.name)
        reason = model.check_reason(request.reason)
        return wire.block_out(await self.app.release_block(user_id, order_id, reason))

    async def GetBlock(self, request: funds_pb2.GetBlockRequest, context: Context) -> funds_pb2.Block:
        user_id, order_id = wire.block_name(request.name)
        return wire.block_out(await self.app.block(user_id, order_id))

    async def ListBlocks(
        self, request: funds_pb2.ListBlocksRequest, context: Context
    ) -> funds_pb2.ListBlocksResponse:
        user_id = wire.user_or_all(request.parent)
        state = wire.state_in(request.state)
        size = pagination.page_size(request.page_size, default=100, maximum=1000)
        filters = ("blocks", user_id, None if state is None else str(state))
        after = pagination.decode_token(request.page_token, *filters) or ""
        blocks = await self.app.blocks(user_id, state, str(after), size + 1)
        token = pagination.encode_token(blocks[size - 1].order_id, *filters) if len(blocks) > size else ""
        return funds_pb2.ListBlocksResponse(
            blocks=[wire.block_out(b) for b in blocks[:size]], next_page_token=token
        )

    async def CheckInvariants(
        self, request: funds_pb2.CheckInvariantsRequest, context: Context
    ) -> funds_pb2.CheckInvariantsResponse:
        result = await self.audit.check()
        return funds_pb2.CheckInvariantsResponse(
            violations=[
                invariants_pb2.InvariantViolation(invariant=v.invariant, user_id=v.user_id, detail=v.detail)
                for v in result.violations
            ],
            accounts_checked=result.accounts_checked,
        )


class PortfolioServicer(portfolio_pb2_grpc.PortfolioServiceServicer):
    def __init__(self, app: PortfolioApp, funds: FundsApp) -> None:
        self.app = app
        self.funds = funds

    async def GetPortfolio(
        self, request: portfolio_pb2.GetPortfolioRequest, context: Context
    ) -> portfolio_pb2.Portfolio:
        user_id = wire.user_of_portfolio(request.name)
        return wire.portfolio_out(await self.app.portfolio(user_id, check_tag(request.tag)))

    async def RunEndOfDay(
        self, request: portfolio_pb2.RunEndOfDayRequest, context: Context
    ) -> portfolio_pb2.RunEndOfDayResponse:
        day = None
        if request.trading_day:
            try:
                day = date.fromisoformat(request.trading_day)
            except ValueError:
                raise InvalidArgument(
                    "trading_day must be YYYY-MM-DD", reason="INVALID_DATE", field="trading_day"
                ) from None
        closed, result = await self.app.end_of_day(day)
        return portfolio_pb2.RunEndOfDayResponse(
            trading_day=closed.isoformat(),
            positions_settled=result.positions_settled,
            already_closed=result.already_closed,
        )

    async def DepositShares(
        self, request: portfolio_pb2.DepositSharesRequest, context: Context
    ) -> portfolio_pb2.Holding:
        user_id = wire.user_of_parent(request.parent)
        symbol = model.check_symbol(request.symbol)
        quantity = model.check_quantity(request.quantity)
        average_price = model.check_price(
            parse_decimal(request.average_price.value, field="average_price", max_places=2, positive=True),
            field="average_price",
        )
        request_id = model.check_request_id(request.request_id)
        await self.funds.deposit_shares(
            user_id=user_id,
            symbol=symbol,
            quantity=quantity,
            average_price=average_price,
            request_id=request_id,
            reference=_reference(request.reference),
        )
        view = await self.app.portfolio(user_id)
        for holding in view.holdings:
            if holding.row.symbol == symbol:
                return wire.holding_out(holding)
        raise NotFound(f"no holding of {symbol}", reason="HOLDING_NOT_FOUND")  # sold off meanwhile


def _reference(text: str) -> str:
    text = (text or "").strip()
    if len(text) > 200:
        raise InvalidArgument(
            "reference must be at most 200 characters", reason="TOO_LONG", field="reference"
        )
    return text
