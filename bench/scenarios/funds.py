"""svc_funds under load: blocks and releases, and fill settlement, each beside a baseline
measured in the same run: throughput beside the bare single-row PostgreSQL transaction, and
the latency at half the target rate beside the bare parts of the same path at the same rate
(a gRPC call running one single-row transaction for blocks; JetStream publish → pull
consumer → one transaction per batch for settlement), which take no service logic at all.

svc_funds runs as its own process (real PostgreSQL with fsync, real JetStream with
`sync_interval: always`) with its default charges schedule, so every BUY block computes
charges and every fill posts them.

- `funds.blocks`:
  - `funds.block_many`: BlockFunds in a closed loop (32 in flight), one share per order,
    round-robin over many accounts; `funds.block_many_deep`: the same with 96 in flight,
    where throughput levels off; `funds.block_many_batched` and
    `funds.share_block_many_batched`: the same 32 callers coalesced into BatchBlockFunds
    (BUY cash blocks) and BatchBlockHoldings (SELL share blocks), as svc_orders does;
  - `funds.block_release_many`: BlockFunds then ReleaseBlock of the same order (two calls
    per operation), over many accounts;
  - `funds.block_release_hot`: the same on one account, every call on the same balance;
  - `funds.block_half_rate`: BlockFunds in an open loop at 1,000/s (half the target) over
    many accounts: latency from the intended send time.
- `funds.settlement`:
  - `funds.settle`: a backlog of fill reports (TRADE execution reports on JetStream, as
    svc_exec publishes them) drained by the service: fills settled per second, from the
    first settlement to the last (the `settled_at` stamps of the fills table), so the
    publisher's speed does not enter;
  - `funds.settle_half_rate`: fills published in an open loop at 1,500/s (half the target)
    while the service settles them: latency = the fill's `settled_at` (written in the
    settling transaction, just before its commit) − the report's intended publish time.

Fills are partial fills of large BUY blocks (one per account), so every settlement takes
money from a block, posts charges to the house accounts and updates a position. Accounts
are inserted directly in the service's tables (a password hash per account would make
set-up take minutes); everything measured goes through the public API.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
from google.protobuf import timestamp_pb2

from bench import load
from bench.api import (
    BASELINE_GRPC_PG_AT_RATE,
    BASELINE_JETSTREAM_PG_AT_RATE,
    BASELINE_PG_TXN,
    FUNDS_BLOCK_HALF_RATE,
    FUNDS_SETTLE_HALF_RATE,
    BenchContext,
    Figure,
    Scenario,
)
from brokermesh.exec.v1 import execution_report_pb2 as er
from brokermesh.funds.v1 import funds_pb2, funds_pb2_grpc, portfolio_pb2, portfolio_pb2_grpc
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from svc_funds.domain.accounts import hash_password
from svc_runtime import db, messaging
from svc_runtime.batching import Coalescer
from svc_runtime.errors import ServiceError, from_item_status
from svc_runtime.grpc_client import channel
from svc_runtime.stack import Stack

SERVICE = "svc_funds"
BLOCK_TARGET = ">= 2000 ops/s"
SETTLE_TARGET = ">= 3000 fills/s"
LATENCY_TARGETS = {"p99": "< 10 ms", "errors": "<= 0"}
DEEP_CONCURRENCY = 96
COALESCED_IN_FLIGHT = 4  # batches out at once
PRICE = decimal_pb2.Decimal(value="100.00")


@dataclass
class Rig:
    stack: Stack
    ch: grpc.aio.Channel
    stub: funds_pb2_grpc.FundsServiceStub
    users: list[str]

    async def close(self) -> None:
        await self.ch.close()


async def _rig(ctx: BenchContext, accounts: int, *, deposit: str = "1000000000.00") -> Rig:
    stack = await ctx.start_stack([SERVICE])
    conn = await asyncpg.connect(
        db.asyncpg_dsn(stack.plan.database_url), server_settings={"search_path": "funds"}
    )
    try:
        users = [f"u_bench{i:06d}" for i in range(accounts)]
        await conn.execute(
            "INSERT INTO accounts (user_id, username, display_name, password_hash) "
            "SELECT u, u, u, $2 FROM unnest($1::text[]) AS u",
            users,
            hash_password("bench-password"),  # one hash shared by every bench account
        )
        await conn.execute("INSERT INTO cash_balances (user_id) SELECT unnest($1::text[])", users)
    finally:
        await conn.close()
    ch = channel(stack.plan.target(SERVICE), signer=stack.plan.service_signer("gateway"))
    stub = funds_pb2_grpc.FundsServiceStub(ch)
    await _for_each(
        users,
        lambda user: stub.Deposit(
            funds_pb2.DepositRequest(
                name=f"users/{user}/funds",
                amount=decimal_pb2.Decimal(value=deposit),
                request_id=f"bench-{user}",
            ),
            timeout=30,
        ),
    )
    return Rig(stack, ch, stub, users)


async def _for_each(users: list[str], call: Callable[[str], Awaitable[object]]) -> None:
    """`call(user)` for every account, 64 at a time: set-up through the public API."""
    semaphore = asyncio.Semaphore(64)

    async def one(user: str) -> None:
        async with semaphore:
            await call(user)

    await asyncio.gather(*(one(u) for u in users))


async def _deposit_shares(rig: Rig, symbol: str, quantity: int) -> None:
    """Settled shares for every account, through the public API (PortfolioService.DepositShares)."""
    portfolio = portfolio_pb2_grpc.PortfolioServiceStub(rig.ch)
    await _for_each(
        rig.users,
        lambda user: portfolio.DepositShares(
            portfolio_pb2.DepositSharesRequest(
                parent=f"users/{user}",
                symbol=symbol,
                quantity=quantity,
                average_price=PRICE,
                request_id=f"bench-shares-{user}",
            ),
            timeout=30,
        ),
    )


def _batch_sender(method: Any, request_type: Any) -> Callable[[list[Any]], Awaitable[list[Any]]]:
    """Sends one coalesced batch of block requests (BatchBlockFunds or BatchBlockHoldings) and
    returns each item's block or error, as svc_orders' funds client does."""

    async def send(items: list[Any]) -> list[funds_pb2.Block | ServiceError]:
        response = await method(request_type(parent="users/-", requests=items), timeout=30)
        return [r.block if r.HasField("block") else from_item_status(r.error) for r in response.results]

    return send


def _block(rig: Rig, user: str, order_id: str, quantity: int = 1) -> funds_pb2.BlockFundsRequest:
    return funds_pb2.BlockFundsRequest(
        parent=f"users/{user}",
        order_id=order_id,
        symbol="INFY",
        quantity=quantity,
        price=PRICE,
        product=trading_pb2.PRODUCT_CNC,
    )


async def blocks(ctx: BenchContext) -> list[Figure]:
    runs = 1 if ctx.quick else 3
    duration = 2.0 if ctx.quick else 6.0
    rig = await _rig(ctx, 200 if ctx.quick else 1000)
    figures: list[Figure] = []
    try:
        serial = itertools.count()

        async def block(i: int) -> None:
            n = next(serial)
            await rig.stub.BlockFunds(_block(rig, rig.users[n % len(rig.users)], f"bm-{n}"), timeout=30)

        # What an OMS does with concurrent placements: coalesce them into BatchBlockFunds.
        coalescer: Coalescer[funds_pb2.BlockFundsRequest, funds_pb2.Block | ServiceError] = Coalescer(
            _batch_sender(rig.stub.BatchBlockFunds, funds_pb2.BatchBlockFundsRequest),
            max_in_flight=COALESCED_IN_FLIGHT,
        )

        async def block_coalesced(i: int) -> None:
            n = next(serial)
            await coalescer.submit(_block(rig, rig.users[n % len(rig.users)], f"bc-{n}"))

        # What an OMS does with concurrent SELL placements: coalesce them into BatchBlockHoldings.
        share_coalescer: Coalescer[funds_pb2.BlockHoldingsRequest, funds_pb2.Block | ServiceError] = (
            Coalescer(
                _batch_sender(rig.stub.BatchBlockHoldings, funds_pb2.BatchBlockHoldingsRequest),
                max_in_flight=COALESCED_IN_FLIGHT,
            )
        )

        async def share_block_coalesced(i: int) -> None:
            n = next(serial)
            user = rig.users[n % len(rig.users)]
            await share_coalescer.submit(
                funds_pb2.BlockHoldingsRequest(
                    parent=f"users/{user}", order_id=f"bs-{n}", symbol="INFY", quantity=1
                )
            )

        def pair(users: list[str], tag: str):  # type: ignore[no-untyped-def]
            async def op(i: int) -> None:
                n = next(serial)
                user = users[n % len(users)]
                await rig.stub.BlockFunds(_block(rig, user, f"{tag}-{n}"), timeout=30)
                await rig.stub.ReleaseBlock(
                    funds_pb2.ReleaseBlockRequest(name=f"users/{user}/blocks/{tag}-{n}", reason="CANCELLED"),
                    timeout=30,
                )

            return op

        async def closed(
            op: load.Operation,
            name: str,
            label: str,
            note: str,
            *,
            concurrency: int = load.SATURATION_CONCURRENCY,
            targets: dict[str, str] | None = None,
        ) -> None:
            ctx.progress(label)
            result = await load.median_of(
                runs,
                lambda: load.closed_loop(
                    op, concurrency=concurrency, duration=duration, label=label, progress=ctx.progress
                ),
            )
            figures.extend(result.figures(name, baseline=BASELINE_PG_TXN, targets=targets, note=note))

        many = f"round robin over {len(rig.users)} accounts"
        block_target = {"throughput": BLOCK_TARGET}
        await closed(
            block, "funds.block_many", "blocks", f"BlockFunds, 1 share each, {many}", targets=block_target
        )
        coalesced = (
            f"{many}, concurrent calls coalesced into BatchBlockFunds ({COALESCED_IN_FLIGHT} in flight)"
        )
        await closed(
            block_coalesced,
            "funds.block_many_batched",
            "blocks, batched",
            f"BlockFunds terms, 1 share each, {coalesced}",
            targets=block_target,
        )
        await _deposit_shares(rig, "INFY", 10_000_000)
        await closed(
            share_block_coalesced,
            "funds.share_block_many_batched",
            "share blocks, batched",
            f"BlockHoldings terms (SELL), 1 share each, {many}, concurrent calls coalesced into "
            f"BatchBlockHoldings ({COALESCED_IN_FLIGHT} in flight)",
            targets=block_target,
        )
        # 32 in flight does not saturate the service: bigger batches still pay off. The
        # deeper loop shows where throughput levels off (svc_funds at one full core).
        await closed(
            block,
            "funds.block_many_deep",
            "blocks, deep queue",
            f"BlockFunds, 1 share each, {many}",
            concurrency=DEEP_CONCURRENCY,
            targets=block_target,
        )
        await closed(
            pair(rig.users, "brm"),
            "funds.block_release_many",
            "block+release",
            f"BlockFunds then ReleaseBlock (2 calls per op), {many}",
        )
        await closed(
            pair(rig.users[:1], "brh"),
            "funds.block_release_hot",
            "block+release hot",
            "BlockFunds then ReleaseBlock (2 calls per op), all on one account",
        )
        result = await load.open_loop(
            block,
            rate=FUNDS_BLOCK_HALF_RATE,
            duration=duration,
            label="blocks at half rate",
            progress=ctx.progress,
        )
        figures += result.figures(
            "funds.block_half_rate",
            baseline=BASELINE_GRPC_PG_AT_RATE,
            targets=LATENCY_TARGETS,
            note=f"BlockFunds at {FUNDS_BLOCK_HALF_RATE:g}/s over {len(rig.users)} accounts",
        )
        result = await load.open_loop(
            block_coalesced,
            rate=FUNDS_BLOCK_HALF_RATE,
            duration=duration,
            label="batched blocks at half rate",
            progress=ctx.progress,
        )
        figures += result.figures(
            "funds.block_half_rate_batched",
            baseline=BASELINE_GRPC_PG_AT_RATE,
            targets=LATENCY_TARGETS,
            note=f"BlockFunds terms at {FUNDS_BLOCK_HALF_RATE:g}/s, {coalesced}",
        )
    finally:
        await rig.close()
    return figures


def _fill(exec_id: str, order_id: str, user: str, sent: datetime) -> er.ExecutionReport:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(sent)
    return er.ExecutionReport(
        exec_id=exec_id,
        order_id=order_id,
        user_id=user,
        exec_type=er.EXEC_TYPE_TRADE,
        ord_status=er.ORD_STATUS_PARTIALLY_FILLED,
        symbol="INFY",
        side=trading_pb2.SIDE_BUY,
        last_quantity=1,
        last_price=decimal_pb2.Decimal(value="99.95"),
        transact_time=stamp,
        receive_time=stamp,
    )


async def settlement(ctx: BenchContext) -> list[Figure]:
    backlog = 6000 if ctx.quick else 30000
    duration = 2.0 if ctx.quick else 6.0
    rig = await _rig(ctx, 200 if ctx.quick else 1000)
    plan = rig.stack.plan
    topology = messaging.Topology(plan.namespace)
    nc = await messaging.connect(plan.nats_url, "bench-funds")
    js = nc.jetstream()
    conn = await asyncpg.connect(db.asyncpg_dsn(plan.database_url), server_settings={"search_path": "funds"})
    figures: list[Figure] = []
    try:
        # One large BUY block per account; every fill is one share of it.
        await asyncio.gather(
            *(
                rig.stub.BlockFunds(_block(rig, u, f"big-{u}", quantity=1_000_000), timeout=60)
                for u in rig.users
            )
        )

        # Throughput: a backlog published while the service is stopped, then drained.
        ctx.progress(f"publishing {backlog} fills")
        await rig.stack.stop_service(SERVICE)
        now = datetime.now(UTC)
        reports = [
            _fill(f"bk-{i}", f"big-{rig.users[i % len(rig.users)]}", rig.users[i % len(rig.users)], now)
            for i in range(backlog)
        ]
        for i in range(0, backlog, 1000):
            await asyncio.gather(
                *(
                    messaging.publish(js, topology.exec_report_subject(r.user_id), r, r.exec_id)
                    for r in reports[i : i + 1000]
                )
            )
        ctx.progress("draining the backlog")
        await rig.stack.start_service(SERVICE)
        deadline = time.monotonic() + 300
        while await conn.fetchval("SELECT count(*) FROM fills WHERE exec_id LIKE 'bk-%'") < backlog:
            if time.monotonic() > deadline:
                raise TimeoutError("the backlog was not settled in 5 minutes")
            await asyncio.sleep(0.2)
        first, last = await conn.fetchrow(
            "SELECT min(settled_at), max(settled_at) FROM fills WHERE exec_id LIKE 'bk-%'"
        )
        seconds = max((last - first).total_seconds(), 1e-6)
        figures.append(
            Figure(
                "funds.settle.throughput",
                backlog / seconds,
                "fills/s",
                "higher",
                SETTLE_TARGET,
                BASELINE_PG_TXN,
                f"a backlog of {backlog} fill reports on JetStream drained by one svc_funds "
                f"(first to last settlement, {seconds:.2f} s); partial fills of {len(rig.users)} BUY blocks, charges posted",
            )
        )

        # Latency at half the target rate: publish on schedule, read when each settled.
        serial = itertools.count()
        fills = load.Completions("publish → settled")

        async def publish(i: int) -> None:
            n = next(serial)
            user = rig.users[n % len(rig.users)]
            exec_id = f"hr-{n}"
            intended = fills.sending(exec_id)
            report = _fill(exec_id, f"big-{user}", user, datetime.fromtimestamp(intended, UTC))
            await messaging.publish(js, topology.exec_report_subject(user), report, exec_id)

        published = await load.open_loop(
            publish,
            rate=FUNDS_SETTLE_HALF_RATE,
            duration=duration,
            label="fills at half rate",
            progress=ctx.progress,
        )
        await fills.wait(
            lambda: conn.fetchval("SELECT count(*) FROM fills WHERE exec_id LIKE 'hr-%'"), timeout=60
        )
        rows = await conn.fetch("SELECT exec_id, settled_at FROM fills WHERE exec_id LIKE 'hr-%'")
        result = fills.result(
            published, {r["exec_id"]: r["settled_at"].timestamp() for r in rows}, missing="not settled"
        )
        figures += result.figures(
            "funds.settle_half_rate",
            baseline=BASELINE_JETSTREAM_PG_AT_RATE,
            targets=LATENCY_TARGETS,
            throughput_unit="fills/s",
            note=f"fills published at {FUNDS_SETTLE_HALF_RATE:g}/s; intended publish time → settled_at in the settling transaction",
        )
    finally:
        await conn.close()
        await nc.close()
        await rig.close()
    return figures


SCENARIOS = [
    Scenario(
        "funds.blocks", "BlockFunds and ReleaseBlock: many accounts, one hot account, half rate", blocks
    ),
    Scenario(
        "funds.settlement",
        "fill settlement from JetStream: backlog throughput, latency at half rate",
        settlement,
    ),
]
