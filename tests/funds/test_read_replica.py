"""Ledger pages from a streaming replica, with read-your-writes: a user whose balance just
changed sees the new entries even while the replica lags; other users' pages come from the
replica. The replica is a real hot standby, made to lag by pausing its WAL replay."""

from __future__ import annotations

import asyncpg
import pytest

from svc_runtime import db
from tests.funds.conftest import StartFunds
from tests.support.polling import eventually
from tests.support.replica import Replicated, calls, replay

ENTRIES_PAGE = "SELECT entry_id, txn_id, user_id, account, unit, amount%"


async def test_a_user_sees_their_new_entries_while_the_replica_lags(
    start_funds: StartFunds, replicated: Replicated, monkeypatch: pytest.MonkeyPatch
) -> None:
    primary_url, replica_url = await replicated.database()
    monkeypatch.setenv("BROKERMESH_DATABASE_REPLICA_URL", replica_url)
    monkeypatch.setenv("BROKERMESH_DATABASE_REPLICA_MAX_LAG_SECONDS", "120")
    funds = await start_funds(database_url=primary_url)
    asha = await funds.open_account("1000.00")
    ravi = await funds.open_account("500.00")

    async def ravi_from_the_replica() -> bool:
        before = await calls(replica_url, ENTRIES_PAGE)
        entries = await funds.entries(ravi)
        return len(entries) > 0 and await calls(replica_url, ENTRIES_PAGE) > before

    assert await eventually(ravi_from_the_replica, timeout=30)

    await replay(replica_url, paused=True)
    try:
        before = len(await funds.entries(asha))
        on_replica = await calls(replica_url, ENTRIES_PAGE)
        await funds.deposit(asha, "250.00")
        # asha's page has her deposit at once: it came from the primary...
        assert len(await funds.entries(asha)) > before
        assert await calls(replica_url, ENTRIES_PAGE) == on_replica
        # ...which the lagging replica has not got.
        replica = await asyncpg.connect(db.asyncpg_dsn(replica_url))
        try:
            shown = await replica.fetchval("SELECT count(*) FROM funds.entries WHERE user_id = $1", asha)
        finally:
            await replica.close()
        assert shown == before
        # ravi's page still comes from the replica.
        await funds.entries(ravi)
        assert await calls(replica_url, ENTRIES_PAGE) == on_replica + 1
    finally:
        await replay(replica_url, paused=False)
