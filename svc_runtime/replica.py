"""Reads from a PostgreSQL streaming replica that never show a user less than they wrote.

Pages a user reads at leisure (order history, trades, ledger pages, statements) may come
from a hot-standby replica, which lags the primary by the time it takes to ship and replay
WAL. A user who has just placed an order and opens their order list would notice that lag,
so a user's reads go to the replica only once it has replayed everything that user's writes
committed through this process; until then, and whenever the replica is behind by more than
`max_lag`, or cannot be reached, they go to the primary.

How "replayed the user's writes" is known without a round trip per write: a sampler asks
the primary for its WAL position (`pg_current_wal_lsn()`) at moment t, then the replica for
what it has replayed (`pg_last_wal_replay_lsn()`); once the replica has passed the position
read at t, every commit that had returned before t is visible there. A write records only the
moment its commit returned; a user whose last write returned before the newest such t
reads from the replica. Writes are known per process: a service with several replicas sees
only the writes it made itself (docs/deployment.md, "PostgreSQL").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

import asyncpg
from prometheus_client import Counter, Gauge

from svc_runtime import config, db

log = logging.getLogger(__name__)

READS = Counter("db_replica_reads_total", "Reads that could use the replica, by where they went", ["target"])
LAG = Gauge(
    "db_replica_lag_seconds", "How long ago the newest primary position the replica has replayed was read"
)

# How far behind the replica may be (seconds) before every read goes to the primary.
MAX_LAG = "BROKERMESH_DATABASE_REPLICA_MAX_LAG_SECONDS"

# Bytes since the start of WAL, as a number (pg_lsn has no asyncpg codec of its own).
_PRIMARY_POSITION = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
_REPLAYED_POSITION = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"


class ReplicaReads:
    """Which pool serves a user's read: the replica, or the primary while it lags them."""

    def __init__(
        self,
        primary: asyncpg.Pool,
        replica: asyncpg.Pool,
        *,
        sample_seconds: float = 0.1,
        max_lag: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.sample_seconds = sample_seconds
        self.max_lag = max_lag
        self._clock = clock
        # Primary positions read and when, not yet replayed by the replica (oldest first).
        self._pending: deque[tuple[float, int]] = deque()
        # Every commit that returned before this moment is visible on the replica.
        self._caught_up_to = float("-inf")
        self._written: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    # --- writes and reads ----------------------------------------------------------------
    def wrote(self, *user_ids: str) -> None:
        """Called once a transaction that changed these users' data has committed."""
        now = self._clock()
        for user_id in user_ids:
            self._written[user_id] = now

    def pool_for(self, user_id: str | None) -> asyncpg.Pool:
        """The replica if it shows everything `user_id` wrote here (any user: `None`) and is
        not behind by more than `max_lag`; otherwise the primary."""
        now = self._clock()
        fresh = now - self._caught_up_to <= self.max_lag
        written = self._written.get(user_id, float("-inf")) if user_id is not None else float("-inf")
        if fresh and written < self._caught_up_to:
            READS.labels("replica").inc()
            return self.replica
        READS.labels("primary").inc()
        return self.primary

    # --- the sampler ---------------------------------------------------------------------
    async def sample(self) -> None:
        """One round: read the primary's position, then what the replica has replayed."""
        moment = self._clock()
        position = await self.primary.fetchval(_PRIMARY_POSITION)
        self._pending.append((moment, int(position)))
        replayed = await self.replica.fetchval(_REPLAYED_POSITION)
        if replayed is None:  # not a standby (or not replaying): never read from it
            raise RuntimeError("the replica database is not in recovery: not a streaming replica")
        while self._pending and self._pending[0][1] <= int(replayed):
            self._caught_up_to = max(self._caught_up_to, self._pending.popleft()[0])
        self._forget(moment)
        LAG.set(max(0.0, self._clock() - self._caught_up_to))

    def _forget(self, now: float) -> None:
        """Writes the replica has shown, and positions too old to matter, are dropped."""
        if len(self._written) > 10_000:
            self._written = {u: t for u, t in self._written.items() if t >= self._caught_up_to}
        while len(self._pending) > 1 and now - self._pending[0][0] > self.max_lag * 2:
            self._pending.popleft()

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except (OSError, asyncpg.PostgresError, RuntimeError) as error:
                # Reads fall back to the primary on their own: nothing new is caught up to.
                log.warning("replica position unknown", extra={"error": str(error)})
            await asyncio.sleep(self.sample_seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-positions")

    async def close(self) -> None:
        """Stops the sampler and closes the replica's pool (the primary's is the caller's)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.replica.close()


async def from_env(primary: asyncpg.Pool, schema: str, *, max_size: int = 10) -> ReplicaReads | None:
    """Reads routed as above when BROKERMESH_DATABASE_REPLICA_URL names a replica (sampling
    already), else None: every read goes to the primary."""
    url = config.env(config.DATABASE_REPLICA_URL, "")
    if not url:
        return None
    replica = await db.create_pool(url, schema, min_size=1, max_size=max_size)
    reads = ReplicaReads(primary, replica, max_lag=config.env_float(MAX_LAG, 5.0))
    reads.start()
    log.info("reading pages from a streaming replica", extra={"schema": schema})
    return reads
