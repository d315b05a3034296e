"""svc_exec's composition root: settings from the environment → adapters → use cases → gRPC.

Start-up order matters for exactly-once:
1. migrate, connect, serve gRPC (standbys answer GetSessionStatus too);
2. take the FIX session lease (one active executor per session);
3. build the quickfix initiator (loads the store), lower the expected incoming sequence
   number to the last safely published point, start the report pipeline;
4. connect to the exchange; consume commands once logged on.
Shutdown runs the other way: stop consuming, log out, publish what arrived, persist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc
from svc_exec.adapters.faults import CrashPoints
from svc_exec.adapters.fix_session import FixSession
from svc_exec.adapters.nats_io import MAX_BATCH, CommandConsumer, JetStreamReports
from svc_exec.adapters.repository import PgExecStore
from svc_exec.adapters.venue import DEFAULT_PROFILE, profile_path
from svc_exec.app.executor import Executor
from svc_exec.app.reconcile import Reconciler
from svc_exec.app.reports import ReportDesk
from svc_exec.domain.sequence import resume_target
from svc_exec.transport.grpc_api import ExecutionServicer, SessionState
from svc_runtime import aio, config, db, messaging, service
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.lease import Lease

log = logging.getLogger(__name__)

SERVICE = "svc_exec"
SCHEMA = "exec"
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE_NAME = exec_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name
LEASE = "svc_exec:order-entry"

# svc_exec's own settings (the shared ones are in svc_runtime.config).
FIX_CONFIG = "BROKERMESH_EXEC_FIX_CONFIG"
CRASH_AT = "BROKERMESH_EXEC_CRASH_AT"
FAULT_PUBLISH_DELAY_MS = "BROKERMESH_EXEC_FAULT_PUBLISH_DELAY_MS"
COMMAND_BATCH = "BROKERMESH_EXEC_COMMAND_BATCH"
REPORT_BATCH = "BROKERMESH_EXEC_REPORT_BATCH"
FORGOTTEN_AFTER = "BROKERMESH_EXEC_FORGOTTEN_AFTER_SECONDS"


@dataclass(frozen=True)
class ExecSettings:
    common: config.CommonSettings
    fix_host: str
    fix_port: int
    fix_config: Path
    crash_at: frozenset[str]
    fault_publish_delay: float
    command_batch: int
    report_batch: int
    forgotten_after: float

    @classmethod
    def from_env(cls) -> ExecSettings:
        return cls(
            common=config.CommonSettings.from_env(),
            fix_host=config.env(config.FIX_HOST, "127.0.0.1"),
            fix_port=config.env_int(config.FIX_PORT, 9878),
            # An explicit session file wins; otherwise the venue profile (name or path).
            fix_config=Path(config.env(FIX_CONFIG, ""))
            if config.env(FIX_CONFIG, "")
            else profile_path(config.env(config.VENUE_PROFILE, DEFAULT_PROFILE)),
            crash_at=frozenset(p for p in config.env(CRASH_AT, "-").split(",") if p and p != "-"),
            fault_publish_delay=config.env_int(FAULT_PUBLISH_DELAY_MS, 0) / 1000,
            command_batch=config.env_int(COMMAND_BATCH, 256),
            report_batch=max(1, config.env_int(REPORT_BATCH, MAX_BATCH)),
            forgotten_after=config.env_float(FORGOTTEN_AFTER, 5.0),
        )


@dataclass
class Active:
    """The parts that exist once this replica holds the FIX session (None on a standby)."""

    session: FixSession | None = None
    desk: ReportDesk | None = None
    executor: Executor | None = None
    reconciler: Reconciler | None = None

    def state(self) -> SessionState:
        state = SessionState(session_id="", active=self.session is not None)
        if self.session is not None:
            numbers = self.session.sequence_numbers()
            state.session_id = self.session.session_key
            state.logged_on = self.session.logged_on
            state.next_sender_seq_num = numbers["next_sender_seq_num"]
            state.next_target_seq_num = numbers["next_target_seq_num"]
            state.safe_next_target_seq_num = self.session.safe_next(numbers["next_target_seq_num"])
            state.last_receive_time = self.session.last_receive_time
            state.last_send_time = self.session.last_send_time
        if self.desk is not None:
            state.reports_published = self.desk.published
            state.reports_pending = self.desk.pending
            state.venue_incidents = self.desk.incidents
        if self.executor is not None:
            state.commands_sent = self.executor.sent
        return state


async def serve(settings: ExecSettings, stop: asyncio.Event) -> None:
    common = settings.common
    workdir = common.data_dir / SERVICE
    topology = messaging.Topology.from_env(common.namespace)
    await db.migrate(common.database_url, SCHEMA, MIGRATIONS)
    pool = await db.create_pool(common.database_url, SCHEMA, min_size=2, max_size=8)
    nc = await messaging.connect(common.nats_url, SERVICE)
    js = nc.jetstream()
    await messaging.ensure_streams(js, topology)
    store = PgExecStore(pool)

    active = Active()
    server = GrpcServer(common.grpc_listen)
    server.add(
        exec_pb2_grpc.add_ExecutionServiceServicer_to_server,
        ExecutionServicer(active.state, lambda: active.reconciler, store.incidents),
        SERVICE_NAME,
    )
    await server.start()
    await server.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)

    # One active executor per FIX session: two on one session (and one message store) would
    # corrupt its sequence numbers. Standbys wait here.
    lease = Lease(common.database_url, f"fix:{LEASE}")
    try:
        if not await lease.acquire(stop):
            return
        loop = asyncio.get_running_loop()
        desk = ReportDesk(
            store,
            JetStreamReports(js, topology, max_batch=settings.report_batch),
            fault_publish_delay=settings.fault_publish_delay,
            forgotten_after=settings.forgotten_after,
        )
        reconciler_box: list[Reconciler] = []
        background: set[asyncio.Task[None]] = set()

        def spawn(coro: Coroutine[Any, Any, None]) -> None:
            task = loop.create_task(coro)
            background.add(task)
            task.add_done_callback(background.discard)

        def on_logon() -> None:
            spawn(server.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING))
            if reconciler_box:
                spawn(reconciler_box[0].after_logon())

        def on_logout() -> None:
            spawn(server.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING))

        session = FixSession(
            template=settings.fix_config,
            workdir=workdir,
            host=settings.fix_host,
            port=settings.fix_port,
            loop=loop,
            sink=desk.inbound,
            on_logon=on_logon,
            on_logout=on_logout,
        )
        desk.attach(session)
        saved = await store.load_progress(session.session_key)
        session.resume_from(
            resume_target(
                session.store_next_target(),
                session.store_created,
                saved.next_target_seq if saved else None,
                saved.store_created if saved else None,
            )
        )
        executor = Executor(
            store, session, desk, crash_point=CrashPoints(set(settings.crash_at), workdir / "faults")
        )
        reconciler = Reconciler(store, session, desk)
        reconciler.resend = executor.handle
        reconciler_box.append(reconciler)
        active.session, active.desk, active.executor, active.reconciler = session, desk, executor, reconciler
        desk.start()
        session.start()
        consumer = CommandConsumer(
            js,
            topology,
            executor.handle,
            logged_on=lambda: session.logged_on,
            wait_logged_on=session.wait_logged_on,
            stopping=stop,
            batch_size=settings.command_batch,
        )
        consuming = service.supervise(consumer.run(), name="commands")
        confirming = service.supervise(lease.watch(stop), name="lease")
        lost = asyncio.create_task(lease.lost.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({consuming, lost, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if lease.lost.is_set():
            log.error("lost the FIX session lease; stopping so that a standby can take over")
        if consuming.done() and not consuming.cancelled() and consuming.exception() is not None:
            log.error("command consumer failed", exc_info=consuming.exception())
        for task in (lost, stopping, confirming):
            task.cancel()

        consumer.stop()
        # A consumer that died (or was cancelled) must not skip stopping the FIX session below.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await aio.within(consuming, 10)
        await session.stop()
        await desk.stop()
    finally:
        await server.stop()
        # Every publication was acknowledged above; nothing is left to drain.
        with contextlib.suppress(Exception):
            await nc.close()
        await pool.close()
        await lease.release()


def main() -> None:
    settings = ExecSettings.from_env()
    service.run(SERVICE, lambda stop: serve(settings, stop), metrics_port=settings.common.metrics_port)
