"""What an order costs the whole stack: CPU by process, PostgreSQL work, JetStream messages.

A `CostMeter` reads, before and after some orders, the CPU time every process of the stack
has used (`/proc/<pid>/stat` utime + stime of each process and its live descendants, plus
what its reaped children used: PostgreSQL's backends come and go under the postmaster),
the database's commits and rows (`pg_stat_database`), its statements (`pg_stat_statements`
when the server preloads it, as the harness's own server does) and the messages stored on
the stack's JetStream streams (each stream's last sequence: a work queue deletes what it
delivered, the sequence does not go back). Dividing the differences by the orders placed in
between gives a per-order cost that does not depend on how busy the machine was; set-up work
(creating users, logging in) happens outside the readings.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import nats

from bench.api import Figure
from svc_runtime import messaging
from svc_runtime.messaging import Topology

if TYPE_CHECKING:
    from svc_runtime.stack import Stack

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# How many statements the note of the statements figure names.
TOP_STATEMENTS = 8


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces: split after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / CLOCK_TICKS


def process_cpu(roots: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process tree (the root and its descendants)."""
    children: dict[int, list[int]] = {}
    own: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None:
            continue
        own[int(entry.name)] = stat[1]
        children.setdefault(stat[0], []).append(int(entry.name))
    totals: dict[str, float] = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += own.get(pid, 0.0)
            todo.extend(children.get(pid, ()))
        totals[name] = total
    return totals


@dataclass
class Reading:
    at: float
    cpu: dict[str, float]
    database: dict[str, int]
    statements: dict[str, int]  # query text → calls
    stream_seq: dict[str, int]


@dataclass
class Cost:
    """The difference between two readings, per order."""

    orders: int
    seconds: float
    cpu_ms: dict[str, float]  # process → ms of CPU per order
    database: dict[str, float]  # commits, rows inserted/updated/deleted per order
    statements: float | None  # statements per order (None without pg_stat_statements)
    top_statements: list[tuple[float, str]] = field(default_factory=list)
    messages: dict[str, float] = field(default_factory=dict)  # stream → messages per order

    def figures(self, prefix: str, note: str, idle: Mapping[str, float] | None = None) -> list[Figure]:
        """`idle`: ms of CPU per second with no orders, by process; the total net of it is
        reported beside the raw total."""
        about = f"{note}; {self.orders} orders over {self.seconds:.1f} s"
        out = [
            Figure(f"{prefix}.cpu_ms.{name}", ms, "ms", better="lower", note=f"{about}; CPU per order")
            for name, ms in sorted(self.cpu_ms.items())
        ]
        out.append(
            Figure(
                f"{prefix}.cpu_ms.total",
                sum(self.cpu_ms.values()),
                "ms",
                better="lower",
                note=f"{about}; CPU per order, every process of the stack",
            )
        )
        if idle:
            # What the stack does with no orders (market makers, ticks, timers) runs on during
            # the orders too: net of it, by process and in total, is what the orders cost.
            per_order = self.seconds / max(self.orders, 1)
            net = {name: ms - idle.get(name, 0.0) * per_order for name, ms in self.cpu_ms.items()}
            out.extend(
                Figure(
                    f"{prefix}.cpu_ms_net.{name}",
                    ms,
                    "ms",
                    better="lower",
                    note=f"{about}; CPU per order less what the process uses idle over as long",
                )
                for name, ms in sorted(net.items())
            )
            out.append(
                Figure(
                    f"{prefix}.cpu_ms.total_net",
                    sum(net.values()),
                    "ms",
                    better="lower",
                    note=f"{about}; the total less what the stack uses idle over as long "
                    f"({sum(idle.values()):.0f} ms/s: {sum(idle.values()) * per_order:.2f} ms per order)",
                )
            )
        for key, value in self.database.items():
            out.append(
                Figure(f"{prefix}.pg.{key}", value, "count", better="lower", note=f"{about}; per order")
            )
        if self.statements is not None:
            top = "; ".join(f"{calls:.2f}× {query}" for calls, query in self.top_statements)
            out.append(
                Figure(
                    f"{prefix}.pg.statements",
                    self.statements,
                    "count",
                    better="lower",
                    note=f"{about}; per order, BEGIN/COMMIT included; most frequent: {top}",
                )
            )
        for stream, value in self.messages.items():
            out.append(
                Figure(
                    f"{prefix}.js.{stream}", value, "count", better="lower", note=f"{about}; stored per order"
                )
            )
        out.append(
            Figure(
                f"{prefix}.js.total",
                sum(self.messages.values()),
                "count",
                better="lower",
                note=f"{about}; JetStream messages stored per order, every stream",
            )
        )
        return out


class CostMeter:
    """Readings of one stack (its service processes, and the servers the harness owns)."""

    def __init__(self, stack: Stack, servers: Mapping[str, int]) -> None:
        self.stack = stack
        self.servers = dict(servers)
        self.topology = Topology(stack.plan.namespace)
        self.database = stack.plan.database_url.rsplit("/", 1)[-1].split("?", 1)[0]
        self._pg: asyncpg.Connection | None = None
        self._nc: nats.NATS | None = None
        self._statements = True

    async def __aenter__(self) -> CostMeter:
        # The server's default database: pg_stat_statements lives there when preloaded.
        admin_url = self.stack.plan.database_url.rsplit("/", 1)[0] + "/postgres"
        self._pg = await asyncpg.connect(admin_url)
        try:
            await self._pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await self._pg.fetchval("SELECT count(*) FROM pg_stat_statements")
        except asyncpg.PostgresError:
            self._statements = False  # not preloaded by a server we do not own: no statement counts
        self._nc = await nats.connect(messaging.servers(self.stack.plan.nats_url), name="bench-cost")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._nc is not None:
            await self._nc.close()

    def _roots(self) -> dict[str, int]:
        roots = {name: p.pid for name, p in self.stack.processes.items() if p.returncode is None}
        roots.update(self.servers)
        return roots

    async def _database(self) -> dict[str, int]:
        assert self._pg is not None
        row = await self._pg.fetchrow(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database WHERE datname = $1",
            self.database,
        )
        return {
            "commits": row["xact_commit"],
            "rows_inserted": row["tup_inserted"],
            "rows_updated": row["tup_updated"],
            "rows_deleted": row["tup_deleted"],
        }

    async def _settled_database(self, timeout: float = 15.0) -> dict[str, int]:
        """Backends report their counters to pg_stat_database up to ~10 s after going idle:
        wait until two readings a second apart agree."""
        deadline = time.monotonic() + timeout
        last = await self._database()
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            now = await self._database()
            if now == last:
                return now
            last = now
        return last

    async def _statement_calls(self) -> dict[str, int]:
        if not self._statements or self._pg is None:
            return {}
        rows = await self._pg.fetch(
            "SELECT query, sum(calls)::bigint AS calls FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1 GROUP BY query",
            self.database,
        )
        return {r["query"]: r["calls"] for r in rows}

    async def _streams(self) -> dict[str, int]:
        assert self._nc is not None
        js = self._nc.jetstream()
        seqs = {}
        for config in self.topology.streams():
            info = await js.stream_info(config.name)
            seqs[config.name.removeprefix(f"{self.topology.namespace.upper()}_")] = info.state.last_seq
        return seqs

    async def before(self) -> Reading:
        """The database settled first, CPU last: waiting for counters is not charged to orders."""
        database = await self._settled_database()
        statements, streams = await self._statement_calls(), await self._streams()
        return Reading(time.monotonic(), process_cpu(self._roots()), database, statements, streams)

    async def after(self) -> Reading:
        """CPU at once, then the database's counters once they have settled."""
        at, cpu = time.monotonic(), process_cpu(self._roots())
        database = await self._settled_database()
        return Reading(at, cpu, database, await self._statement_calls(), await self._streams())

    async def idle(self, seconds: float) -> dict[str, float]:
        """ms of CPU per second each process uses with no orders: market makers, ticks, timers."""
        start, first = time.monotonic(), process_cpu(self._roots())
        await asyncio.sleep(seconds)
        elapsed, last = time.monotonic() - start, process_cpu(self._roots())
        return {k: (last.get(k, 0.0) - v) * 1000.0 / elapsed for k, v in first.items()}

    @staticmethod
    def cost(before: Reading, after: Reading, orders: int) -> Cost:
        n = max(orders, 1)
        calls = {q: after.statements.get(q, 0) - before.statements.get(q, 0) for q in after.statements}
        top = sorted(((c / n, " ".join(q.split())[:70]) for q, c in calls.items() if c), reverse=True)
        return Cost(
            orders=orders,
            seconds=after.at - before.at,
            cpu_ms={k: (after.cpu.get(k, 0.0) - v) * 1000.0 / n for k, v in before.cpu.items()},
            database={k: (after.database[k] - v) / n for k, v in before.database.items()},
            statements=sum(calls.values()) / n if after.statements else None,
            top_statements=top[:TOP_STATEMENTS],
            messages={k: (after.stream_seq[k] - v) / n for k, v in before.stream_seq.items()},
        )
