"""Funds and block use cases: commands go to the ledger engine, reads to the read models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

from svc_funds.app.engine import LedgerEngine
from svc_funds.app.ports import EntryRow, FundsQueries, FundsRow
from svc_funds.domain import operations as ops
from svc_funds.domain.ledger import Block, FundsView
from svc_funds.domain.model import BlockState
from svc_funds.domain.operations import SharesView
from svc_runtime import context
from svc_runtime.errors import NotFound, ServiceError


def _user_not_found(user_id: str) -> NotFound:
    return NotFound(f"user {user_id} not found", reason="USER_NOT_FOUND", metadata={"user_id": user_id})


def _traced(command: ops.BlockCash | ops.BlockShares) -> ops.BlockCash | ops.BlockShares:
    """The command with the current request id, unless it names its order's own."""
    return command if command.request_id else replace(command, request_id=context.request_id())


class FundsApp:
    def __init__(self, engine: LedgerEngine, queries: FundsQueries) -> None:
        self.engine = engine
        self.queries = queries

    # --- commands ------------------------------------------------------------------------
    async def deposit(self, user_id: str, amount: Decimal, request_id: str, reference: str) -> FundsView:
        result = await self.engine.execute(ops.Deposit(user_id, amount, request_id, reference))
        assert isinstance(result, FundsView)
        return result

    async def withdraw(self, user_id: str, amount: Decimal, request_id: str, reference: str) -> FundsView:
        result = await self.engine.execute(ops.Withdraw(user_id, amount, request_id, reference))
        assert isinstance(result, FundsView)
        return result

    async def deposit_shares(
        self,
        *,
        user_id: str,
        symbol: str,
        quantity: int,
        average_price: Decimal,
        request_id: str,
        reference: str,
    ) -> SharesView:
        result = await self.engine.execute(
            ops.DepositShares(user_id, symbol, quantity, average_price, request_id, reference)
        )
        assert isinstance(result, SharesView)
        return result

    async def make_block(self, command: ops.BlockCash | ops.BlockShares) -> Block:
        """Cash for a BUY order or shares for a SELL order, keyed by the order id."""
        return await self._block(_traced(command))

    async def make_blocks(
        self, commands: Sequence[ops.BlockCash | ops.BlockShares]
    ) -> list[Block | ServiceError]:
        """Blocks for many orders, submitted together so they share ledger transactions;
        each succeeds or fails on its own."""
        results = await self.engine.execute_all([_traced(command) for command in commands])
        for result in results:
            assert isinstance(result, Block | ServiceError)
        return results  # type: ignore[return-value]

    async def preview_block(
        self, command: ops.BlockCash | ops.BlockShares, sale_price: Decimal | None = None
    ) -> ops.BlockPreview:
        """What `make_block` would do with `command` now, without doing it."""
        return await self.engine.preview(command, sale_price)

    async def adjust_block(
        self, user_id: str, order_id: str, quantity: int, price: Decimal | None, request_id: str
    ) -> Block:
        return await self._block(ops.AdjustBlock(user_id, order_id, quantity, price, request_id))

    async def release_block(self, user_id: str, order_id: str, reason: str) -> Block:
        return await self._block(ops.ReleaseBlock(user_id, order_id, reason, context.request_id()))

    async def _block(self, command: ops.Command) -> Block:
        result = await self.engine.execute(command)
        assert isinstance(result, Block)
        return result

    # --- queries -------------------------------------------------------------------------
    async def funds(self, user_id: str) -> FundsRow:
        row = await self.queries.funds(user_id)
        if row is None:
            raise _user_not_found(user_id)
        return row

    async def entries(self, user_id: str, before: int | None, limit: int) -> list[EntryRow]:
        if not await self.queries.user_exists(user_id):
            raise _user_not_found(user_id)
        return await self.queries.entries(user_id, before, limit)

    async def block(self, user_id: str, order_id: str) -> Block:
        block = await self.queries.block(order_id)
        if block is None or block.user_id != user_id:  # another user's block is not found either
            raise NotFound(
                f"no block for order {order_id}", reason="BLOCK_NOT_FOUND", metadata={"order_id": order_id}
            )
        return block

    async def blocks(
        self, user_id: str | None, state: BlockState | None, after: str, limit: int
    ) -> list[Block]:
        if user_id is not None and not await self.queries.user_exists(user_id):
            raise _user_not_found(user_id)
        return await self.queries.blocks(user_id, state, after, limit)
