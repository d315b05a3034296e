"""svc_marketdata's settings, read from the environment (the common ones are in
svc_runtime.config)."""

from __future__ import annotations

from dataclasses import dataclass

from svc_runtime import config

# Service-specific settings (the common ones are in svc_runtime.config).
COALESCE_MS = "BROKERMESH_MARKETDATA_COALESCE_MS"
STREAM_STALL_SECONDS = "BROKERMESH_MARKETDATA_STREAM_STALL_SECONDS"
MAX_STREAMS = "BROKERMESH_MARKETDATA_MAX_STREAMS"
SNAPSHOT_SECONDS = "BROKERMESH_MARKETDATA_SNAPSHOT_SECONDS"
INSTRUMENT_WAIT_SECONDS = "BROKERMESH_MARKETDATA_INSTRUMENT_WAIT_SECONDS"
FIX_MESSAGE_LOG = "BROKERMESH_MARKETDATA_FIX_MESSAGE_LOG"
# "fix" (the exchange's market-data session) or "none": a venue without one. Then no
# quote has a price until a feed exists; the instrument master comes from INSTRUMENTS_FILE.
FEED = "BROKERMESH_MARKETDATA_FEED"
INSTRUMENTS_FILE = "BROKERMESH_MARKETDATA_INSTRUMENTS"
STALE_AFTER_MS = "BROKERMESH_MARKETDATA_STALE_AFTER_MS"
STREAM_HEARTBEAT_SECONDS = "BROKERMESH_MARKETDATA_STREAM_HEARTBEAT_SECONDS"


@dataclass(frozen=True)
class Settings:
    common: config.CommonSettings
    fix_host: str
    fix_port: int
    # Ticks gather this long before a flush publishes them together.
    coalesce_ms: float
    # A stream whose client takes no data for this long is dropped.
    stream_stall_seconds: float
    max_streams: int
    snapshot_seconds: float
    # Wait this long for the exchange's SecurityList before subscribing to the stored master.
    instrument_wait_seconds: float
    fix_message_log: bool
    feed: str
    instruments_file: str
    # The feed is stale after this long without a word from the exchange (probed at a third).
    stale_after_ms: float
    stream_heartbeat_seconds: float

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            common=config.CommonSettings.from_env(),
            fix_host=config.env(config.FIX_HOST, "127.0.0.1"),
            fix_port=config.env_int(config.FIX_PORT, 9878),
            coalesce_ms=config.env_float(COALESCE_MS, 5.0),
            stream_stall_seconds=config.env_float(STREAM_STALL_SECONDS, 10.0),
            max_streams=config.env_int(MAX_STREAMS, 2000),
            snapshot_seconds=config.env_float(SNAPSHOT_SECONDS, 1.0),
            instrument_wait_seconds=config.env_float(INSTRUMENT_WAIT_SECONDS, 5.0),
            fix_message_log=config.env_bool(FIX_MESSAGE_LOG, False),
            feed=config.env(FEED, "fix"),
            instruments_file=config.env(INSTRUMENTS_FILE, ""),
            stale_after_ms=config.env_float(STALE_AFTER_MS, 1200.0),
            stream_heartbeat_seconds=config.env_float(STREAM_HEARTBEAT_SECONDS, 5.0),
        )
