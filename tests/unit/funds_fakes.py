"""An in-memory ledger store for svc_funds' LedgerEngine (svc_funds/app/ports.py): it loads
copies of the rows a batch names, and a batch's changes replace them only on save, as the
PostgreSQL adapter's transaction does. It can be told to fail a save, as a conflict with a
concurrent transaction (which the engine retries) or as a plain error."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from svc_funds.domain.ledger import (
    Block,
    CashBalance,
    Changes,
    Fill,
    JournalTxn,
    LedgerState,
    ShareBalance,
    StoredRequest,
)
from svc_funds.domain.operations import Needs


class Conflict(Exception):
    """What a serialization failure or a raced unique key is to the engine: retryable."""


@dataclass
class MemoryLedger:
    cash: dict[str, CashBalance] = field(default_factory=dict)
    shares: dict[tuple[str, str], ShareBalance] = field(default_factory=dict)
    house: dict[str, Decimal] = field(default_factory=dict)
    blocks: dict[str, Block] = field(default_factory=dict)
    requests: dict[str, StoredRequest] = field(default_factory=dict)
    journal: list[JournalTxn] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    transactions: int = 0
    # Saves to fail, in order: each an exception instance (Conflict: the engine retries).
    failures: list[Exception] = field(default_factory=list)

    def open(self, user_id: str, cash: str, now: datetime) -> None:
        self.cash[user_id] = CashBalance(user_id, Decimal(cash), Decimal("0.00"), Decimal("0.00"), now)

    def give_shares(self, user_id: str, symbol: str, quantity: int, now: datetime) -> None:
        self.shares[(user_id, symbol)] = ShareBalance(user_id, symbol, quantity, 0, 0, now)

    # --- the LedgerStore port ---------------------------------------------------------
    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[MemoryLedgerUnit]:
        yield MemoryLedgerUnit(self)

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, Conflict)


class MemoryLedgerUnit:
    def __init__(self, ledger: MemoryLedger) -> None:
        self.ledger = ledger

    async def load(self, needs: Needs, *, read_blocks: bool = True) -> LedgerState:
        led = self.ledger
        state = LedgerState()
        if read_blocks:
            state.blocks = {o: copy.copy(led.blocks[o]) for o in sorted(needs.orders) if o in led.blocks}
            needs.add_block_owners(list(state.blocks.values()))
        state.cash = {u: copy.copy(led.cash[u]) for u in sorted(needs.users) if u in led.cash}
        for user, symbol in sorted(needs.shares):
            if (user, symbol) in led.shares:
                state.shares[(user, symbol)] = copy.copy(led.shares[(user, symbol)])
            elif user in led.cash:  # an existing user's share balance is made, empty
                state.shares[(user, symbol)] = ShareBalance(user, symbol, 0, 0, 0, led.cash[user].updated_at)
        state.house = dict.fromkeys(needs.house, Decimal(0))
        state.requests = {k: led.requests[k] for k in needs.request_keys if k in led.requests}
        state.seen_exec_ids = {f.exec_id for f in led.fills if f.exec_id in needs.exec_ids}
        return state

    async def save(self, changes: Changes) -> None:
        led = self.ledger
        if led.failures:
            raise led.failures.pop(0)
        if not {b.order_id for b in changes.new_blocks}.isdisjoint(led.blocks):
            raise Conflict("duplicate key value violates unique constraint on blocks")
        for balance in changes.cash:
            led.cash[balance.user_id] = balance
        for share in changes.shares:
            led.shares[(share.user_id, share.symbol)] = share
        for account, moved in changes.house.items():
            led.house[account] = led.house.get(account, Decimal(0)) + moved
        for block in (*changes.new_blocks, *changes.updated_blocks):
            led.blocks[block.order_id] = block
        for request in changes.requests:
            led.requests[request.key] = request
        led.journal += changes.journal
        led.fills += changes.fills
        led.transactions += 1
