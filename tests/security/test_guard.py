"""The guard on one in-process server: the caller is checked before the request is even
parsed, and the actor a method sees comes from the credential."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from brokermesh.marketdata.v1 import watchlists_pb2 as pb
from brokermesh.marketdata.v1 import watchlists_pb2_grpc
from svc_runtime import context
from svc_runtime.auth import BearerToken, Signer, Verifier, ensure_credentials, service_signer
from svc_runtime.grpc_client import raw_channel, signing_interceptors
from svc_runtime.grpc_server import GrpcServer, Guard
from tests.support.grpc import user_token

GET = "/brokermesh.marketdata.v1.WatchlistService/GetWatchlist"


class Watchlists(watchlists_pb2_grpc.WatchlistServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def GetWatchlist(self, request: pb.GetWatchlistRequest, ctx: Any) -> pb.Watchlist:
        self.calls += 1
        # Answers with the actor and address it sees: who the server thinks called, and from where.
        seen = context.current()
        return pb.Watchlist(name=request.name, display_name=f"{seen.actor}@{seen.client_ip}")


class Rig:
    def __init__(self, port: int, service_key: str, jwt_secret: str, servicer: Watchlists) -> None:
        self.target = f"127.0.0.1:{port}"
        self.service_key, self.jwt_secret, self.servicer = service_key, jwt_secret, servicer

    def user(self, user_id: str) -> Signer:
        return BearerToken(user_token(self, user_id))  # type: ignore[arg-type]

    def service(self, name: str = "gateway") -> Signer:
        return service_signer(name, self.service_key)

    async def call(self, signer: Signer | None, payload: bytes, metadata: tuple = ()) -> Any:
        async with raw_channel(self.target, interceptors=signing_interceptors(signer)) as ch:
            raw = ch.unary_unary(
                GET, request_serializer=lambda b: b, response_deserializer=pb.Watchlist.FromString
            )
            return await raw(payload, metadata=metadata, timeout=5)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    credentials = ensure_credentials(tmp_path)
    secret = "j" * 48
    verifier = Verifier(
        "svc_marketdata", user_secret=secret, service_key=credentials.service_key, operators={}
    )
    servicer = Watchlists()
    server = GrpcServer("127.0.0.1:0", guard=Guard(verifier))
    server.add(
        watchlists_pb2_grpc.add_WatchlistServiceServicer_to_server,
        servicer,
        "brokermesh.marketdata.v1.WatchlistService",
    )
    port = await server.start()
    yield Rig(port, credentials.service_key, secret, servicer)
    await server.stop(0)


GARBAGE = b"\xff\xff\xff\xff not a protobuf message"


def request(name: str) -> bytes:
    return pb.GetWatchlistRequest(name=name).SerializeToString()


async def test_an_unauthenticated_call_is_refused_before_its_request_is_read(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.call(None, GARBAGE)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.call(rig.user("u1"), GARBAGE)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rig.servicer.calls == 0


async def test_a_user_is_the_actor_whatever_the_metadata_claims(rig: Rig) -> None:
    claims = (("x-actor", "operator:admin"), ("x-client-ip", "10.9.9.9"))
    reply = await rig.call(rig.user("u1"), request("users/u1/watchlists/w1"), claims)
    assert reply.display_name == "user:u1@127.0.0.1"


async def test_a_service_relays_the_user_it_serves_and_is_held_to_that_users_resources(rig: Rig) -> None:
    relayed = (("x-actor", "user:u1"), ("x-client-ip", "10.9.9.9"))
    reply = await rig.call(rig.service(), request("users/u1/watchlists/w1"), relayed)
    assert reply.display_name == "user:u1@10.9.9.9"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.call(rig.service(), request("users/u2/watchlists/w1"), relayed)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    # On its own account a service reaches any user's resources (it is trusted with them).
    reply = await rig.call(rig.service(), request("users/u2/watchlists/w1"))
    assert reply.display_name == "@"


async def test_a_user_naming_another_users_resource_gets_not_found(rig: Rig) -> None:
    for name in ("users/u2/watchlists/w1", "users/-", "users/u1x/watchlists/w1", ""):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await rig.call(rig.user("u1"), request(name))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND, name
    assert rig.servicer.calls == 0
