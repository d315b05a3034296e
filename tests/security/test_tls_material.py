"""The certificates a stack serves with: made once under the data directory (keys for the
owner only), or the operator's own; and plain text only when asked for, loudly."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.transport.http_server import public_tls as _public_tls
from svc_runtime import tls
from svc_runtime.grpc_client import raw_channel


@pytest.fixture
def no_operator_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine where nobody configured certificates."""
    for name in (tls.CERT_FILE, tls.KEY_FILE, tls.CA_FILE, tls.PLAINTEXT):
        monkeypatch.delenv(name, raising=False)


def names_of(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName), *map(str, san.get_values_for_type(x509.IPAddress))}


def test_a_first_start_makes_a_ca_and_a_server_certificate_with_owner_only_keys(
    tmp_path: Path, no_operator_tls: None
) -> None:
    material = tls.ensure(tmp_path, ("broker.example.test", "10.1.2.3"))
    assert material.ca == tmp_path / "tls" / "ca.pem"
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    for key in (tmp_path / "tls" / "ca.key", material.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert names_of(material.cert) == {"localhost", "127.0.0.1", "::1", "broker.example.test", "10.1.2.3"}
    ca = x509.load_pem_x509_certificate(material.ca.read_bytes())
    server = x509.load_pem_x509_certificate(material.cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The shell's trust bundle holds the system's roots and the stack's CA.
    assert material.bundle is not None and material.ca.read_text() in material.bundle.read_text()
    assert material.client_env()["SSL_CERT_FILE"] == str(material.bundle)


def test_a_restart_keeps_the_ca_and_a_new_host_name_gets_a_new_server_certificate(
    tmp_path: Path, no_operator_tls: None
) -> None:
    first = tls.ensure(tmp_path)
    ca, cert = first.ca.read_bytes(), first.cert.read_bytes()  # type: ignore[union-attr]
    again = tls.ensure(tmp_path)
    assert again.ca.read_bytes() == ca and again.cert.read_bytes() == cert  # type: ignore[union-attr]
    renamed = tls.ensure(tmp_path, ("trading.example.test",))
    assert renamed.ca.read_bytes() == ca  # type: ignore[union-attr]
    assert "trading.example.test" in names_of(renamed.cert)
    assert {"localhost", "127.0.0.1"} <= names_of(renamed.cert)


def test_an_operators_own_certificate_is_used_and_nothing_is_made(
    tmp_path: Path, no_operator_tls: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tls.ensure(tmp_path / "operator")
    monkeypatch.setenv(tls.CERT_FILE, str(own.cert))
    monkeypatch.setenv(tls.KEY_FILE, str(own.key))
    monkeypatch.setenv(tls.CA_FILE, str(own.ca))
    assert tls.ensure(tmp_path / "stack") == tls.Material(own.cert, own.key, own.ca)
    assert not (tmp_path / "stack" / "tls").exists()
    monkeypatch.delenv(tls.KEY_FILE)
    with pytest.raises(RuntimeError, match=tls.KEY_FILE):
        tls.configured()


def test_a_server_without_a_certificate_refuses_to_start_rather_than_serve_plain_text(
    no_operator_tls: None,
) -> None:
    server = grpc.aio.server()
    with pytest.raises(RuntimeError, match=f"{tls.CERT_FILE}.*{tls.PLAINTEXT}=1"):
        tls.add_port(server, "127.0.0.1:0")


async def test_plain_text_is_served_only_when_asked_for_and_says_so_loudly(
    no_operator_tls: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(tls.PLAINTEXT, "1")
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    with caplog.at_level(logging.WARNING, logger="svc_runtime.tls"):
        port = tls.add_port(server, "127.0.0.1:0")
        assert _public_tls(SimpleNamespace(http_host="127.0.0.1", http_port=8443)) is None  # type: ignore[arg-type]
    await server.start()
    try:
        async with raw_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)
    loud = [r for r in caplog.records if r.levelno == logging.WARNING and "TLS IS OFF" in r.getMessage()]
    assert len(loud) == 2, [r.getMessage() for r in caplog.records]
    assert any("REST + SSE" in r.getMessage() for r in loud)


async def test_a_list_of_replicas_is_reached_over_tls_too() -> None:
    """`ipv4:h1:p1,h2:p2` has no host name of its own for the certificate check; the channel
    checks the first host's (here the session's certificate, for 127.0.0.1)."""
    servers, ports = [], []
    for _ in range(2):
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        ports.append(tls.add_port(server, "127.0.0.1:0"))
        await server.start()
        servers.append(server)
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        async with raw_channel(target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for server in servers:
            await server.stop(0)
