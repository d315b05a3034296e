"""Helpers for svc_funds' integration tests: clients, accounts, reports, polling."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf import timestamp_pb2

from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.funds.v1 import (
    accounts_pb2,
    accounts_pb2_grpc,
    funds_pb2,
    funds_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
)
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_runtime import config, db, messaging
from svc_runtime.auth import Signer
from svc_runtime.errors import ErrorDetails, details_of
from svc_runtime.grpc_client import channel

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def dec(value: str) -> decimal_pb2.Decimal:
    return decimal_pb2.Decimal(value=value)


@dataclass
class FundsClient:
    """Stubs of one svc_funds, plus where its state lives."""

    target: str
    database_url: str
    nats_url: str
    namespace: str
    ch: grpc.aio.Channel
    # Whether the test fixture checks the ledger's invariants after the test.
    audit_at_teardown: bool = True

    @classmethod
    def connect(
        cls, target: str, database_url: str, nats_url: str, namespace: str, *, signer: Signer
    ) -> FundsClient:
        return cls(target, database_url, nats_url, namespace, channel(target, signer=signer))

    @property
    def accounts(self) -> accounts_pb2_grpc.AccountServiceStub:
        return accounts_pb2_grpc.AccountServiceStub(self.ch)

    @property
    def funds(self) -> funds_pb2_grpc.FundsServiceStub:
        return funds_pb2_grpc.FundsServiceStub(self.ch)

    @property
    def portfolio(self) -> portfolio_pb2_grpc.PortfolioServiceStub:
        return portfolio_pb2_grpc.PortfolioServiceStub(self.ch)

    async def close(self) -> None:
        await self.ch.close()

    # --- shortcuts -----------------------------------------------------------------------
    async def open_account(self, deposit: str = "0", *, prefix: str = "user") -> str:
        username = f"{prefix}-{secrets.token_hex(4)}"
        account = await self.accounts.CreateAccount(
            accounts_pb2.CreateAccountRequest(
                username=username, password="a long password", request_id=username
            ),
            timeout=30,
        )
        if deposit != "0":
            await self.deposit(account.user_id, deposit)
        return account.user_id

    async def deposit(self, user_id: str, amount: str, request_id: str | None = None) -> funds_pb2.Funds:
        return await self.funds.Deposit(
            funds_pb2.DepositRequest(
                name=f"users/{user_id}/funds",
                amount=dec(amount),
                request_id=request_id or secrets.token_hex(8),
            ),
            timeout=30,
        )

    async def deposit_shares(
        self, user_id: str, symbol: str, quantity: int, price: str
    ) -> portfolio_pb2.Holding:
        return await self.portfolio.DepositShares(
            portfolio_pb2.DepositSharesRequest(
                parent=f"users/{user_id}",
                symbol=symbol,
                quantity=quantity,
                average_price=dec(price),
                request_id=secrets.token_hex(8),
            ),
            timeout=30,
        )

    async def get_funds(self, user_id: str) -> funds_pb2.Funds:
        return await self.funds.GetFunds(funds_pb2.GetFundsRequest(name=f"users/{user_id}/funds"), timeout=30)

    async def block_funds(
        self, user_id: str, order_id: str, quantity: int, price: str, symbol: str = "INFY", product: int = 0
    ) -> funds_pb2.Block:
        return await self.funds.BlockFunds(
            funds_pb2.BlockFundsRequest(
                parent=f"users/{user_id}",
                order_id=order_id,
                symbol=symbol,
                quantity=quantity,
                price=dec(price),
                product=product,
            ),
            timeout=30,
        )

    async def get_block(self, user_id: str, order_id: str) -> funds_pb2.Block:
        return await self.funds.GetBlock(
            funds_pb2.GetBlockRequest(name=f"users/{user_id}/blocks/{order_id}"), timeout=30
        )

    async def entries(self, user_id: str) -> list[funds_pb2.LedgerEntry]:
        out: list[funds_pb2.LedgerEntry] = []
        token = ""
        while True:
            page = await self.funds.ListLedgerEntries(
                funds_pb2.ListLedgerEntriesRequest(
                    parent=f"users/{user_id}", page_size=500, page_token=token
                ),
                timeout=30,
            )
            out.extend(page.entries)
            token = page.next_page_token
            if not token:
                return out

    async def violations(self) -> list[str]:
        reply = await self.funds.CheckInvariants(funds_pb2.CheckInvariantsRequest(), timeout=120)
        return [f"{v.invariant} {v.user_id}: {v.detail}" for v in reply.violations]

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(
            db.asyncpg_dsn(self.database_url), server_settings={"search_path": "funds"}
        )
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()


async def rpc_error(call: Awaitable[Any]) -> ErrorDetails:
    """The decoded status of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return details_of(error)
    raise AssertionError("the call succeeded but was expected to fail")


def report(
    exec_id: str,
    order_id: str,
    user_id: str,
    *,
    exec_type: int = er.EXEC_TYPE_TRADE,
    ord_status: int = er.ORD_STATUS_PARTIALLY_FILLED,
    side: int = trading_pb2.SIDE_BUY,
    symbol: str = "INFY",
    quantity: int = 0,
    price: str = "",
    cumulative: int = 0,
    order_quantity: int = 0,
) -> er.ExecutionReport:
    now = timestamp_pb2.Timestamp()
    now.FromDatetime(datetime.now(UTC))
    return er.ExecutionReport(
        exec_id=exec_id,
        order_id=order_id,
        user_id=user_id,
        exec_type=exec_type,
        ord_status=ord_status,
        symbol=symbol,
        side=side,
        order_quantity=order_quantity,
        last_quantity=quantity,
        last_price=dec(price) if price else None,
        cumulative_quantity=cumulative,
        transact_time=now,
        receive_time=now,
        request_id=f"req-{exec_id}",
    )


class Reports:
    """Publishes execution reports to the stack's JetStream, as svc_exec does."""

    def __init__(self, nats_url: str, namespace: str) -> None:
        self.nats_url = nats_url
        self.topology = messaging.Topology(namespace)
        self.nc: Any = None

    async def __aenter__(self) -> Reports:
        self.nc = await messaging.connect(self.nats_url, "funds-test")
        await messaging.ensure_streams(self.nc.jetstream(), self.topology)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def publish(self, *reports: er.ExecutionReport, msg_id: str | None = None) -> None:
        js = self.nc.jetstream()
        for r in reports:
            await messaging.publish(
                js, self.topology.exec_report_subject(r.user_id or "x"), r, msg_id or r.exec_id
            )

    async def publish_raw(self, data: bytes, msg_id: str) -> None:
        await self.nc.jetstream().publish(
            self.topology.exec_report_subject("garbage"), data, headers={messaging.MSG_ID_HEADER: msg_id}
        )

    async def publish_many(self, reports: list[er.ExecutionReport], *, msg_id_prefix: str = "") -> None:
        """Pipelined, like a busy executor."""
        js = self.nc.jetstream()
        for i in range(0, len(reports), 500):
            await asyncio.gather(
                *(
                    messaging.publish(
                        js, self.topology.exec_report_subject(r.user_id), r, msg_id_prefix + r.exec_id
                    )
                    for r in reports[i : i + 500]
                )
            )


def d(value: str) -> Decimal:
    return Decimal(value)


async def ledger_check(database_url: str) -> tuple[int, str]:
    """Run `python -m svc_funds.ledger_check` on a database: (exit code, output)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "svc_funds.ledger_check",
        env={**os.environ, config.DATABASE_URL: database_url},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()
