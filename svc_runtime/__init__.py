"""The runtime shared by every brokermesh process.

It holds what is the same in every service and must not be written twice. It holds no domain
logic: services never import each other, only this package and the generated stubs in gen/.

Two surfaces, kept apart (tests/foundation/test_layering.py holds services to the first):

**For services** (`__all__`):

| module | what it gives a service |
|---|---|
| `service` | the process: logs, metrics, signals, supervised background tasks, crash-only exit |
| `host` | a service's shape: resources on one exit stack, background tasks and periodic loops, the drain on SIGTERM |
| `lease` | one holder at a time among replicas (a PostgreSQL advisory lock), checked before acting |
| `aio` | waits with a deadline that never swallow a cancellation (instead of `asyncio.wait_for`) |
| `config` | typed settings from the environment |
| `context`, `logs`, `tracing` | the request context (request id, caller) through every hop; JSON logs; spans |
| `grpc_server`, `grpc_client`, `auth`, `access`, `tls`, `tokens`, `revocations` | gRPC in and out: TLS, who is calling, who may call what |
| `errors`, `reasons` | errors across service boundaries and the one catalogue of their reasons |
| `names`, `tags`, `pagination`, `ids` | AIP resource names, ids and request ids; clients' order tags; page sizes and tokens; new ids |
| `decimals` | exact money, prices and quantities, and their wire form |
| `market_clock` | the market's calendar, phases and clock (real, or fast for tests and demos); T+1 |
| `db`, `outbox`, `replica` | PostgreSQL: a schema per service, migrations, pools; the transactional outbox; reads from a streaming replica with read-your-writes |
| `messaging`, `reports`, `batching` | NATS JetStream topology, publishers and consumers; execution reports read once; call coalescing |
| `pacing` | how often a price stream may be pushed (a token bucket) |
| `fix` | quickfix plumbing for the processes that speak FIX |

**Operator tooling** (not for services): `cli` (the `brokermesh` command), `stack` and
`infra` (start the stack and its PostgreSQL and NATS), `readiness`, `deploy` (images and
secrets for a deployment), `probe` (health checks for container orchestrators), `admin`, `audit`, `codegen`.
"""

__all__ = [
    "access",
    "aio",
    "auth",
    "batching",
    "config",
    "context",
    "db",
    "decimals",
    "errors",
    "fix",
    "grpc_client",
    "grpc_server",
    "host",
    "ids",
    "lease",
    "logs",
    "market_clock",
    "messaging",
    "names",
    "outbox",
    "pacing",
    "pagination",
    "reasons",
    "replica",
    "reports",
    "revocations",
    "service",
    "tags",
    "tls",
    "tokens",
    "tracing",
]
