"""Every public listener of a running stack speaks TLS 1.2 or later and nothing else: a REST
client trades over it, desktops and services call over it, and plain text or TLS 1.0/1.1
gets no answer. (The example desktop over TLS: test_desktop_client.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brokermesh.exec.v1 import exec_pb2
from brokermesh.funds.v1 import funds_pb2
from svc_runtime.grpc_client import raw_channel
from svc_runtime.stack import Stack
from tests.e2e.conftest import exact_json, login
from tests.security.conftest import open_account
from tests.security.methods import served_methods
from tests.security.support import status_of
from tests.support.grpc import service_channel, user_token
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

METHODS = {m.path: m for m in served_methods()}
GRPC_SERVICES = ("svc_orders", "svc_funds", "svc_marketdata", "svc_exec", "exchange_sim")


def gateway_address(stack: Stack) -> tuple[str, int]:
    url = urlsplit(stack.plan.gateway_url)
    assert url.scheme == "https" and url.hostname and url.port
    return url.hostname, url.port


def listeners(stack: Stack) -> list[tuple[str, str, int]]:
    """(what, host, port) of every public listener: the gateway and each gRPC server."""
    found = [("gateway", *gateway_address(stack))]
    for service in GRPC_SERVICES:
        host, _, port = stack.plan.target(service).rpartition(":")
        found.append((service, host, int(port)))
    return found


def handshake(host: str, port: int, context: ssl.SSLContext, alpn: list[str]) -> str:
    """The TLS version a handshake agreed, or the SSLError it failed with."""
    context.set_alpn_protocols(alpn)
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as wrapped,
    ):
        return str(wrapped.version())


def old_tls_client() -> ssl.SSLContext:
    """A client that offers TLS 1.0 and 1.1 only (OpenSSL's security level lowered so that it
    really offers them), verifying nothing: only the server's refusal can stop it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


@contextlib.contextmanager
def permissive_server(cert: Path, key: Path) -> Iterator[int]:
    """A TLS server that would take TLS 1.0 — the control: this machine's client can offer it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.load_cert_chain(str(cert), str(key))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with contextlib.suppress(OSError, ssl.SSLError), context.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


async def test_a_rest_client_signs_in_and_trades_over_tls(secured_stack: Stack) -> None:
    username, password, _ = await open_account(secured_stack)
    plan = secured_stack.plan
    assert plan.tls_files is not None and plan.tls_files.ca is not None
    trusting = ssl.create_default_context(cafile=str(plan.tls_files.ca))
    async with httpx.AsyncClient(base_url=plan.gateway_url, verify=trusting, timeout=30) as client:
        auth = await login(client, username, password)
        funds = await client.get("/v1/funds", headers=auth)
        assert funds.status_code == 200, funds.text
        version = funds.extensions["network_stream"].get_extra_info("ssl_object").version()
        assert version in ("TLSv1.2", "TLSv1.3")
        # A market buy fills: the gateway, svc_orders, svc_funds and svc_exec call each other
        # over TLS on the way.
        placed = await client.post(
            "/v1/orders",
            headers={**auth, "Idempotency-Key": "tls-rest-buy"},
            json={"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": 1},
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["orderId"]

        async def filled() -> bool:
            return exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))["status"] == "FILLED"

        await eventually(filled, timeout=60)
    # A client that trusts only the public roots (not the stack's CA) is refused at the handshake.
    public_roots = ssl.create_default_context(cafile=certifi.where())
    async with httpx.AsyncClient(base_url=plan.gateway_url, verify=public_roots) as stranger:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.get("/healthz")


async def test_services_call_each_other_over_tls_and_no_identity_is_refused(secured_stack: Stack) -> None:
    _, _, user = await open_account(secured_stack)
    plan = secured_stack.plan
    session = METHODS["/brokermesh.exec.v1.ExecutionService/GetSessionStatus"]
    block = METHODS["/brokermesh.funds.v1.FundsService/BlockFunds"]
    async with service_channel(plan, "svc_exec", caller="svc_orders") as ch:
        assert await status_of(ch, session, exec_pb2.GetSessionStatusRequest()) == grpc.StatusCode.OK
    # An internal method over TLS: without a service identity, refused; with a user's token,
    # not allowed.
    request = funds_pb2.BlockFundsRequest(parent=f"users/{user}")
    async with raw_channel(plan.target("svc_funds")) as anonymous:
        assert await status_of(anonymous, block, request) == grpc.StatusCode.UNAUTHENTICATED
        token = (("authorization", f"Bearer {user_token(plan, user)}"),)
        assert await status_of(anonymous, block, request, token) == grpc.StatusCode.PERMISSION_DENIED


async def test_plain_text_to_a_tls_port_gets_no_answer(secured_stack: Stack) -> None:
    for service in GRPC_SERVICES:
        async with grpc.aio.insecure_channel(secured_stack.plan.target(service)) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, service
    host, port = gateway_address(secured_stack)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    assert not answer.startswith(b"HTTP/"), answer[:100]
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient(timeout=10) as client:
            await client.get(f"http://{host}:{port}/healthz")


# The test offers the versions Python deprecates on purpose.
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_1_0_and_1_1_are_refused_and_1_2_is_taken(secured_stack: Stack) -> None:
    tls_files = secured_stack.plan.tls_files
    assert tls_files is not None
    # The control: against a server that allows it, this client does get TLS 1.1.
    with permissive_server(tls_files.cert, tls_files.key) as port:
        agreed = await asyncio.to_thread(handshake, "127.0.0.1", port, old_tls_client(), [])
    assert agreed == "TLSv1.1"
    for what, host, port in listeners(secured_stack):
        alpn = ["http/1.1"] if what == "gateway" else ["h2"]
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(handshake, host, port, old_tls_client(), alpn)
        newest_12 = ssl.create_default_context(cafile=str(tls_files.ca))
        newest_12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert await asyncio.to_thread(handshake, host, port, newest_12, alpn) == "TLSv1.2", what
