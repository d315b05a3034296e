"""Fixtures of the gateway's end-to-end tests.

`edge`: the gateway as its own process on real NATS, with tight limits so the tests can
reach them.

`local_edge`: the same HTTP application served in the test process (no services behind it:
every backend call is 503), for many quick requests of hostile shapes.

Contract = behaviour: every response of the gateway that a test in this directory receives
through httpx is recorded (`status_recorder`), and a test that received a status its
operation does not declare in openapi.yaml fails, as does a problem whose reason the error
catalogue (svc_runtime/reasons.py) lacks or lists with another status. The statuses seen per operation are
printed at the end of the session. Its price tracker is `PriceTracker`, a small real gRPC server in the test
process that answers BatchGetQuotes from a table; ticks are real `TickBatch` messages the
tests publish on the real NATS tick subjects, exactly as svc_marketdata does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import nats
import pytest
import schemathesis
from starlette.types import ASGIApp

from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc, tick_pb2
from brokermesh.type.v1 import decimal_pb2
from gateway.adapters.backends import Backends
from gateway.app.limits import EdgeLimits
from gateway.app.quotes import QuoteHub
from gateway.app.sessions import Sessions
from gateway.app.tickets import StreamTickets
from gateway.domain.limits import LoginGuard, RateLimiter, StreamSlots
from gateway.domain.tickets import ticket_authority, ticket_key
from gateway.settings import OrderLimits, StreamSettings
from gateway.transport.app import build_app
from gateway.transport.handlers import Handlers
from gateway.transport.streams import StreamRegistry
from svc_runtime import tls
from svc_runtime.messaging import Topology
from svc_runtime.reasons import CATALOGUE
from svc_runtime.stack import Stack, StackPlan
from svc_runtime.tokens import (
    ACCESS_AUDIENCE,
    ALGORITHM,
    ISSUER,
    KID_PREFIX,
    REFRESH_AUDIENCE,
    KeySet,
    RevokedSessions,
    UserTokens,
)
from tests.conftest import new_stack
from tests.gateway.contract import declared_statuses, operation_of, operations_at
from tests.gateway.fakes import FakeAccounts, MemorySessions, MemorySpentTickets
from tests.support.infra import SharedInfra, unique_name
from tests.support.polling import eventually

SYMBOLS = ["INFY", "TCS", "RELIANCE", "HDFCBANK", *(f"SYM{n:03d}" for n in range(200))]
EDGE_LIMITS = {
    "BROKERMESH_GATEWAY_RATE_PER_SECOND": "5",
    "BROKERMESH_GATEWAY_RATE_BURST": "10",
    "BROKERMESH_GATEWAY_STREAMS_PER_USER": "2",
    "BROKERMESH_GATEWAY_SYMBOLS_PER_STREAM": "200",
    "BROKERMESH_GATEWAY_PUSHES_PER_SECOND": "50",
    "BROKERMESH_GATEWAY_HEARTBEAT_SECONDS": "1",
    "BROKERMESH_GATEWAY_WRITE_TIMEOUT_SECONDS": "1",
}


def make_quote(symbol: str, price: str, sequence: int) -> marketdata_pb2.Quote:
    previous = Decimal("1000.00")
    change = Decimal(price) - previous
    quote = marketdata_pb2.Quote(
        symbol=symbol,
        last_price=decimal_pb2.Decimal(value=price),
        change=decimal_pb2.Decimal(value=str(change)),
        change_percent=decimal_pb2.Decimal(value=str((change / previous * 100).quantize(Decimal("0.01")))),
        previous_close=decimal_pb2.Decimal(value=str(previous)),
        sequence=sequence,
    )
    quote.exchange_time.FromNanoseconds(time.time_ns())
    return quote


def make_token(
    stack: Stack, user_id: str | None = None, *, ttl: int = 900, kid: str | None = None, **overrides: Any
) -> str:
    """A token as the gateway issues it, signed with the stack's current key (a fresh user
    and session if none), with any claim changed (None: left out)."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": ACCESS_AUDIENCE,
        "sub": user_id or unique_name("u_"),
        "sid": secrets.token_hex(16),
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": secrets.token_hex(6),
        **overrides,
    }
    current, secret = stack.plan.signing_keys().current().signing()
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None},
        secret,
        algorithm=ALGORITHM,
        headers={"kid": kid or KID_PREFIX + current},
    )


def bearer(stack: Stack, user_id: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(stack, user_id)}"}


class PriceTracker(marketdata_pb2_grpc.MarketDataServiceServicer):
    def __init__(self) -> None:
        self.quotes = {s: make_quote(s, "1000.00", 1) for s in SYMBOLS}

    async def BatchGetQuotes(
        self, request: marketdata_pb2.BatchGetQuotesRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.BatchGetQuotesResponse:
        return marketdata_pb2.BatchGetQuotesResponse(
            quotes=[self.quotes[s] for s in request.symbols if s in self.quotes],
            unknown_symbols=[s for s in request.symbols if s not in self.quotes],
        )


@dataclass
class Edge:
    stack: Stack
    tracker: PriceTracker
    nc: Any
    topology: Topology

    @property
    def url(self) -> str:
        return self.stack.plan.gateway_url

    @property
    def internal_url(self) -> str:
        """The internal listener: metrics and health details."""
        return f"http://127.0.0.1:{self.stack.plan.ports['gateway']['metrics']}"

    def token(self, user_id: str | None = None, *, ttl: int = 900, **overrides: Any) -> str:
        return make_token(self.stack, user_id, ttl=ttl, **overrides)

    def auth(self, user_id: str | None = None) -> dict[str, str]:
        return bearer(self.stack, user_id)

    async def publish(self, quotes: list[marketdata_pb2.Quote]) -> None:
        """Publish ticks as svc_marketdata does: one TickBatch per shard subject."""
        by_subject: dict[str, list[marketdata_pb2.Quote]] = {}
        for quote in quotes:
            self.tracker.quotes[quote.symbol] = quote
            by_subject.setdefault(self.topology.tick_subject_for(quote.symbol), []).append(quote)
        for subject, batch in by_subject.items():
            await self.nc.publish(subject, tick_pb2.TickBatch(quotes=batch).SerializeToString())
        await self.nc.flush()

    async def publish_status(self, state: int, *, last_sequence: int = 0, stale_since_ns: int = 0) -> None:
        """The price tracker's status heartbeat, as svc_marketdata sends it."""
        status = marketdata_pb2.FeedStatus(state=state, last_sequence=last_sequence)  # type: ignore[arg-type]
        status.server_time.FromNanoseconds(time.time_ns())
        if stale_since_ns:
            status.stale_since.FromNanoseconds(stale_since_ns)
        batch = tick_pb2.TickBatch(feed_status=status)
        await self.nc.publish(self.topology.feed_status_subject, batch.SerializeToString())
        await self.nc.flush()

    async def metric(self, client: httpx.AsyncClient, line_prefix: str) -> float:
        text = (await client.get(f"{self.internal_url}/metrics")).text
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_prefix)
        )


@dataclass
class Twin:
    url: str
    # The internal listener: metrics and health details.
    internal_url: str


@contextlib.asynccontextmanager
async def twin_gateway(edge: Edge, work_dir: Path) -> AsyncIterator[Twin]:
    """A second gateway process beside the edge's (same secret, NATS and namespace), as when
    the gateway runs several workers or replicas."""
    plan = edge.stack.plan
    twin_plan = StackPlan.allocate(
        work_dir, plan.database_url, plan.nats_url, namespace=plan.namespace, jwt_secret=plan.jwt_secret
    )
    twin_plan.extra_env.update(plan.extra_env)
    twin = Stack(twin_plan)
    await twin.start(["gateway"])
    try:
        yield Twin(twin_plan.gateway_url, f"http://127.0.0.1:{twin_plan.ports['gateway']['metrics']}")
    finally:
        await twin.stop()


async def start_edge(
    infra: SharedInfra, work_dir: Path, **env_overrides: str
) -> tuple[Edge, Callable[[], Awaitable[None]]]:
    """A gateway process with its price tracker; returns it and how to tear it down."""
    tracker = PriceTracker()
    server = grpc.aio.server()
    marketdata_pb2_grpc.add_MarketDataServiceServicer_to_server(tracker, server)
    port = tls.add_port(server, "127.0.0.1:0")
    await server.start()
    env = {**EDGE_LIMITS, "BROKERMESH_MARKETDATA_TARGET": f"127.0.0.1:{port}", **env_overrides}
    stack = await new_stack(infra, work_dir, ["gateway"], env)
    nc = await nats.connect(infra.nats_url)
    edge = Edge(stack, tracker, nc, Topology(stack.plan.namespace))
    # The tick feed subscribes in the background; wait until it is up.
    async with httpx.AsyncClient(base_url=edge.internal_url) as client:
        await eventually(lambda: _feed_ready(client))

    async def teardown() -> None:
        await nc.close()
        with contextlib.suppress(Exception):
            await stack.stop()
        await server.stop(0)

    return edge, teardown


@pytest.fixture(scope="module")
async def edge(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    started, teardown = await start_edge(infra, tmp_path_factory.mktemp("edge"))
    yield started
    await teardown()


async def _feed_ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/healthz")).json()["tickFeed"] == "subscribed"


MAX_BODY_BYTES = 16 * 1024


@dataclass(frozen=True)
class Observation:
    method: str
    path: str
    status: int
    operation: str
    undeclared: bool


class StatusRecorder:
    def __init__(self) -> None:
        self.seen: list[Observation] = []
        # Problems whose reason the error catalogue lacks, or lists with another status.
        self.uncatalogued: list[str] = []

    def record(self, method: str, path: str, response: httpx.Response | schemathesis.Response) -> None:
        # Only the gateway's API: it stamps every response with X-Request-Id.
        if "x-request-id" not in response.headers or not path.startswith("/v1/"):
            return
        status = response.status_code
        self._check_reason(method, path, response)
        operation = operation_of(method, path)
        if operation is not None:
            self.seen.append(
                Observation(method, path, status, operation.operation_id, status not in operation.statuses)
            )
            return
        at_path = operations_at(path)
        if at_path:  # the path exists, not with this method: 405, declared by its operations
            undeclared = status != 405 or any(405 not in o.statuses for o in at_path)
            self.seen.append(Observation(method, path, status, at_path[0].operation_id, undeclared))

    def _check_reason(self, method: str, path: str, response: httpx.Response | schemathesis.Response) -> None:
        if not isinstance(response, httpx.Response):
            return
        if not response.headers.get("content-type", "").startswith("application/problem+json"):
            return
        try:
            reason = response.json().get("reason")
        except httpx.ResponseNotRead:  # a stream the test has not read: nothing to check yet
            return
        entry = CATALOGUE.get(reason)
        if entry is None or entry.http != response.status_code:
            self.uncatalogued.append(f"{method} {path} → {response.status_code} {reason}")

    def by_operation(self) -> dict[str, set[int]]:
        table: dict[str, set[int]] = {}
        for seen in self.seen:
            table.setdefault(seen.operation, set()).add(seen.status)
        return table


@pytest.fixture(scope="session")
def status_recorder(pytestconfig: pytest.Config) -> Iterator[StatusRecorder]:
    recorder = StatusRecorder()
    send = httpx.AsyncClient.send

    async def recording_send(
        client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        response = await send(client, request, **kwargs)
        # A CORS preflight is the browser's protocol with the CORS layer, not an operation of
        # the API (its answers are described in gateway/README.md).
        if not (request.method == "OPTIONS" and "access-control-request-method" in request.headers):
            recorder.record(request.method, request.url.path, response)
        return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx.AsyncClient, "send", recording_send)
        yield recorder
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and recorder.seen:
        reporter.write_line("gateway statuses observed per operation:")
        for operation, statuses in sorted(recorder.by_operation().items()):
            declared = declared_statuses(operation)
            marks = " ".join(f"{s}{'' if s in declared else '(UNDECLARED)'}" for s in sorted(statuses))
            reporter.write_line(f"  {operation}: {marks}")


@pytest.fixture(autouse=True)
def statuses_are_declared(status_recorder: StatusRecorder) -> Iterator[None]:
    start, reasons_start = len(status_recorder.seen), len(status_recorder.uncatalogued)
    yield
    uncatalogued = status_recorder.uncatalogued[reasons_start:]
    if uncatalogued:
        pytest.fail(
            "problem reasons not in svc_runtime/reasons.py with this status: " + ", ".join(uncatalogued[:10])
        )
    undeclared = [seen for seen in status_recorder.seen[start:] if seen.undeclared]
    if undeclared:
        pytest.fail(
            "statuses not declared in openapi.yaml: "
            + ", ".join(f"{s.method} {s.path} → {s.status} ({s.operation})" for s in undeclared[:10])
        )


@dataclass
class LocalEdge:
    client: httpx.AsyncClient
    tokens: UserTokens
    revoked: RevokedSessions
    registry: StreamRegistry
    keys: KeySet
    ticket_key: bytes
    app: ASGIApp

    def auth(self, user_id: str | None = None, session: str = "") -> dict[str, str]:
        issued = self.tokens.issue(user_id or unique_name("u_"), session or secrets.token_hex(16))
        return {"Authorization": f"Bearer {issued.token}"}


def quick_limits(**overrides: Any) -> EdgeLimits:
    """Limits of an edge served in the test process: rates high enough never to be reached
    (its tests are about shapes, not rates), unless overridden."""
    fields: dict[str, Any] = {
        "requests": RateLimiter(1_000_000, 1_000_000),
        "auth_failures": RateLimiter(1_000_000, 1_000_000),
        "logins": LoginGuard(),
        "slots": StreamSlots(5),
        "streams": StreamSettings(),
        "orders": OrderLimits(),
        "max_body_bytes": MAX_BODY_BYTES,
        **overrides,
    }
    return EdgeLimits(**fields)


@contextlib.asynccontextmanager
async def serve_local(
    backends: Backends, limits: EdgeLimits, *, hub: QuoteHub | None = None
) -> AsyncIterator[LocalEdge]:
    """The gateway's HTTP application in the test process, in front of `backends` (and of
    `hub` for live prices, if given)."""
    tokens_secret = secrets.token_hex(32)
    keys = KeySet.single(tokens_secret)
    revoked = RevokedSessions(ready=True)
    tokens = UserTokens(keys, ttl_seconds=900, revoked=revoked)
    refresh = UserTokens(keys, audience=REFRESH_AUDIENCE, ttl_seconds=3600, revoked=revoked)
    registry = StreamRegistry(revoked)
    # Two known users; svc_funds itself is not behind this edge.
    accounts = FakeAccounts({("asha", "asha-pass"): "u_asha", ("ravi", "ravi-pass"): "u_ravi"})
    sessions = Sessions(
        accounts,
        tokens,
        refresh,
        MemorySessions(revoked),
        guard=limits.logins,
        clock=time.time,
        session_seconds=3600,
    )
    handlers = Handlers(
        backends=backends,
        sessions=sessions,
        hub=hub or QuoteHub(backends),
        registry=registry,
        limits=limits,
        clock=time.monotonic,
    )
    tickets = StreamTickets(
        ticket_authority(tokens_secret, ttl_seconds=30, clock=time.time, revoked=revoked),
        MemorySpentTickets(),
    )
    app = build_app(
        handlers=handlers,
        tokens=tokens,
        limits=limits,
        clock=time.monotonic,
        health=lambda: (True, {}),
        tickets=tickets,
    )
    transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
        yield LocalEdge(client, tokens, revoked, registry, keys, ticket_key(tokens_secret), app)


@pytest.fixture(scope="module")
async def local_edge() -> AsyncIterator[LocalEdge]:
    # Port 9 (discard) on loopback refuses at once: backend calls fail fast as UNAVAILABLE.
    nowhere = "127.0.0.1:9"
    backends = Backends(orders_target=nowhere, funds_target=nowhere, marketdata_target=nowhere, timeout=2.0)
    async with serve_local(backends, quick_limits()) as served:
        yield served
    await backends.close()


@dataclass
class Event:
    event: str
    data: str
    id: str
    comments: list[str]

    def json(self) -> Any:
        return json.loads(self.data, parse_float=Decimal)


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """Parse an SSE stream (retry lines are reported as events named `retry`)."""
    fields: dict[str, list[str]] = {}
    comments: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield Event(
                    fields.get("event", ["message"])[0],
                    "\n".join(fields.get("data", [])),
                    fields.get("id", [""])[0],
                    comments,
                )
            elif comments:
                yield Event("comment", "", "", comments)
            fields, comments = {}, []
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        if name == "retry":
            fields["event"] = ["retry"]
        fields.setdefault(name, []).append(value.removeprefix(" "))


# Events that say the stream and feed are alive rather than what changed.
LIVENESS_EVENTS = frozenset({"comment", "heartbeat", "feed_status"})


async def next_event(
    stream: AsyncIterator[Event], *, timeout: float = 10.0, skip_liveness: bool = True
) -> Event:
    """The next event; comments, heartbeats and feed status are passed over unless
    `skip_liveness` is False."""
    async with asyncio.timeout(timeout):
        while True:
            event = await anext(stream)
            if skip_liveness and event.event in LIVENESS_EVENTS:
                continue
            return event
