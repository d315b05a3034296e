"""A call that finds PostgreSQL or NATS gone answers UNAVAILABLE with a retry delay (the edge
turns it into 503 with Retry-After), never INTERNAL: the caller should retry, not report a bug."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import nats
import pytest
from prometheus_client import REGISTRY

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from brokermesh.marketdata.v1 import marketdata_pb2_grpc
from svc_runtime.auth import Verifier, ensure_credentials, service_signer
from svc_runtime.db import asyncpg_dsn
from svc_runtime.errors import details_of
from svc_runtime.grpc_client import raw_channel, signing_interceptors
from svc_runtime.grpc_server import GrpcServer, Guard, dependency_outage
from svc_runtime.infra.processes import free_port


def _handled(code: str) -> float:
    """GetInstrument calls counted with `code` by the server's outcome metric."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "grpc_server_handled"
        for sample in metric.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels.get("method") == "GetInstrument"
        and sample.labels.get("code") == code
    )


async def _terminated_connection(database_url: str) -> asyncpg.Connection:
    """A connection whose server-side backend has been ended, as a PostgreSQL restart does."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
    finally:
        await admin.close()
    # The server's goodbye arrives asynchronously; a pool hands out such a connection once it is
    # closed, so the call below finds it closed.
    for _ in range(200):
        if conn.is_closed():
            break
        await asyncio.sleep(0.01)
    return conn


class LostDatabase(marketdata_pb2_grpc.MarketDataServiceServicer):
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def GetInstrument(self, request: pb.GetInstrumentRequest, ctx: Any) -> pb.Instrument:
        if request.name == "instruments/ASYNCPG":
            conn = await _terminated_connection(self.database_url)
            await conn.fetchval("SELECT 1")
        elif request.name == "instruments/NATS":
            await nats.connect(
                f"nats://127.0.0.1:{free_port()}",
                connect_timeout=1,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
            )
        else:
            raise ValueError("a bug, not an outage")
        return pb.Instrument(name=request.name)


@pytest.fixture
async def stub(database_url: str, tmp_path: Path) -> AsyncIterator[marketdata_pb2_grpc.MarketDataServiceStub]:
    credentials = ensure_credentials(tmp_path)
    verifier = Verifier("svc_marketdata", user_secret="", service_key=credentials.service_key, operators={})
    server = GrpcServer("127.0.0.1:0", guard=Guard(verifier))
    server.add(
        marketdata_pb2_grpc.add_MarketDataServiceServicer_to_server,
        LostDatabase(database_url),
        "brokermesh.marketdata.v1.MarketDataService",
    )
    port = await server.start()
    signer = service_signer("gateway", credentials.service_key)
    async with raw_channel(f"127.0.0.1:{port}", interceptors=signing_interceptors(signer)) as channel:
        yield marketdata_pb2_grpc.MarketDataServiceStub(channel)
    await server.stop(0)


@pytest.mark.parametrize("source", ["ASYNCPG", "NATS"])
async def test_a_lost_dependency_is_unavailable_with_a_retry_delay(stub: Any, source: str) -> None:
    counted = _handled("UNAVAILABLE"), _handled("INTERNAL")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetInstrument(pb.GetInstrumentRequest(name=f"instruments/{source}"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value.details()
    details = details_of(raised.value)
    assert details.reason == "DEPENDENCY_UNAVAILABLE"
    assert details.retry_after_seconds == 1.0
    # The outcome metric says what the caller was told.
    assert (_handled("UNAVAILABLE"), _handled("INTERNAL")) == (counted[0] + 1, counted[1])


async def test_a_bug_is_still_internal(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetInstrument(pb.GetInstrumentRequest(name="instruments/OTHER"))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert not dependency_outage(ValueError("a bug"))
    assert not dependency_outage(
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress")
    )
