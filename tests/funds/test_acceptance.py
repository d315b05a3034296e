"""svc_funds' acceptance tests, with svc_funds as real processes (`python -m svc_funds`):
concurrent blocks on one balance across two replicas, identical blocks, and kill -9 in the
middle of settling thousands of fills."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import asyncpg
import grpc
import pytest

from brokermesh.exec.v1 import execution_report_pb2 as er
from svc_funds.settings import CHARGES
from svc_runtime import config, db
from svc_runtime.errors import details_of
from svc_runtime.grpc_client import wait_healthy
from svc_runtime.infra.processes import free_port
from svc_runtime.stack import Stack
from tests.funds.support import FundsClient, Reports, ledger_check, report
from tests.support.grpc import as_service
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def client_of(stack: Stack, target: str | None = None) -> FundsClient:
    plan = stack.plan
    return FundsClient.connect(
        target or plan.target("svc_funds"),
        plan.database_url,
        plan.nats_url,
        plan.namespace,
        signer=as_service(plan),
    )


def first_fill(order_id: str, user: str) -> er.ExecutionReport:
    """4 of an order of 10 @ 99.00."""
    return report(f"{order_id}-1", order_id, user, quantity=4, price="99.00", cumulative=4)


def last_fill(order_id: str, user: str) -> er.ExecutionReport:
    """The other 6 of an order of 10 @ 98.00: the order is filled."""
    return report(
        f"{order_id}-2",
        order_id,
        user,
        quantity=6,
        price="98.00",
        cumulative=10,
        ord_status=er.ORD_STATUS_FILLED,
    )


def settled(funds: FundsClient, fills: int) -> Callable[[], Awaitable[bool]]:
    """True once at least `fills` fills are settled and no block is still active."""

    async def check() -> bool:
        [row] = await funds.sql(
            "SELECT (SELECT count(*) FROM fills) AS fills, (SELECT count(*) FROM blocks WHERE state = 'ACTIVE') AS open"
        )
        return row["fills"] >= fills and row["open"] == 0

    return check


@pytest.fixture
async def second_replica(tmp_path: Path) -> AsyncIterator:  # type: ignore[type-arg]
    """Starts another svc_funds process on a stack's database and namespace."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(stack: Stack) -> str:
        port = free_port()
        env = {**os.environ, **stack.plan.env_for("svc_funds")}
        env[config.GRPC_LISTEN] = f"127.0.0.1:{port}"
        env[config.METRICS_PORT] = "0"
        with (tmp_path / "replica.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "svc_funds", env=env, stdout=log, stderr=log
            )
        processes.append(process)
        await wait_healthy(f"127.0.0.1:{port}", timeout=60)
        return f"127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def test_a_thousand_concurrent_buy_blocks_never_overspend_one_balance(
    make_stack, second_replica
) -> None:  # type: ignore[no-untyped-def]
    stack = await make_stack(["svc_funds"], extra_env={CHARGES: "zero"})
    replicas = [client_of(stack), client_of(stack, await second_replica(stack))]
    funds = replicas[0]
    user = await funds.open_account("100000.00")
    samples: list[tuple[Decimal, Decimal]] = []
    done = asyncio.Event()

    async def sample() -> None:
        # Watch the balance while the blocks race: through the API and in the table itself.
        while not done.is_set():
            f = await funds.get_funds(user)
            samples.append((Decimal(f.available.value), Decimal(f.blocked.value)))
            [row] = await funds.sql("SELECT available, blocked FROM cash_balances WHERE user_id = $1", user)
            samples.append((row["available"], row["blocked"]))
            await asyncio.sleep(0.002)

    async def block(i: int) -> str:
        try:
            await replicas[i % 2].block_funds(user, f"ord_{i:04d}", 1, "150.00")
        except grpc.aio.AioRpcError as error:
            return details_of(error).reason
        return "OK"

    sampler = asyncio.create_task(sample())
    await eventually(lambda: len(samples) >= 2)  # watching before the race starts
    outcomes = await asyncio.gather(*(block(i) for i in range(1000)))
    done.set()
    await sampler
    assert outcomes.count("OK") == 666
    assert outcomes.count("INSUFFICIENT_FUNDS") == 334
    final = await funds.get_funds(user)
    assert (final.available.value, final.blocked.value) == ("100.00", "99900.00")
    # How many moments the watcher saw depends on how fast the ledger was: at least one
    # round beside the one before the race.
    assert len(samples) >= 4
    assert all(available >= 0 and blocked >= 0 for available, blocked in samples)
    assert all(available + blocked == Decimal("100000.00") for available, blocked in samples)
    assert (await funds.sql("SELECT count(*) FROM blocks WHERE user_id = $1", user))[0][0] == 666
    assert await funds.violations() == []
    for replica in replicas:
        await replica.close()


async def test_fifty_identical_block_calls_on_two_replicas_make_one_block(make_stack, second_replica) -> None:  # type: ignore[no-untyped-def]
    stack = await make_stack(["svc_funds"], extra_env={CHARGES: "zero"})
    replicas = [client_of(stack), client_of(stack, await second_replica(stack))]
    user = await replicas[0].open_account("5000.00")
    # Ten orders, each blocked by fifty identical calls at once, spread over both replicas.
    orders = [f"ord_dup{k}" for k in range(10)]
    blocks = await asyncio.gather(
        *(replicas[i % 2].block_funds(user, order_id, 1, "150.00") for order_id in orders for i in range(50))
    )
    for k, order_id in enumerate(orders):
        answers = blocks[k * 50 : (k + 1) * 50]
        assert {(b.order_id, b.amount.value, b.create_time.ToNanoseconds()) for b in answers} == {
            (order_id, "150.00", answers[0].create_time.ToNanoseconds())
        }
    assert (await replicas[0].get_funds(user)).available.value == "3500.00"
    journal = await replicas[0].sql(
        "SELECT order_id, count(*) FROM journal WHERE user_id = $1 AND kind = 'BLOCK' GROUP BY 1", user
    )
    assert sorted((r[0], r[1]) for r in journal) == [(order_id, 1) for order_id in orders]
    assert await replicas[0].violations() == []
    for replica in replicas:
        await replica.close()


async def test_two_replicas_settling_one_stream_keep_every_house_account_exact(
    make_stack, second_replica
) -> None:  # type: ignore[no-untyped-def]
    # Both replicas pull from the one durable consumer, so their batches settle at the same
    # time and meet on the house accounts (exchange cash and shares, one per charge), which
    # each batch locks only when it writes.
    stack = await make_stack(["svc_funds"])
    replicas = [client_of(stack), client_of(stack, await second_replica(stack))]
    funds = replicas[0]
    users = [await funds.open_account("1000000.00") for _ in range(8)]
    orders = [(f"ord_r{i:04d}", users[i % len(users)]) for i in range(400)]
    semaphore = asyncio.Semaphore(64)

    async def block(i: int, order_id: str, user: str) -> None:
        async with semaphore:
            await replicas[i % 2].block_funds(user, order_id, 10, "100.00")

    await asyncio.gather(*(block(i, o, u) for i, (o, u) in enumerate(orders)))
    reports = [
        r for order_id, user in orders for r in (first_fill(order_id, user), last_fill(order_id, user))
    ]
    async with Reports(stack.plan.nats_url, stack.plan.namespace) as publisher:
        await publisher.publish_many(reports)

    await eventually(settled(funds, len(reports)), timeout=120)
    assert (await funds.sql("SELECT count(*) FROM fills"))[0][0] == len(reports)
    [totals] = await funds.sql("SELECT sum(value) AS value, sum(charges) AS charges FROM fills")
    assert totals["value"] == Decimal("393600.00")  # 400 × (4 × 99.00 + 6 × 98.00)
    assert totals["charges"] > 0
    house = {
        r["account"]: r["balance"] for r in await funds.sql("SELECT account, balance FROM house_balances")
    }
    assert house["house:exchange_cash"] == totals["value"]
    assert sum(v for k, v in house.items() if k.startswith("house:charges:")) == totals["charges"]
    assert await funds.violations() == []  # I1 includes every entry's balance-after chain
    for replica in replicas:
        await replica.close()


async def test_kill_9_in_the_middle_of_settling_loses_and_duplicates_nothing(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = await make_stack(["svc_funds"], extra_env={CHARGES: "zero"})
    funds = client_of(stack)
    users = [await funds.open_account("1000000.00") for _ in range(10)]
    orders = [(f"ord_k{i:05d}", users[i % len(users)]) for i in range(1200)]
    semaphore = asyncio.Semaphore(64)

    async def block(order_id: str, user: str) -> None:
        async with semaphore:
            await funds.block_funds(user, order_id, 10, "100.00")

    await asyncio.gather(*(block(o, u) for o, u in orders))

    # Every order fills 4 @ 99.00; four in five then fill 6 @ 98.00, the fifth is cancelled.
    # Every fill is published twice, the second time under another Nats-Msg-Id, as a
    # republish after JetStream's dedup window would be; and whatever the killed process had
    # committed but not yet acknowledged is redelivered after the restart.
    reports: list[er.ExecutionReport] = []
    expected_spent = dict.fromkeys(users, Decimal(0))
    expected_fills = 0
    for i, (order_id, user) in enumerate(orders):
        reports.append(first_fill(order_id, user))
        expected_spent[user] += Decimal("396.00")
        expected_fills += 1
        if i % 5 == 4:
            reports.append(
                report(
                    f"{order_id}-x",
                    order_id,
                    user,
                    exec_type=er.EXEC_TYPE_CANCELED,
                    ord_status=er.ORD_STATUS_CANCELED,
                    cumulative=4,
                )
            )
        else:
            reports.append(last_fill(order_id, user))
            expected_spent[user] += Decimal("588.00")
            expected_fills += 1
    republished = [r for r in reports if r.exec_type == er.EXEC_TYPE_TRADE]
    # A backlog, so that the kill lands in the middle of settling it.
    await stack.stop_service("svc_funds")
    async with Reports(stack.plan.nats_url, stack.plan.namespace) as publisher:
        await publisher.publish_many(reports)
        await publisher.publish_many(republished, msg_id_prefix="republished-")
    watcher = await asyncpg.connect(
        db.asyncpg_dsn(stack.plan.database_url), server_settings={"search_path": "funds"}
    )

    async def settling() -> bool:
        return await watcher.fetchval("SELECT count(DISTINCT exec_id) FROM fills") > 0

    # Settling starts while the process is still starting up: kill it at its first commit.
    starting = asyncio.create_task(stack.start_service("svc_funds"))
    await eventually(settling, interval=0.002)
    await stack.kill("svc_funds")
    with contextlib.suppress(RuntimeError):  # killed before it reported healthy
        await starting
    at_kill = await watcher.fetchval("SELECT count(DISTINCT exec_id) FROM fills")
    await watcher.close()
    assert 0 < at_kill < expected_fills, "the kill did not land in the middle of settling"

    await stack.start_service("svc_funds")
    funds = client_of(stack)

    await eventually(settled(funds, expected_fills), timeout=120)
    assert (await funds.sql("SELECT count(*) FROM fills"))[0][0] == expected_fills
    assert (await funds.sql("SELECT count(*) FROM journal WHERE kind = 'FILL'"))[0][0] == expected_fills
    for user in users:
        balance = await funds.get_funds(user)
        assert Decimal(balance.available.value) == Decimal("1000000.00") - expected_spent[user]
        assert balance.blocked.value == "0.00"
    assert await funds.violations() == []
    code, output = await ledger_check(stack.plan.database_url)
    assert code == 0, output
    assert "sound" in output
    await funds.close()


async def test_kill_9_while_blocking_then_retrying_every_call_blocks_each_order_once(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack = await make_stack(["svc_funds"], extra_env={CHARGES: "zero"})
    funds = client_of(stack)
    users = [await funds.open_account("100000.00") for _ in range(4)]
    orders = [(f"ord_b{i:04d}", users[i % len(users)]) for i in range(800)]
    semaphore = asyncio.Semaphore(32)

    async def block(order_id: str, user: str) -> bool:
        async with semaphore:
            try:
                await funds.block_funds(user, order_id, 1, "100.00")
            except grpc.aio.AioRpcError:
                return False  # an unknown outcome: the caller retries
            return True

    calls = asyncio.gather(*(block(o, u) for o, u in orders))
    await eventually(lambda: _blocks_exist(funds), interval=0.002)
    await stack.kill("svc_funds")
    answered = await calls
    assert not all(answered), "every call was answered before the kill; the test proved nothing"
    await stack.start_service("svc_funds")
    funds = client_of(stack)
    # Every caller retries its call; each order must end with exactly one block.
    retried = await asyncio.gather(*(block(o, u) for o, u in orders))
    assert all(retried)
    rows = await funds.sql("SELECT user_id, count(*) AS n FROM blocks GROUP BY user_id")
    assert {r["user_id"]: r["n"] for r in rows} == dict.fromkeys(users, 200)
    for user in users:
        balance = await funds.get_funds(user)
        assert (balance.available.value, balance.blocked.value) == ("80000.00", "20000.00")
    assert await funds.violations() == []
    await funds.close()


async def _blocks_exist(funds: FundsClient) -> bool:
    return (await funds.sql("SELECT count(*) FROM blocks"))[0][0] > 50
