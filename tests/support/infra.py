"""The infrastructure the tests run against: real PostgreSQL and NATS servers.

Started by the project itself (the same launchers as `brokermesh up`) unless
BROKERMESH_DATABASE_URL and BROKERMESH_NATS_URL name servers to use. Each test stack gets
its own database and NATS namespace on them, so stacks never see each other's data.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from svc_runtime import config
from svc_runtime.db import create_database
from svc_runtime.stack import Infrastructure


@dataclass
class SharedInfra:
    database_url: str
    nats_url: str
    owned: Infrastructure | None

    def stop(self) -> None:
        if self.owned is not None:
            self.owned.destroy()


def scratch_dir(prefix: str) -> Path:
    """A new throwaway directory the unprivileged PostgreSQL user can traverse.

    pytest's own temporary root is private (0700); when the tests run as root, PostgreSQL
    runs as another user and could not reach a cluster kept there.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


def start_test_infra() -> SharedInfra:
    if os.environ.get(config.DATABASE_URL) and os.environ.get(config.NATS_URL):
        return SharedInfra(os.environ[config.DATABASE_URL], os.environ[config.NATS_URL], None)
    infra = Infrastructure(scratch_dir("brokermesh-test-infra-"))
    # Tests start their own servers even if only one URL is configured.
    infra.database_url = os.environ.get(config.DATABASE_URL, "")
    infra.nats_url = os.environ.get(config.NATS_URL, "")
    infra.start(nats_sync_always=True)
    return SharedInfra(infra.database_url, infra.nats_url, infra)


def unique_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(5)}"


async def fresh_database(infra: SharedInfra) -> str:
    """A new, empty database on the test server; returns its URL."""
    return await create_database(infra.database_url, unique_name("t_"))
