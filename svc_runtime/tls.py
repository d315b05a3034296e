"""TLS on every public listener: the certificates, and the server and client settings
every process uses.

A stack's certificates are the operator's (BROKERMESH_TLS_CERT / _KEY / _CA) or, by default,
made by `up` on first start under `<data dir>/tls/`: a private CA and one server certificate
for localhost, 127.0.0.1, ::1 and the configured host names. Keys are created mode 0600 in a
0700 directory. Every listener speaks TLS 1.2 or later; plain text is only for local debugging,
behind BROKERMESH_INSECURE_PLAINTEXT=1, and said loudly at every start.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import secrets
import socket
import ssl
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from svc_runtime.config import env, env_bool

log = logging.getLogger(__name__)

CERT_FILE = "BROKERMESH_TLS_CERT"
KEY_FILE = "BROKERMESH_TLS_KEY"
CA_FILE = "BROKERMESH_TLS_CA"
# Extra names (DNS names or IP addresses, comma-separated) the made certificate is valid for.
HOSTNAMES = "BROKERMESH_TLS_HOSTNAMES"
PLAINTEXT = "BROKERMESH_INSECURE_PLAINTEXT"

TLS_DIR = "tls"
# What a shell or a client outside the stack is told to trust (see `client_env`).
NODE_EXTRA_CA_CERTS = "NODE_EXTRA_CA_CERTS"
CLIENT_TRUST_VARIABLES = (
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
)

_CA_DAYS = 3650
_SERVER_DAYS = 397
# A made server certificate this close to its end is made again at the next start.
_RENEW_BEFORE = datetime.timedelta(days=30)
_ALWAYS_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Material:
    """Where a stack's certificate, its key and the CA that issued it are. `ca` is None for
    a certificate from a public CA: clients then trust the system's roots."""

    cert: Path
    key: Path
    ca: Path | None
    # The CA bundled with the system's roots, for shells that also reach other sites.
    bundle: Path | None = None

    def env(self) -> dict[str, str]:
        """The variables a stack process is given."""
        variables = {CERT_FILE: str(self.cert), KEY_FILE: str(self.key)}
        if self.ca is not None:
            variables[CA_FILE] = str(self.ca)
        return variables

    def client_env(self) -> dict[str, str]:
        """The variables that make curl, Python (ssl, httpx, requests, aiohttp), grpcio and
        Node.js trust the stack: each names the system's roots plus the stack's CA (Node adds
        the CA to its own roots)."""
        if self.ca is None:
            return {}
        trust = str(self.bundle or self.ca)
        return {
            CA_FILE: str(self.ca),
            NODE_EXTRA_CA_CERTS: str(self.ca),
            **dict.fromkeys(CLIENT_TRUST_VARIABLES, trust),
        }


def plaintext() -> bool:
    """Whether this process was told to run without TLS (local debugging only)."""
    return env_bool(PLAINTEXT, False)


def warn_plaintext(what: str) -> None:
    """The loud line every start in plain-text mode logs."""
    log.warning(
        "!!! TLS IS OFF: %s accepts plain-text connections (BROKERMESH_INSECURE_PLAINTEXT=1). "
        "Tokens and passwords cross the network readable by anyone on the path. "
        "For local debugging only; never in production. !!!",
        what,
    )


def configured() -> Material | None:
    """The operator's certificate from the environment, or None if none is configured."""
    cert, key, ca = env(CERT_FILE, ""), env(KEY_FILE, ""), env(CA_FILE, "")
    if not cert and not key:
        return None
    if not cert or not key:
        raise RuntimeError(f"set both {CERT_FILE} and {KEY_FILE}, or neither")
    material = Material(Path(cert), Path(key), Path(ca) if ca else None)
    for path in (material.cert, material.key, material.ca):
        if path is not None and not path.is_file():
            raise RuntimeError(f"TLS file {path} does not exist")
    return material


def required() -> Material:
    """The certificate a server of this process listens with; an error says what to set."""
    material = configured()
    if material is None:
        raise RuntimeError(
            f"no TLS certificate: set {CERT_FILE} and {KEY_FILE} (`brokermesh up` does), "
            f"or {PLAINTEXT}=1 for a plain-text debugging run"
        )
    return material


def hostnames_from_env() -> tuple[str, ...]:
    return tuple(name.strip() for name in env(HOSTNAMES, "").split(",") if name.strip())


def ensure(data_dir: Path, hostnames: tuple[str, ...] = ()) -> Material:
    """The stack's TLS material: the operator's when configured, otherwise the CA and server
    certificate under `data_dir/tls/`, made on first use. The server certificate is made
    again (by the same CA) when it nears its end or lacks a name asked for; the CA stays, so
    clients that trust it keep trusting the stack."""
    operator = configured()
    if operator is not None:
        return operator
    return made(data_dir, hostnames)


def made(data_dir: Path, hostnames: tuple[str, ...] = ()) -> Material:
    """The CA and server certificate under `data_dir/tls/`, made or renewed as `ensure` says,
    whatever the environment configures."""
    directory = data_dir / TLS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_cert, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key = directory / "server.pem", directory / "server.key"
    if not ca_cert.exists() or not ca_key.exists():
        _make_ca(ca_cert, ca_key)
    names = tuple(dict.fromkeys((*_ALWAYS_NAMES, *hostnames)))
    if not _still_good(cert, key, names):
        _make_server_cert(ca_cert, ca_key, cert, key, names)
    bundle = directory / "trust.pem"
    bundle.write_text(_system_roots() + ca_cert.read_text())
    return Material(cert, key, ca_cert, bundle)


def _system_roots() -> str:
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and os.path.isfile(cafile):
        text = Path(cafile).read_text()
        return text if text.endswith("\n") else text + "\n"
    return ""


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    # Created 0600 from the start: never readable by others, even for an instant.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    tmp.replace(path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp.chmod(0o644)
    tmp.replace(path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_usage(*, issuer: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs) only; a server signs its handshakes only."""
    return x509.KeyUsage(
        digital_signature=not issuer,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=issuer,
        crl_sign=issuer,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own per stack, so two stacks' CAs are told apart in a trust store.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "brokermesh"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"brokermesh CA {socket.gethostname()[:24]} {secrets.token_hex(4)}"
            ),
        ]
    )
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(issuer=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _make_server_cert(
    ca_cert_path: Path, ca_key_path: Path, cert_path: Path, key_path: Path, names: tuple[str, ...]
) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise RuntimeError(f"{ca_key_path} is not the EC key brokermesh makes")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(issuer=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)


def _still_good(cert_path: Path, key_path: Path, names: tuple[str, ...]) -> bool:
    if not cert_path.exists() or not key_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - _now() < _RENEW_BEFORE:
        return False
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(entry in present for entry in _san(names))


def spki_sha256(cert_path: Path) -> str:
    """The base64 SHA-256 of a certificate's public key: what Chromium's
    `--ignore-certificate-errors-spki-list` takes."""
    import base64

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return base64.b64encode(digest.finalize()).decode()


# --- servers -------------------------------------------------------------------------------
def server_context(material: Material) -> ssl.SSLContext:
    """What the HTTPS listener speaks: TLS 1.2 or later, the stack's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(material.cert), str(material.key))
    # HTTP/1.1 only: uvicorn speaks nothing else.
    context.set_alpn_protocols(["http/1.1"])
    return context


def add_port(server: grpc.aio.Server, address: str, *, what: str = "gRPC server") -> int:
    """Listen on `address` with TLS (or in plain text when this process was told to). gRPC's
    core accepts TLS 1.2 and 1.3 only; grpcio has no setting for it, and needs none."""
    if plaintext():
        warn_plaintext(f"{what} {address}")
        return server.add_insecure_port(address)
    material = required()
    credentials = grpc.ssl_server_credentials(
        [(material.key.read_bytes(), material.cert.read_bytes())], require_client_auth=False
    )
    return server.add_secure_port(address, credentials)


# --- clients -------------------------------------------------------------------------------
@cache
def _channel_credentials(ca: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes() if ca else None)


def channel_credentials() -> grpc.ChannelCredentials | None:
    """What this process's gRPC clients connect with: TLS trusting BROKERMESH_TLS_CA (or
    grpcio's roots when it is unset); None in plain-text mode."""
    if plaintext():
        return None
    return _channel_credentials(env(CA_FILE, ""))


def client_context(ca: Path | None = None) -> ssl.SSLContext:
    """What an HTTPS client verifies the stack with (TLS 1.2 or later): `ca`, by default
    BROKERMESH_TLS_CA, or the system's roots."""
    cafile = str(ca) if ca else env(CA_FILE, "")
    context = ssl.create_default_context(cafile=cafile or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
