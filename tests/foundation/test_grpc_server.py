"""What every service's gRPC server adds to its methods: the caller's request id, errors with
details, nothing internal leaked, metrics; health and reflection beside them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from brokermesh.marketdata.v1 import marketdata_pb2_grpc
from svc_runtime import context
from svc_runtime.auth import Verifier, ensure_credentials, service_signer
from svc_runtime.errors import NotFound, details_of
from svc_runtime.grpc_client import raw_channel, signing_interceptors
from svc_runtime.grpc_server import GrpcServer, Guard


class Quotes(marketdata_pb2_grpc.MarketDataServiceServicer):
    async def GetInstrument(self, request: pb.GetInstrumentRequest, ctx: Any) -> pb.Instrument:
        if request.name == "instruments/SECRET":
            raise RuntimeError("database password is hunter2")
        if request.name == "instruments/NONE":
            raise NotFound("no such instrument", reason="INSTRUMENT_NOT_FOUND")
        # Answers with the request id it sees, so the test can tell it arrived.
        return pb.Instrument(name=request.name, company_name=context.request_id())

    async def StreamQuotes(self, request: pb.StreamQuotesRequest, ctx: Any) -> AsyncIterator[Any]:
        yield pb.StreamQuotesResponse(quotes=[pb.Quote(symbol=context.request_id())])
        raise NotFound("stream source gone", reason="GONE")


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    credentials = ensure_credentials(tmp_path)
    verifier = Verifier("svc_marketdata", user_secret="", service_key=credentials.service_key, operators={})
    server = GrpcServer("127.0.0.1:0", guard=Guard(verifier))
    server.add(
        marketdata_pb2_grpc.add_MarketDataServiceServicer_to_server,
        Quotes(),
        "brokermesh.marketdata.v1.MarketDataService",
    )
    port = await server.start()
    signer = service_signer("gateway", credentials.service_key)
    async with raw_channel(f"127.0.0.1:{port}", interceptors=signing_interceptors(signer)) as opened:
        yield opened
    await server.stop(0)


@pytest.fixture
def quotes(channel: grpc.aio.Channel) -> marketdata_pb2_grpc.MarketDataServiceStub:
    return marketdata_pb2_grpc.MarketDataServiceStub(channel)


def _handled(method: str, code: str) -> float:
    labels = {"service": "MarketDataService", "method": method, "code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


async def test_the_callers_request_id_reaches_the_method(quotes: Any) -> None:
    before = _handled("GetInstrument", "OK")
    reply = await quotes.GetInstrument(
        pb.GetInstrumentRequest(name="instruments/INFY"), metadata=(("x-request-id", "req-42"),)
    )
    assert reply.company_name == "req-42"
    assert _handled("GetInstrument", "OK") == before + 1


async def test_an_unexpected_error_is_internal_with_the_request_id_and_nothing_else(quotes: Any) -> None:
    before = _handled("GetInstrument", "INTERNAL")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await quotes.GetInstrument(
            pb.GetInstrumentRequest(name="instruments/SECRET"), metadata=(("x-request-id", "req-43"),)
        )
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "internal error; request id req-43"
    assert _handled("GetInstrument", "INTERNAL") == before + 1


async def test_a_service_error_keeps_its_code_and_details(quotes: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await quotes.GetInstrument(pb.GetInstrumentRequest(name="instruments/NONE"))
    details = details_of(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "INSTRUMENT_NOT_FOUND")


async def test_a_stream_carries_the_request_id_and_ends_with_the_error_status(quotes: Any) -> None:
    call = quotes.StreamQuotes(pb.StreamQuotesRequest(), metadata=(("x-request-id", "req-44"),))
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for response in call:
            received.append(response.quotes[0].symbol)
    assert received == ["req-44"]
    assert details_of(raised.value).reason == "GONE"


async def test_health_answers_for_the_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="brokermesh.marketdata.v1.MarketDataService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_unknown_method_is_unimplemented(channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary("/brokermesh.marketdata.v1.MarketDataService/NoSuchMethod")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(b"")
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
