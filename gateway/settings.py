"""The gateway's settings, from environment variables.

Shared names come from `svc_runtime.config`; the tuning knobs below are the gateway's own
(all optional, with the defaults shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from gateway.domain.cors import parse_origins
from gateway.domain.tickets import DEFAULT_TICKET_SECONDS
from svc_runtime import config

JWT_TTL_SECONDS = "BROKERMESH_JWT_TTL_SECONDS"
SESSION_SECONDS = "BROKERMESH_SESSION_SECONDS"
MAX_BODY_BYTES = "BROKERMESH_GATEWAY_MAX_BODY_BYTES"
RATE_PER_SECOND = "BROKERMESH_GATEWAY_RATE_PER_SECOND"
RATE_BURST = "BROKERMESH_GATEWAY_RATE_BURST"
LOGIN_FREE_FAILURES = "BROKERMESH_GATEWAY_LOGIN_FREE_FAILURES"
LOGIN_ADDRESS_FAILURES = "BROKERMESH_GATEWAY_LOGIN_ADDRESS_FAILURES"
LOGIN_USER_FAILURES = "BROKERMESH_GATEWAY_LOGIN_USER_FAILURES"
AUTH_FAILURES_PER_SECOND = "BROKERMESH_GATEWAY_AUTH_FAILURES_PER_SECOND"
AUTH_FAILURE_BURST = "BROKERMESH_GATEWAY_AUTH_FAILURE_BURST"
BACKEND_TIMEOUT = "BROKERMESH_GATEWAY_BACKEND_TIMEOUT_SECONDS"
STREAMS_PER_USER = "BROKERMESH_GATEWAY_STREAMS_PER_USER"
SYMBOLS_PER_STREAM = "BROKERMESH_GATEWAY_SYMBOLS_PER_STREAM"
PUSHES_PER_SECOND = "BROKERMESH_GATEWAY_PUSHES_PER_SECOND"
PUSH_GATHER_MS = "BROKERMESH_GATEWAY_PUSH_GATHER_MS"
HEARTBEAT_SECONDS = "BROKERMESH_GATEWAY_HEARTBEAT_SECONDS"
WRITE_TIMEOUT_SECONDS = "BROKERMESH_GATEWAY_WRITE_TIMEOUT_SECONDS"
RETRY_MS = "BROKERMESH_GATEWAY_SSE_RETRY_MS"
CORS_ORIGINS = "BROKERMESH_CORS_ORIGINS"
STREAM_TICKET_SECONDS = "BROKERMESH_GATEWAY_STREAM_TICKET_SECONDS"
METRICS_HOST = "BROKERMESH_GATEWAY_METRICS_HOST"
# Order placements in progress per gateway process, how many more may wait for a slot, and
# for how long (see app/admission.py); past that a placement is refused with 429.
PLACEMENTS_IN_FLIGHT = "BROKERMESH_GATEWAY_PLACEMENTS_IN_FLIGHT"
PLACEMENT_QUEUE = "BROKERMESH_GATEWAY_PLACEMENT_QUEUE"
PLACEMENT_QUEUE_SECONDS = "BROKERMESH_GATEWAY_PLACEMENT_QUEUE_SECONDS"
# Processes serving the public port (the stack sizes it to the machine's cores).
WORKERS = "BROKERMESH_GATEWAY_WORKERS"


@dataclass(frozen=True)
class StreamSettings:
    streams_per_user: int = 5
    symbols_per_stream: int = 100
    pushes_per_second: float = 4.0
    # How long a stream with nothing pending waits after its first change before it pushes,
    # so that the rest of the same exchange update (which can arrive over several tick
    # messages a few ms apart) goes out in that push instead of a paced interval later.
    push_gather_ms: float = 10.0
    heartbeat_seconds: float = 15.0
    # A write that cannot complete this long means the client is not reading: drop it.
    write_timeout_seconds: float = 10.0
    retry_ms: int = 3000
    # How long a stream waits for its source to fail fast before committing to 200.
    start_wait_seconds: float = 0.5


@dataclass(frozen=True)
class PlacementAdmission:
    in_flight: int = 32
    queue: int = 32
    queue_seconds: float = 0.25

    @classmethod
    def from_env(cls) -> PlacementAdmission:
        return cls(
            in_flight=config.env_int(PLACEMENTS_IN_FLIGHT, 32),
            queue=config.env_int(PLACEMENT_QUEUE, 32),
            queue_seconds=config.env_float(PLACEMENT_QUEUE_SECONDS, 0.25),
        )


@dataclass(frozen=True)
class OrderLimits:
    """svc_orders' order rate and per-order limits. svc_orders enforces them; the gateway
    reads the same variables (same defaults) only to publish them in GET /v1/limits."""

    orders_per_second: Decimal = Decimal(10)
    order_burst: int = 20
    max_quantity: int = 100_000
    max_value: Decimal = Decimal("10000000.00")
    price_collar: Decimal = Decimal("0.10")

    @classmethod
    def from_env(cls) -> OrderLimits:
        return cls(
            orders_per_second=Decimal(config.env("BROKERMESH_ORDERS_RATE_PER_SECOND", "10")),
            order_burst=config.env_int("BROKERMESH_ORDERS_RATE_BURST", 20),
            max_quantity=config.env_int("BROKERMESH_ORDERS_MAX_QUANTITY", 100_000),
            max_value=Decimal(config.env("BROKERMESH_ORDERS_MAX_VALUE", "10000000.00")),
            price_collar=Decimal(config.env("BROKERMESH_ORDERS_PRICE_COLLAR", "0.10")),
        )


@dataclass(frozen=True)
class AbuseSettings:
    # Failed logins: per (username, address) before lock-outs begin; per address and per
    # username (for pairs without a recent success) likewise. See domain/limits.LoginGuard.
    login_free_failures: int = 5
    login_address_failures: int = 30
    login_user_failures: int = 50
    # Requests that fail authentication (bad, expired or missing tokens), per address.
    auth_failures_per_second: float = 1.0
    auth_failure_burst: int = 20


@dataclass(frozen=True)
class GatewaySettings:
    http_host: str
    http_port: int
    metrics_port: int
    nats_url: str
    namespace: str
    orders_target: str
    funds_target: str
    marketdata_target: str
    jwt_secret: str
    jwt_ttl_seconds: int
    max_body_bytes: int
    rate_per_second: float
    rate_burst: int
    backend_timeout: float
    streams: StreamSettings
    abuse: AbuseSettings = field(default_factory=AbuseSettings)
    orders: OrderLimits = field(default_factory=OrderLimits)
    placements: PlacementAdmission = field(default_factory=PlacementAdmission)
    # Web origins allowed to call the API from a browser (none: no page on another origin may).
    cors_origins: tuple[str, ...] = ()
    stream_ticket_seconds: int = DEFAULT_TICKET_SECONDS
    # The internal listener (metrics, health details): loopback unless an operator opens it.
    metrics_host: str = "127.0.0.1"
    # How long a login lasts, refreshes included (then the user logs in again).
    session_seconds: int = 12 * 3600
    workers: int = 1
    # The public port is shared with the stack's other gateway processes (see svc_runtime.config).
    shared_port: bool = False

    @classmethod
    def from_env(cls) -> GatewaySettings:
        listen = config.env(config.HTTP_LISTEN, "127.0.0.1:8080")
        host, _, port = listen.rpartition(":")
        return cls(
            http_host=host or "127.0.0.1",
            http_port=int(port),
            metrics_port=config.env_int(config.METRICS_PORT, 0),
            nats_url=config.env(config.NATS_URL, "nats://127.0.0.1:4222"),
            namespace=config.env(config.NAMESPACE, config.DEFAULT_NAMESPACE),
            orders_target=config.env(config.ORDERS_TARGET, "127.0.0.1:50051"),
            funds_target=config.env(config.FUNDS_TARGET, "127.0.0.1:50052"),
            marketdata_target=config.env(config.MARKETDATA_TARGET, "127.0.0.1:50053"),
            jwt_secret=config.env(config.JWT_SECRET),
            jwt_ttl_seconds=config.env_int(JWT_TTL_SECONDS, 900),
            max_body_bytes=config.env_int(MAX_BODY_BYTES, 16 * 1024),
            rate_per_second=config.env_float(RATE_PER_SECOND, 20.0),
            rate_burst=config.env_int(RATE_BURST, 40),
            backend_timeout=config.env_float(BACKEND_TIMEOUT, 5.0),
            streams=StreamSettings(
                streams_per_user=config.env_int(STREAMS_PER_USER, 5),
                symbols_per_stream=config.env_int(SYMBOLS_PER_STREAM, 100),
                pushes_per_second=config.env_float(PUSHES_PER_SECOND, 4.0),
                push_gather_ms=max(0.0, config.env_float(PUSH_GATHER_MS, 10.0)),
                heartbeat_seconds=config.env_float(HEARTBEAT_SECONDS, 15.0),
                write_timeout_seconds=config.env_float(WRITE_TIMEOUT_SECONDS, 10.0),
                retry_ms=config.env_int(RETRY_MS, 3000),
            ),
            abuse=AbuseSettings(
                login_free_failures=config.env_int(LOGIN_FREE_FAILURES, 5),
                login_address_failures=config.env_int(LOGIN_ADDRESS_FAILURES, 30),
                login_user_failures=config.env_int(LOGIN_USER_FAILURES, 50),
                auth_failures_per_second=config.env_float(AUTH_FAILURES_PER_SECOND, 1.0),
                auth_failure_burst=config.env_int(AUTH_FAILURE_BURST, 20),
            ),
            orders=OrderLimits.from_env(),
            placements=PlacementAdmission.from_env(),
            cors_origins=parse_origins(config.env(CORS_ORIGINS, "")),
            stream_ticket_seconds=config.env_int(STREAM_TICKET_SECONDS, DEFAULT_TICKET_SECONDS),
            metrics_host=config.env(METRICS_HOST, "127.0.0.1"),
            session_seconds=config.env_int(SESSION_SECONDS, 12 * 3600),
            workers=max(1, config.env_int(WORKERS, 1)),
            shared_port=config.env_bool(config.GATEWAY_SHARED_PORT, False),
        )
