"""Configuration from environment variables (12-factor), shared by every process.

The stack supervisor sets these for the processes it starts; an operator running a
service alone sets them by hand. Names are documented in the README.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAMESPACE = "bm"


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise RuntimeError(f"environment variable {name} is required")
        return default
    return value


def env_int(name: str, default: int) -> int:
    return int(env(name, str(default)))


def env_float(name: str, default: float) -> float:
    return float(env(name, str(default)))


def env_bool(name: str, default: bool) -> bool:
    return env(name, "1" if default else "0").lower() in {"1", "true", "yes", "on"}


# Environment variable names, in one place so the supervisor and services agree.
DATABASE_URL = "BROKERMESH_DATABASE_URL"
# A streaming replica of it, for the pages users read at leisure (svc_runtime.replica).
DATABASE_REPLICA_URL = "BROKERMESH_DATABASE_REPLICA_URL"
NATS_URL = "BROKERMESH_NATS_URL"
NAMESPACE = "BROKERMESH_NAMESPACE"
DATA_DIR = "BROKERMESH_DATA_DIR"
GRPC_LISTEN = "BROKERMESH_GRPC_LISTEN"
GRPC_REUSEPORT = "BROKERMESH_GRPC_REUSEPORT"
HTTP_LISTEN = "BROKERMESH_HTTP_LISTEN"
METRICS_PORT = "BROKERMESH_METRICS_PORT"
ORDERS_TARGET = "BROKERMESH_ORDERS_TARGET"
FUNDS_TARGET = "BROKERMESH_FUNDS_TARGET"
MARKETDATA_TARGET = "BROKERMESH_MARKETDATA_TARGET"
EXEC_TARGET = "BROKERMESH_EXEC_TARGET"
EXCHANGE_ADMIN_TARGET = "BROKERMESH_EXCHANGE_ADMIN_TARGET"
FIX_HOST = "BROKERMESH_FIX_HOST"
FIX_PORT = "BROKERMESH_FIX_PORT"
# svc_exec's venue profile: a name (fix44, fix42, fix44-tolerant) or a session file's path.
VENUE_PROFILE = "BROKERMESH_VENUE_PROFILE"
JWT_SECRET = "BROKERMESH_JWT_SECRET"
# How many JetStream servers keep a copy of every stream and KV bucket: the cluster's size
# (1 for a single server; 3 for `up --cluster`). A cluster tolerates losing a minority.
NATS_REPLICAS = "BROKERMESH_NATS_REPLICAS"
# Set for every gateway process when the stack runs several: each binds the one public port
# with SO_REUSEPORT and shares it with the others instead of refusing it as taken.
GATEWAY_SHARED_PORT = "BROKERMESH_GATEWAY_SHARED_PORT"


@dataclass(frozen=True)
class CommonSettings:
    """What every service process needs."""

    database_url: str
    nats_url: str
    namespace: str
    data_dir: Path
    grpc_listen: str
    metrics_port: int

    @classmethod
    def from_env(cls, default_grpc_listen: str = "127.0.0.1:0") -> CommonSettings:
        return cls(
            database_url=env(DATABASE_URL, ""),
            nats_url=env(NATS_URL, "nats://127.0.0.1:4222"),
            namespace=env(NAMESPACE, DEFAULT_NAMESPACE),
            data_dir=Path(env(DATA_DIR, ".brokermesh")).resolve(),
            grpc_listen=env(GRPC_LISTEN, default_grpc_listen),
            metrics_port=env_int(METRICS_PORT, 0),
        )
