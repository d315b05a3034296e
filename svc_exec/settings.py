"""svc_exec's settings, read from the environment (the shared ones are in svc_runtime.config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svc_exec.adapters.nats_io import MAX_BATCH
from svc_exec.adapters.venue import DEFAULT_PROFILE, profile_path
from svc_runtime import config

# svc_exec's own settings (the shared ones are in svc_runtime.config).
FIX_CONFIG = "BROKERMESH_EXEC_FIX_CONFIG"
CRASH_AT = "BROKERMESH_EXEC_CRASH_AT"
FAULT_PUBLISH_DELAY_MS = "BROKERMESH_EXEC_FAULT_PUBLISH_DELAY_MS"
COMMAND_BATCH = "BROKERMESH_EXEC_COMMAND_BATCH"
REPORT_BATCH = "BROKERMESH_EXEC_REPORT_BATCH"
FORGOTTEN_AFTER = "BROKERMESH_EXEC_FORGOTTEN_AFTER_SECONDS"


@dataclass(frozen=True)
class ExecSettings:
    common: config.CommonSettings
    fix_host: str
    fix_port: int
    fix_config: Path
    crash_at: frozenset[str]
    fault_publish_delay: float
    command_batch: int
    report_batch: int
    forgotten_after: float

    @classmethod
    def from_env(cls) -> ExecSettings:
        return cls(
            common=config.CommonSettings.from_env(),
            fix_host=config.env(config.FIX_HOST, "127.0.0.1"),
            fix_port=config.env_int(config.FIX_PORT, 9878),
            # An explicit session file wins; otherwise the venue profile (name or path).
            fix_config=Path(config.env(FIX_CONFIG, ""))
            if config.env(FIX_CONFIG, "")
            else profile_path(config.env(config.VENUE_PROFILE, DEFAULT_PROFILE)),
            crash_at=frozenset(p for p in config.env(CRASH_AT, "-").split(",") if p and p != "-"),
            fault_publish_delay=config.env_int(FAULT_PUBLISH_DELAY_MS, 0) / 1000,
            command_batch=config.env_int(COMMAND_BATCH, 256),
            report_batch=max(1, config.env_int(REPORT_BATCH, MAX_BATCH)),
            forgotten_after=config.env_float(FORGOTTEN_AFTER, 5.0),
        )
