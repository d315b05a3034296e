"""The whole stack as one process tree: infrastructure, then every service, in order.

`brokermesh up` and the end-to-end tests start the stack through this module, so tests
exercise the same wiring an operator runs. Each service is its own OS process
(`python -m <package>`), configured only through environment variables, in its own
session (Ctrl-C reaches the supervisor, which stops services in reverse order), and set to
die with the supervisor should it be killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import ssl
import sys
import time
import urllib.request
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from svc_runtime import aio, auth, config, market_clock, tls, tokens
from svc_runtime.grpc_client import wait_healthy
from svc_runtime.infra.nats_server import EmbeddedNats, EmbeddedNatsCluster, NatsHandle
from svc_runtime.infra.postgres import EmbeddedPostgres, PostgresHandle
from svc_runtime.infra.processes import die_with_parent, free_port, port_is_free
from svc_runtime.service import EXIT_ADDRESS_IN_USE

log = logging.getLogger(__name__)

# How often a service whose port was taken is given others before the start-up gives up.
MOVES = 5


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` has a TCP socket listening on `port` (True when it cannot be
    told: the process belongs to a user we may not inspect)."""
    try:
        process = psutil.Process(pid)
        sockets = (
            process.net_connections("tcp")
            if hasattr(process, "net_connections")
            else process.connections("tcp")
        )
    except psutil.AccessDenied:
        return True
    except psutil.NoSuchProcess:
        return False
    return any(s.status == psutil.CONN_LISTEN and s.laddr and s.laddr.port == port for s in sockets)


class AddressTaken(RuntimeError):
    """A service exited at start-up because a port it was given is held by another process."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    # Ports this service listens on: "grpc", "http", "fix".
    listens: tuple[str, ...]
    # How readiness is checked: "grpc" health service or "http" /healthz.
    health: str


# Start order: each service's dependencies come before it.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("exchange_sim", "exchange_sim", ("grpc", "fix"), "grpc"),
    ServiceSpec("svc_funds", "svc_funds", ("grpc",), "grpc"),
    ServiceSpec("svc_marketdata", "svc_marketdata", ("grpc",), "grpc"),
    ServiceSpec("svc_exec", "svc_exec", ("grpc",), "grpc"),
    ServiceSpec("svc_orders", "svc_orders", ("grpc",), "grpc"),
    ServiceSpec("gateway", "gateway", ("http",), "http"),
)
SERVICE_NAMES = tuple(s.name for s in SERVICES)
# The services that run replicas under `up --cluster`. The simulator stands for one venue.
# svc_marketdata's replicas share the exchange's market-data session through a lease: one
# holds it, the others follow its ticks (svc_marketdata/app/replication.py).
REPLICATED = frozenset({"svc_funds", "svc_marketdata", "svc_exec", "svc_orders", "gateway"})


def replica_name(service: str, replica: int) -> str:
    """The process name of `service`'s `replica` (1-based): the first keeps the service's
    name, the others are `<service>.<n>`."""
    return service if replica == 1 else f"{service}.{replica}"


def service_of(process: str) -> str:
    """The service a process name (see `replica_name`) runs."""
    return process.split(".", 1)[0]


# Ports an operator can remember; taken when free, otherwise any free port.
PREFERRED_PORTS = {
    ("gateway", "http"): 8080,
    ("svc_orders", "grpc"): 50051,
    ("svc_funds", "grpc"): 50052,
    ("svc_marketdata", "grpc"): 50053,
    ("svc_exec", "grpc"): 50054,
    ("exchange_sim", "grpc"): 50055,
    ("exchange_sim", "fix"): 9878,
}


@dataclass
class StackPlan:
    """Everything a stack's processes need to find each other."""

    data_dir: Path
    database_url: str
    nats_url: str
    namespace: str = config.DEFAULT_NAMESPACE
    ports: dict[str, dict[str, int]] = field(default_factory=dict)
    jwt_secret: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    # Settings for one service only, over `extra_env` (e.g. svc_exec reaching the venue
    # through a relay).
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Another venue's FIX acceptor (HOST:PORT) instead of the simulator, and svc_exec's
    # venue profile for it (see svc_exec/adapters/venue.py).
    venue: str = ""
    venue_profile: str = ""
    # Processes per replicated service (see REPLICATED); their ports are in `ports` under
    # `replica_name(service, n)`.
    replicas: int = 1

    def use_venue(self, venue: str, profile: str = "") -> None:
        """Trade at `venue` (HOST:PORT): no simulator, no market-data session."""
        host, _, port = venue.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"the venue must be HOST:PORT, not {venue!r}")
        self.venue, self.venue_profile = venue, profile
        self.ports.pop("exchange_sim", None)

    @property
    def fix_address(self) -> tuple[str, str]:
        if self.venue:
            host, _, port = self.venue.rpartition(":")
            return host, port
        return "127.0.0.1", str(self.ports["exchange_sim"]["fix"])

    # The service key and operator credentials, kept in the data directory (mode 0600).
    credentials: auth.Credentials | None = None
    # The certificate every public listener serves; None only in plain-text mode.
    tls_files: tls.Material | None = None

    @classmethod
    def allocate(
        cls,
        data_dir: Path,
        database_url: str,
        nats_url: str,
        *,
        namespace: str = config.DEFAULT_NAMESPACE,
        preferred: bool = False,
        previous: dict[str, dict[str, int]] | None = None,
        jwt_secret: str = "",
        plaintext: bool | None = None,
        hostnames: tuple[str, ...] = (),
        replicas: int = 1,
    ) -> StackPlan:
        """Ports for every service, and the stack's credentials and TLS material (made in
        `data_dir` on first use). `plaintext` (default: BROKERMESH_INSECURE_PLAINTEXT) turns
        TLS off; `hostnames` (default: BROKERMESH_TLS_HOSTNAMES) are names the made server
        certificate is valid for besides localhost and the loopback addresses."""
        if plaintext is None:
            plaintext = tls.plaintext()
        ports: dict[str, dict[str, int]] = {}
        taken: set[int] = set()
        for spec in SERVICES:
            for replica in range(1, (replicas if spec.name in REPLICATED else 1) + 1):
                name = replica_name(spec.name, replica)
                ports[name] = {}
                for kind in (*spec.listens, "metrics"):
                    if kind == "http" and replica > 1:  # the gateways share one public port
                        ports[name][kind] = ports[spec.name][kind]
                        continue
                    candidates = []
                    if previous and kind in previous.get(name, {}):
                        candidates.append(previous[name][kind])
                    if preferred and replica == 1 and (spec.name, kind) in PREFERRED_PORTS:
                        candidates.append(PREFERRED_PORTS[(spec.name, kind)])
                    port = next((p for p in candidates if p not in taken and port_is_free(p)), 0)
                    while not port or port in taken:
                        port = free_port()
                    taken.add(port)
                    ports[name][kind] = port
        return cls(
            data_dir,
            database_url,
            nats_url,
            namespace,
            ports,
            jwt_secret,
            credentials=auth.ensure_credentials(data_dir),
            tls_files=None if plaintext else tls.ensure(data_dir, hostnames or tls.hostnames_from_env()),
            replicas=replicas,
        )

    def move(self, service: str) -> None:
        """New ports for `service` (its old ones were found taken)."""
        taken = {port for name, ports in self.ports.items() if name != service for port in ports.values()}
        taken |= set(self.ports[service].values())
        for kind in self.ports[service]:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            self.ports[service][kind] = port
        if "http" in self.ports[service]:  # replicas of the gateway move their shared port together
            for name in self.instances(service_of(service)):
                self.ports[name]["http"] = self.ports[service]["http"]

    def instances(self, service: str) -> list[str]:
        """The process names running `service`, the first replica first."""
        return [name for name in self.ports if service_of(name) == service]

    def target(self, service: str) -> str:
        """Where a client calls `service`: its one address, or the list of its replicas'
        (`ipv4:h:p1,h:p2`, which `grpc_client.channel` balances over); a process name
        (`svc_orders.2`) gives that replica alone."""
        names = [service] if service not in SERVICE_NAMES else self.instances(service)
        if len(names) == 1:
            return self.instance_target(names[0])
        return "ipv4:" + ",".join(f"127.0.0.1:{self.ports[name]['grpc']}" for name in names)

    def instance_target(self, name: str) -> str:
        """The address of one process (`svc_orders`, `svc_orders.2`)."""
        return f"127.0.0.1:{self.ports[name]['grpc']}"

    @property
    def gateway_url(self) -> str:
        scheme = "http" if self.tls_files is None else "https"
        return f"{scheme}://127.0.0.1:{self.ports['gateway']['http']}"

    def client_ssl(self) -> ssl.SSLContext | None:
        """What a client of this stack verifies its certificate with (None in plain text)."""
        if self.tls_files is None:
            return None
        return tls.client_context(self.tls_files.ca)

    def env_for(self, service: str) -> dict[str, str]:
        ports = self.ports[service]
        env = {
            config.DATABASE_URL: self.database_url,
            config.NATS_URL: self.nats_url,
            config.NAMESPACE: self.namespace,
            config.DATA_DIR: str(self.data_dir),
            config.METRICS_PORT: str(ports["metrics"]),
            config.ORDERS_TARGET: self.target("svc_orders"),
            config.FUNDS_TARGET: self.target("svc_funds"),
            config.MARKETDATA_TARGET: self.target("svc_marketdata"),
            config.EXEC_TARGET: self.target("svc_exec"),
            config.FIX_HOST: self.fix_address[0],
            config.FIX_PORT: self.fix_address[1],
            config.JWT_SECRET: self.jwt_secret,
        }
        if "exchange_sim" in self.ports:
            env[config.EXCHANGE_ADMIN_TARGET] = self.target("exchange_sim")
        if self.venue:
            env["BROKERMESH_MARKETDATA_FEED"] = "none"
            if self.venue_profile:
                env[config.VENUE_PROFILE] = self.venue_profile
        if self.credentials is not None:
            env.update(self.credentials.env())
        if self.tls_files is None:
            env[tls.PLAINTEXT] = "1"
        else:
            env.update(self.tls_files.env())
            env[tls.PLAINTEXT] = "0"
        if "grpc" in ports:
            env[config.GRPC_LISTEN] = f"127.0.0.1:{ports['grpc']}"
        if "http" in ports:
            env[config.HTTP_LISTEN] = f"127.0.0.1:{ports['http']}"
        # A fast market clock is pinned at the first service started: every one, and every
        # restart, then agrees on the market time.
        self.extra_env.update(market_clock.pinned_env({**os.environ, **self.extra_env}))
        if self.replicas > 1 and service_of(service) == "gateway":
            env[config.GATEWAY_SHARED_PORT] = "1"
        env.update(self.extra_env)
        env.update(self.service_env.get(service_of(service), {}))
        env.update(self.service_env.get(service, {}))
        return env

    def _credentials(self) -> auth.Credentials:
        if self.credentials is None:
            raise RuntimeError("this stack plan has no credentials")
        return self.credentials

    def service_signer(self, name: str) -> auth.Signer:
        """Calls signed as the stack's service `name` (e.g. the gateway)."""
        return auth.service_signer(name, self._credentials().service_key)

    def operator_signer(self, name: str = "admin") -> auth.Signer:
        """Calls signed as one of the stack's operators (`admin`, `auditor`)."""
        return auth.operator_signer(self._credentials().operator(name))

    def verifier(self, audience: str) -> auth.Verifier:
        """What the stack's service `audience` checks callers with (for servers in tests)."""
        credentials = self._credentials()
        return auth.Verifier(
            audience,
            service_key=credentials.service_key,
            operators=auth.load_operators(credentials.operators_file),
            users=tokens.UserTokens(self.signing_keys()),
        )

    def signing_keys(self) -> tokens.SigningKeys:
        """The key set of users' tokens, as the stack's processes hold it."""
        return tokens.SigningKeys(self.jwt_secret, self._credentials().signing_keys_file)

    def describe(self) -> dict[str, object]:
        return {
            "gateway_url": self.gateway_url,
            "docs_url": f"{self.gateway_url}/v1/ui/",
            "grpc": {name: self.target(name) for name in SERVICE_NAMES if "grpc" in self.ports.get(name, {})},
            "fix": ":".join(self.fix_address),
            "venue": self.venue or "exchange_sim",
            "metrics": {name: f"http://127.0.0.1:{p['metrics']}/metrics" for name, p in self.ports.items()},
            "nats_url": self.nats_url,
            "namespace": self.namespace,
            "ports": self.ports,
            # What clients trust: the stack's CA ("" for system roots); null in plain text.
            "tls_ca": None if self.tls_files is None else str(self.tls_files.ca or ""),
        }


class Infrastructure:
    """PostgreSQL and NATS: the ones named by environment variables, or our own."""

    def __init__(self, data_dir: Path, *, nats_nodes: int = 1) -> None:
        self.data_dir = data_dir
        self.postgres: PostgresHandle | None = None
        self.nats: NatsHandle | None = None
        # `nats_nodes` > 1: our NATS is a JetStream cluster of that many nodes on this machine.
        self.nats_nodes = nats_nodes
        self.nats_cluster: EmbeddedNatsCluster | None = None
        self.database_url = os.environ.get(config.DATABASE_URL, "")
        self.nats_url = os.environ.get(config.NATS_URL, "")
        self._servers: dict[str, EmbeddedPostgres | EmbeddedNats] = {}

    def start(
        self, *, nats_sync_always: bool = True, postgres_settings: dict[str, str] | None = None
    ) -> None:
        if not self.database_url:
            self._servers["postgres"] = EmbeddedPostgres(
                self.data_dir / "postgres", self.data_dir / "logs" / "postgres.log"
            )
            self.postgres = self._servers["postgres"].start(settings=postgres_settings)
            self.database_url = self.postgres.url
        if not self.nats_url and self.nats_nodes > 1:
            self.nats_cluster = EmbeddedNatsCluster(
                self.data_dir / "nats-cluster",
                self.nats_nodes,
                sync_always=nats_sync_always,
                log_dir=self.data_dir / "logs",
            )
            self.nats_cluster.start()
            self.nats_url = self.nats_cluster.url
        if not self.nats_url:
            self._servers["nats"] = EmbeddedNats(
                self.data_dir / "nats",
                sync_always=nats_sync_always,
                log_file=self.data_dir / "logs" / "nats.log",
            )
            self.nats = self._servers["nats"].start()
            self.nats_url = self.nats.url

    def exited(self) -> dict[str, int]:
        """The servers we started that have exited, with their exit codes."""
        handles = {"postgres": self.postgres, "nats": self.nats}
        exited = {
            name: code
            for name, handle in handles.items()
            if handle is not None and (code := handle.process.poll()) is not None
        }
        if self.nats_cluster is not None:
            exited |= {f"nats-n{i + 1}": code for i, code in self.nats_cluster.exited().items()}
        return exited

    def restart(self, name: str) -> None:
        """Starts a server of ours that died again, on the port its clients already know (a
        cluster node also on the route its peers know)."""
        if name.startswith("nats-n") and self.nats_cluster is not None:
            self.nats_cluster.start_node(int(name.removeprefix("nats-n")) - 1)
        elif name == "postgres" and self.postgres is not None:
            self.postgres = self._servers["postgres"].start(port=self.postgres.port)  # type: ignore[assignment]
        elif name == "nats" and self.nats is not None:
            self.nats = self._servers["nats"].start(port=self.nats.port)  # type: ignore[assignment]

    def kill(self) -> None:
        """kill -9 of our servers: the forced stop after a second Ctrl-C."""
        if self.nats_cluster is not None:
            self.nats_cluster.kill()
        for handle in (self.nats, self.postgres):
            if handle is not None and handle.process.poll() is None:
                handle.process.kill()

    def stop(self) -> None:
        if self.nats_cluster is not None:
            self.nats_cluster.stop()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def destroy(self) -> None:
        """Stop, then delete everything the servers stored (throwaway test infrastructure)."""
        self.stop()
        if self.postgres is not None:
            EmbeddedPostgres(self.data_dir / "postgres").remove()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class Stack:
    """The service processes of one plan."""

    def __init__(self, plan: StackPlan, *, log_dir: Path | None = None) -> None:
        self.plan = plan
        self.log_dir = log_dir or plan.data_dir / "logs"
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.specs = {s.name: s for s in SERVICES}
        # The environment each service was last started with.
        self.started_env: dict[str, dict[str, str]] = {}
        # Services asked to stop that did not exit 0 (a crash while shutting down, or killed
        # after the grace period): (name, exit code), in order.
        self.unclean_stops: list[tuple[str, int]] = []

    async def start(
        self, services: tuple[str, ...] | list[str] = SERVICE_NAMES, *, timeout: float = 60.0
    ) -> None:
        """Start `services` (every replica of each) in dependency order; a port found taken
        is replaced (see `start_service`)."""
        for name in list(self.plan.ports):
            if service_of(name) in services:
                await self.start_service(name, timeout=timeout, may_move=True)

    async def start_service(self, name: str, *, timeout: float = 60.0, may_move: bool = False) -> None:
        """Start `name` and wait until it is ready. A port is only known to be free once the
        service has bound it: with `may_move`, a service that exits because one of its ports is
        taken (by any process on the machine) gets new ports and starts again, and the services
        already running that call it are started again with its new address."""
        for attempt in range(MOVES + 1):
            try:
                await self._start_once(name, timeout=timeout)
                return
            except AddressTaken:
                if not may_move or attempt == MOVES:
                    raise
            moved_from = dict(self.plan.ports[name])
            self.plan.move(name)
            log.warning(
                "a port was taken; starting on others",
                extra={"service": name, "from": moved_from, "to": self.plan.ports[name]},
            )
            for other, env in list(self.started_env.items()):
                if other != name and self.plan.env_for(other) != env and self.running(other):
                    await self.restart(other, timeout=timeout)

    def running(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.returncode is None

    async def _start_once(self, name: str, *, timeout: float) -> None:
        spec = self.specs[service_of(name)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started_env[name] = self.plan.env_for(name)
        env = {**os.environ, **self.started_env[name]}
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_dir / f"{name}.log", "ab") as log_file:  # noqa: ASYNC230 - a quick local open
            process = await asyncio.create_subprocess_exec(
                *die_with_parent([sys.executable, "-m", spec.module], signal.SIGTERM),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        self.processes[name] = process
        try:
            await self.wait_ready(name, timeout=timeout)
        except Exception:
            tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
            if process.returncode == EXIT_ADDRESS_IN_USE:
                raise AddressTaken(f"{name}: a port it was given is taken:\n{tail}") from None
            raise RuntimeError(f"{name} did not become ready:\n{tail}") from None

    async def wait_ready(self, name: str, *, timeout: float = 60.0) -> None:
        spec = self.specs[service_of(name)]
        process = self.processes[name]
        deadline = time.monotonic() + timeout
        if spec.health == "grpc":
            healthy = wait_healthy(self.plan.instance_target(name), timeout=timeout)
            port = self.plan.ports[name]["grpc"]
        else:
            healthy = self._wait_http(f"{self.plan.gateway_url}/healthz", timeout, self.plan.client_ssl())
            port = self.plan.ports[name]["http"]
        waiter = asyncio.create_task(self._answered_by(process, port, healthy))
        exited = asyncio.create_task(process.wait())
        done, _ = await asyncio.wait(
            {waiter, exited},
            timeout=max(0.0, deadline - time.monotonic()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if waiter in done:
            exited.cancel()
            waiter.result()
            return
        waiter.cancel()
        exited.cancel()
        if process.returncode is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        raise TimeoutError(f"{name} not ready after {timeout}s")

    @staticmethod
    async def _answered_by(process: asyncio.subprocess.Process, port: int, healthy: Awaitable[None]) -> None:
        """`healthy`, and then until `process` itself listens on `port`: a health check answered
        on the port may come from another process holding it (a stack started at the same
        moment), in which case `process` fails to bind and exits instead."""
        await healthy
        while not await asyncio.to_thread(listens, process.pid, port):  # noqa: ASYNC110 - another process's sockets
            await asyncio.sleep(0.1)

    @staticmethod
    async def _wait_http(url: str, timeout: float, context: ssl.SSLContext | None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(url, timeout=1, context=context).status
                )
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError(url)

    async def stop_service(self, name: str, *, timeout: float = 20.0) -> int | None:
        process = self.processes.get(name)
        if process is None or process.returncode is not None:
            return process.returncode if process else None
        process.terminate()
        try:
            code = await aio.within(process.wait(), timeout)
        except TimeoutError:
            log.warning("service did not stop in time; killing it", extra={"service": name})
            process.kill()
            code = await process.wait()
        if code != 0:
            log.warning("service did not stop cleanly", extra={"service": name, "exit_code": code})
            self.unclean_stops.append((name, code))
        return code

    async def kill(self, name: str) -> None:
        """kill -9, for crash tests."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def restart(self, name: str, *, timeout: float = 60.0) -> None:
        await self.stop_service(name)
        await self.start_service(name, timeout=timeout)

    async def stop(self) -> None:
        for name in reversed(list(self.plan.ports)):
            if name in self.processes:
                await self.stop_service(name)

    def write_description(self, path: Path) -> None:
        path.write_text(json.dumps(self.plan.describe(), indent=2))
