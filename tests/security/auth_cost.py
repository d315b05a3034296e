"""What authentication adds to a gRPC call, measured in one process and one run.

    .venv/bin/python -m tests.security.auth_cost [calls per round]

Two servers with the same trivial method: one where the method is open (the guard returns
at once), one where it needs a token. Rounds alternate between a client with no token, one
with a service identity and one with a user's access token. Then the parts alone: the
guard admitting a call with a remembered token, the first check of a token, and the
client adding its token.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from brokermesh.marketdata.v1 import marketdata_pb2_grpc
from svc_runtime import access
from svc_runtime.auth import BearerToken, Verifier, ensure_credentials, service_signer
from svc_runtime.grpc_client import raw_channel, signing_interceptors
from svc_runtime.grpc_server import GrpcServer, Guard, GuardedMethod
from tests.support.grpc import user_token

METHOD = "/brokermesh.marketdata.v1.MarketDataService/GetInstrument"


class Instruments(marketdata_pb2_grpc.MarketDataServiceServicer):
    async def GetInstrument(self, request: pb.GetInstrumentRequest, ctx: Any) -> pb.Instrument:
        return pb.Instrument(name=request.name)


async def _serve(guard: Guard) -> tuple[GrpcServer, int]:
    server = GrpcServer("127.0.0.1:0", guard=guard)
    server.add(
        marketdata_pb2_grpc.add_MarketDataServiceServicer_to_server,
        Instruments(),
        "brokermesh.marketdata.v1.MarketDataService",
    )
    return server, await server.start()


async def _per_call(stub: Any, calls: int) -> float:
    request = pb.GetInstrumentRequest(name="instruments/INFY")
    started = time.perf_counter()
    for _ in range(calls):
        await stub.GetInstrument(request)
    return (time.perf_counter() - started) / calls * 1e6


def _each(action: Any, times: int) -> float:
    started = time.perf_counter()
    for _ in range(times):
        action()
    return (time.perf_counter() - started) / times * 1e6


async def main(calls: int) -> None:
    credentials = ensure_credentials(Path(tempfile.mkdtemp()))
    secret = "j" * 48
    verifier = Verifier(
        "svc_marketdata", user_secret=secret, service_key=credentials.service_key, operators={}
    )
    guarded, guarded_port = await _serve(Guard(verifier))
    saved = access.METHODS[METHOD]
    access.METHODS[METHOD] = access.OPEN  # read once, when the method is registered
    opened, open_port = await _serve(Guard(verifier))
    access.METHODS[METHOD] = saved
    signers = {
        "service": service_signer("gateway", credentials.service_key),
        "user": BearerToken(user_token(SimpleNamespace(jwt_secret=secret), "u1")),  # type: ignore[arg-type]
    }
    channels = {"no token": raw_channel(f"127.0.0.1:{open_port}", interceptors=signing_interceptors(None))}
    for name, signer in signers.items():
        channels[name] = raw_channel(f"127.0.0.1:{guarded_port}", interceptors=signing_interceptors(signer))
    stubs = {name: marketdata_pb2_grpc.MarketDataServiceStub(ch) for name, ch in channels.items()}
    for stub in stubs.values():
        await _per_call(stub, 300)
    rounds: dict[str, list[float]] = {name: [] for name in stubs}
    for _ in range(5):
        for name, stub in stubs.items():
            rounds[name].append(await _per_call(stub, calls))
    for name, figures in rounds.items():
        print(
            f"{name:9} median {statistics.median(figures):7.1f} µs/call  rounds {[round(f) for f in figures]}"
        )

    guard = Guard(verifier)
    metadata = (("authorization", signers["user"].authorization(METHOD)), ("x-request-id", "r"))
    payload = pb.GetInstrumentRequest(name="instruments/INFY").SerializeToString()
    method = GuardedMethod(
        access.rule_for(METHOD), "MarketDataService", "GetInstrument", pb.GetInstrumentRequest.FromString
    )

    def admit() -> None:
        guard.admit(method, metadata, payload, lambda: "ipv4:127.0.0.1:50000")

    print(f"guard admitting a call (token remembered, request parsed): {_each(admit, 100_000):.2f} µs")
    parsing = _each(lambda: pb.GetInstrumentRequest.FromString(payload), 100_000)
    print(f"of which parsing the request, done before too: {parsing:.2f} µs")
    fresh = Verifier("svc_marketdata", user_secret=secret, service_key=credentials.service_key, operators={})
    token = metadata[0][1]

    def first_check() -> None:
        fresh._verified.clear()
        fresh.verify(token)

    print(f"first check of a token (HS256 and claims): {_each(first_check, 2000):.1f} µs")
    signing = _each(lambda: signers["service"].authorization(METHOD), 100_000)
    print(f"client adding its service token (made once per 4 minutes): {signing:.2f} µs")
    for ch in channels.values():
        await ch.close()
    await guarded.stop(0)
    await opened.stop(0)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000))
