"""svc_exec's composition root: settings from the environment → adapters → use cases → gRPC,
on the service host.

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
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc
from svc_exec.adapters.faults import CrashPoints
from svc_exec.adapters.fix_session import FixSession
from svc_exec.adapters.nats_io import CommandConsumer, JetStreamReports
from svc_exec.adapters.repository import PgExecStore
from svc_exec.app.executor import Executor
from svc_exec.app.reconcile import Reconciler
from svc_exec.app.reports import ReportDesk
from svc_exec.domain.sequence import resume_target
from svc_exec.settings import ExecSettings
from svc_exec.transport.grpc_api import ExecutionServicer, SessionState
from svc_runtime import db, messaging, service
from svc_runtime.grpc_server import GrpcServer
from svc_runtime.host import Host
from svc_runtime.lease import Lease

log = logging.getLogger(__name__)

SERVICE = "svc_exec"
SCHEMA = "exec"
MIGRATIONS = Path(__file__).parent / "adapters" / "migrations"
SERVICE_NAME = exec_pb2.DESCRIPTOR.services_by_name["ExecutionService"].full_name
LEASE = "svc_exec:order-entry"


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
    async with Host(SERVICE, stop) as host:
        await db.migrate(common.database_url, SCHEMA, MIGRATIONS)
        # svc_exec leaves no session state on pooled connections (its one setting is SET
        # LOCAL; the lease's lock has a connection of its own): released without asyncpg's
        # reset round trip.
        pool = host.hold(
            await db.create_pool(common.database_url, SCHEMA, min_size=2, max_size=8, reset=db.keep_session),
            what="pool",
        )
        # Every publication is acknowledged before the drain reaches it: nothing is left to drain.
        nc = host.hold(await messaging.connect(common.nats_url, SERVICE), what="nats")
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
        await host.serve_grpc(server)
        await server.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)

        # One active executor per FIX session: two on one session (and one message store) would
        # corrupt its sequence numbers. Standbys wait here.
        lease = Lease(common.database_url, f"fix:{LEASE}")
        host.hold(lease, lease.release, what="FIX session lease")
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
        # Stopped the other way round once the consumer has stopped: log out, then publish
        # what arrived and persist.
        desk.start()
        host.hold(desk, desk.stop, what="report desk")
        session.start()
        host.hold(session, session.stop, what="FIX session")
        consumer = CommandConsumer(
            js,
            topology,
            executor.handle,
            logged_on=lambda: session.logged_on,
            wait_logged_on=session.wait_logged_on,
            stopping=stop,
            batch_size=settings.command_batch,
        )
        host.task(consumer.run(), "commands", stop=consumer.stop)
        # A lost lease ends this task, and with it the process: a standby takes over.
        host.task(lease.watch(stop), "lease")
        await host.until_stopped()
        if lease.lost.is_set():
            log.error("lost the FIX session lease; stopping so that a standby can take over")


def main() -> None:
    settings = ExecSettings.from_env()
    service.run(SERVICE, lambda stop: serve(settings, stop), metrics_port=settings.common.metrics_port)
