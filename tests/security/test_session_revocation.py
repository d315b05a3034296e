"""Users' tokens on a gRPC server as the services run it (the guard following the revoked
sessions through real NATS): every kind of bad token is UNAUTHENTICATED with the same
message, a revoked session's open stream ends within 5 s, and a signing-key rotation logs
nobody out."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from svc_runtime import auth, config, tokens
from svc_runtime.auth import BearerToken, Verifier
from svc_runtime.grpc_client import channel
from svc_runtime.grpc_server import GrpcServer, Guard
from svc_runtime.messaging import Topology
from svc_runtime.revocations import RevocationFeed
from svc_runtime.tokens import RevokedSessions, SigningKeys, UserTokens
from tests.support.infra import SharedInfra, unique_name
from tests.support.polling import eventually
from tests.support.tokens import KINDS, REFUSED, bad_tokens

SECRET = "j" * 48
REVOCATION_DEADLINE_SECONDS = 5.0


class Quotes(marketdata_pb2_grpc.MarketDataServiceServicer):
    """A price tracker that pushes a quote every 100 ms for as long as it is allowed to."""

    async def StreamQuotes(
        self, request: Any, ctx: Any
    ) -> AsyncIterator[marketdata_pb2.StreamQuotesResponse]:
        sequence = 0
        while True:
            sequence += 1
            yield marketdata_pb2.StreamQuotesResponse(
                quotes=[marketdata_pb2.Quote(symbol="INFY", sequence=sequence)]
            )
            await asyncio.sleep(0.1)

    async def BatchGetQuotes(self, request: Any, ctx: Any) -> marketdata_pb2.BatchGetQuotesResponse:
        return marketdata_pb2.BatchGetQuotesResponse(unknown_symbols=list(request.symbols))


@dataclass
class Rig:
    target: str
    keys_file: Path
    # What the server holds, and a second process's view (the gateway's, which revokes).
    server_revoked: RevokedSessions
    gateway: RevocationFeed

    def tokens(self) -> UserTokens:
        return UserTokens(SigningKeys(SECRET, self.keys_file))

    def channel(self, token: str) -> grpc.aio.Channel:
        return channel(self.target, signer=BearerToken(token))

    async def revoke(self, session: str) -> None:
        await self.gateway.revoke(session, time.time() + 3600)


@pytest.fixture
async def rig(infra: SharedInfra, tmp_path: Path) -> AsyncIterator[Rig]:
    topology = Topology(unique_name("t"))
    keys_file = tmp_path / tokens.SIGNING_KEYS_FILE_NAME
    revoked = RevokedSessions()
    verifier = Verifier(
        "svc_marketdata",
        service_key="s" * 48,
        operators={},
        users=UserTokens(SigningKeys(SECRET, keys_file), revoked=revoked),
    )
    server = GrpcServer(
        "127.0.0.1:0", guard=Guard(verifier, RevocationFeed(infra.nats_url, topology, revoked))
    )
    server.add(
        marketdata_pb2_grpc.add_MarketDataServiceServicer_to_server,
        Quotes(),
        "brokermesh.marketdata.v1.MarketDataService",
    )
    port = await server.start()
    assert revoked.ready  # start() waited for the revocations
    gateway = RevocationFeed(infra.nats_url, topology, RevokedSessions())
    gateway.start()
    await asyncio.wait_for(gateway.loaded.wait(), 10)
    yield Rig(f"127.0.0.1:{port}", keys_file, revoked, gateway)
    await gateway.stop()
    await server.stop(0)


async def quotes(channel: grpc.aio.Channel) -> Any:
    stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
    return stub.StreamQuotes(marketdata_pb2.StreamQuotesRequest(symbols=["INFY"]), timeout=30)


async def unary_status(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
    stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
    try:
        await stub.BatchGetQuotes(marketdata_pb2.BatchGetQuotesRequest(symbols=["INFY"]), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def stream_status(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
    call = await quotes(channel)
    try:
        async for _ in call:
            return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return await call.code(), await call.details()


@pytest.mark.parametrize("kind", KINDS)
async def test_every_bad_token_is_unauthenticated_alike_over_grpc(rig: Rig, kind: str) -> None:
    session = unique_name("s")
    await rig.revoke(session)
    await eventually(lambda: session in rig.server_revoked, timeout=5)
    keys = SigningKeys(SECRET, rig.keys_file).current()
    token = bad_tokens(keys, user_id="u1", revoked_session=session)[kind]
    async with rig.channel(token) as channel:
        assert await unary_status(channel) == (grpc.StatusCode.UNAUTHENTICATED, REFUSED)
        assert await stream_status(channel) == (grpc.StatusCode.UNAUTHENTICATED, REFUSED)
    # The same token, well formed, is accepted: each case fails for its one defect only.
    good = rig.tokens().issue("u1", unique_name("s")).token
    async with rig.channel(good) as channel:
        assert (await unary_status(channel))[0] == grpc.StatusCode.OK


async def test_revoking_a_session_ends_its_open_grpc_stream_within_5_seconds(rig: Rig) -> None:
    issuer = rig.tokens()
    doomed, kept = unique_name("s"), unique_name("s")
    async with (
        rig.channel(issuer.issue("u1", doomed).token) as ch,
        rig.channel(issuer.issue("u1", kept).token) as other,
    ):
        stream, bystander = await quotes(ch), await quotes(other)
        await stream.read()
        await bystander.read()
        # The token was checked (and remembered) when the stream opened; a unary call too.
        assert (await unary_status(ch))[0] == grpc.StatusCode.OK
        started = time.monotonic()
        await rig.revoke(doomed)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while True:
                await stream.read()
        elapsed = time.monotonic() - started
        print(f"gRPC stream of a revoked session ended {elapsed * 1000:.0f} ms after the revocation")
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert ended.value.details() == REFUSED
        assert elapsed < REVOCATION_DEADLINE_SECONDS
        # The remembered token is refused from now on; the other session streams on.
        assert await unary_status(ch) == (grpc.StatusCode.UNAUTHENTICATED, REFUSED)
        for _ in range(3):
            assert (await bystander.read()).quotes[0].symbol == "INFY"
        bystander.cancel()


async def test_a_key_rotation_logs_nobody_out(rig: Rig) -> None:
    before = rig.tokens().issue("u1", unique_name("s")).token
    previous, current = tokens.rotate_signing_key(rig.keys_file, SECRET, time.time())
    assert (previous, rig.keys_file.stat().st_mode & 0o777) == (tokens.INITIAL_KEY_ID, 0o600)
    after = rig.tokens().issue("u1", unique_name("s")).token
    assert jwt.get_unverified_header(before)["kid"] == "user:0"
    assert jwt.get_unverified_header(after)["kid"] == f"user:{current}"
    # The server notices the new key within a second or so; the old key still verifies.
    for token in (after, before):
        async with rig.channel(token) as channel:
            assert await eventually(lambda ch=channel: _accepted(ch), timeout=5)


async def _accepted(channel: grpc.aio.Channel) -> bool:
    return (await unary_status(channel))[0] == grpc.StatusCode.OK


def test_an_old_key_is_dropped_only_once_every_session_it_signed_has_ended(tmp_path: Path) -> None:
    path, now = tmp_path / tokens.SIGNING_KEYS_FILE_NAME, 1_800_000_000.0
    clock = [now]
    keys = SigningKeys(SECRET, path, clock=lambda: clock[0], monotonic=lambda: clock[0])
    old = UserTokens(keys, ttl_seconds=tokens.MAX_SESSION_SECONDS, clock=lambda: clock[0])
    token = old.issue("u1", "s1", not_after=int(now) + 3600).token
    tokens.rotate_signing_key(path, SECRET, now)
    clock[0] += 2
    assert old.verify(token).user_id == "u1"  # signed by the retired key: still good
    # A second rotation later keeps the first key while sessions it signed may still run…
    clock[0] = now + tokens.MAX_SESSION_SECONDS - 10
    tokens.rotate_signing_key(path, SECRET, clock[0])
    assert tokens.INITIAL_KEY_ID in keys.current().keys
    # …and drops it after the longest session has ended.
    clock[0] = now + tokens.MAX_SESSION_SECONDS + 10
    tokens.rotate_signing_key(path, SECRET, clock[0])
    clock[0] += 2
    held = keys.current().keys
    assert tokens.INITIAL_KEY_ID not in held, held
    # The first rotation's key (retired 20 s ago), the second's and the new one.
    assert len(held) == 3, held


async def test_rotate_signing_key_from_the_cli_is_for_admins_and_recorded(tmp_path: Path) -> None:
    auth.ensure_credentials(tmp_path)

    async def run(operator: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from svc_runtime.cli import main; main()",
            "--data-dir",
            str(tmp_path),
            "admin",
            "--operator",
            operator,
            "rotate-signing-key",
            env={**os.environ, config.JWT_SECRET: SECRET},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode or 0, out.decode(), err.decode()

    code, _, err = await run("auditor")
    assert code != 0 and "PERMISSION_DENIED" in err
    code, _, err = await run("admin")
    assert code == 0, err
    credentials = auth.load_credentials(tmp_path)
    keys = SigningKeys(SECRET, credentials.signing_keys_file).current()
    assert keys.current != tokens.INITIAL_KEY_ID and tokens.INITIAL_KEY_ID in keys.keys
    log = (credentials.signing_keys_file.parent / "key-rotations.log").read_text()
    assert '"actor": "operator:admin"' in log and keys.current in log


def test_a_revocation_ends_what_is_open_once_and_is_forgotten_when_its_tokens_are_dead() -> None:
    clock = [1_800_000_000.0]
    revoked = RevokedSessions(lambda: clock[0], ready=True)
    ended: list[str] = []
    seen: list[str] = []
    revoked.listen(seen.append)
    revoked.on_revoked("s1", lambda: ended.append("s1"))
    forget = revoked.on_revoked("s2", lambda: ended.append("s2"))
    forget()  # the s2 stream closed by itself
    revoked.add("s1", clock[0] + 60)
    revoked.add("s1", clock[0] + 60)  # seen again (e.g. from the watch): nothing more happens
    revoked.add("s2", clock[0] + 60)
    assert (ended, seen) == (["s1"], ["s1", "s2"])
    # Revocations outlive their sessions' tokens only until the next sweep.
    clock[0] += 120
    for n in range(1024):
        revoked.add(f"later-{n}", clock[0] + 60)
    assert "s1" not in revoked and "s2" not in revoked and "later-0" in revoked
