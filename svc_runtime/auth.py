"""Who is calling over gRPC, proven by a signed bearer token in `authorization` metadata.

Three kinds of principal:

- an **end user**: the access token the gateway issues at `POST /v1/sessions`, checked by
  `svc_runtime.tokens` exactly as the gateway checks it (key set, revoked sessions); the
  user is the token's `sub`, the session its `sid`.
- a **service**: a token the calling service signs itself with the stack's service key
  (`BROKERMESH_SERVICE_KEY`), `sub` = the caller, `aud` = the called service, valid five
  minutes. The key is shared by the stack's services only: TLS is not in place yet, so
  a signed identity stands in for mutual TLS.
- an **operator**: a token signed with one operator's own key from the stack's operators
  file (`BROKERMESH_OPERATORS_FILE`); the role (`admin` or `read-only`) comes from that
  file, never from the token.

Tokens are told apart by their header's `kid` (`user:<key id>`; `service`; `operator:<name>`),
which only chooses the key: the signature, algorithm (HS256 only), issuer, audience,
expiry and subject are then all checked. A token that passed is remembered until it
expires, so a stream of calls pays for one signature check (a user's is looked up in the
revoked sessions on every call all the same).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt

from svc_runtime import config, tokens
from svc_runtime.tokens import Refused, RevokedSessions, SigningKeys, UserTokens

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
SERVICE_ISSUER = "brokermesh-service"
OPERATOR_ISSUER = "brokermesh-operator"
SERVICE_KID = "service"
OPERATOR_KID_PREFIX = "operator:"
# Minted tokens live this long and are renewed a minute before they expire.
MINTED_TOKEN_SECONDS = 300
_RENEW_BEFORE = 60
# A service or operator token claiming a longer life than this is refused.
MAX_MINTED_LIFETIME = 600
MAX_TOKEN_LENGTH = 4096
LEEWAY_SECONDS = 5

AUTHORIZATION_METADATA = "authorization"
SERVICE_KEY = "BROKERMESH_SERVICE_KEY"
OPERATORS_FILE = "BROKERMESH_OPERATORS_FILE"
CREDENTIALS_DIR = "credentials"
SERVICE_KEY_FILE = "service.key"
OPERATORS_FILE_NAME = "operators.json"

# The gRPC package of a method names the service that serves it: the audience of a
# service or operator token for that method.
AUDIENCE_BY_PACKAGE = {
    "brokermesh.orders.v1": "svc_orders",
    "brokermesh.funds.v1": "svc_funds",
    "brokermesh.marketdata.v1": "svc_marketdata",
    "brokermesh.exec.v1": "svc_exec",
    "brokermesh.exchange.v1": "exchange_sim",
}
# Who may present a service identity: the servers above and the gateway.
SERVICE_NAMES = frozenset({*AUDIENCE_BY_PACKAGE.values(), "gateway"})


class Kind(StrEnum):
    USER = "user"
    SERVICE = "service"
    OPERATOR = "operator"


class Role(StrEnum):
    ADMIN = "admin"
    READ_ONLY = "read-only"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Kind
    name: str
    role: Role | None = None
    # A user's session (the token's `sid`): what a revocation names.
    session: str = ""

    @property
    def actor(self) -> str:
        """How the audit trail names this principal (`user:{id}`, `operator:{name}`, …)."""
        return f"{self.kind.value}:{self.name}"


__all__ = ["Refused"]


def audience_of(method: str) -> str | None:
    """`/brokermesh.funds.v1.FundsService/Deposit` → `svc_funds`; None for other packages."""
    service = method[1:].split("/", 1)[0]
    return AUDIENCE_BY_PACKAGE.get(service.rsplit(".", 1)[0])


# --- presenting credentials (client side) --------------------------------------------------
class Signer:
    """What a client adds to a call to say who it is."""

    def authorization(self, method: str) -> str | None:
        raise NotImplementedError


class BearerToken(Signer):
    """A token obtained elsewhere, e.g. a user's access token from `POST /v1/sessions`."""

    def __init__(self, token: str) -> None:
        self._value = f"Bearer {token}"

    def authorization(self, method: str) -> str | None:
        return self._value


class MintingSigner(Signer):
    """Signs its own short-lived token per called service, and reuses it until near expiry."""

    def __init__(self, *, issuer: str, subject: str, key: str, kid: str, clock: Any = time.time) -> None:
        if not key:
            raise ValueError(f"no signing key for {subject}")
        self.issuer, self.subject, self.kid = issuer, subject, kid
        self._key = key
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}

    def token_for(self, audience: str) -> str:
        now = self._clock()
        held = self._tokens.get(audience)
        if held is not None and held[1] - _RENEW_BEFORE > now:
            return held[0]
        issued = int(now)
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": audience,
            "iat": issued,
            "exp": issued + MINTED_TOKEN_SECONDS,
            "jti": secrets.token_urlsafe(9),
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        self._tokens[audience] = (token, issued + MINTED_TOKEN_SECONDS)
        return token

    def authorization(self, method: str) -> str | None:
        audience = audience_of(method)
        return None if audience is None else f"Bearer {self.token_for(audience)}"


def service_signer(name: str, key: str) -> MintingSigner:
    return MintingSigner(issuer=SERVICE_ISSUER, subject=name, key=key, kid=SERVICE_KID)


def operator_signer(operator: Operator) -> MintingSigner:
    return MintingSigner(
        issuer=OPERATOR_ISSUER,
        subject=operator.name,
        key=operator.key,
        kid=OPERATOR_KID_PREFIX + operator.name,
    )


# --- credentials on disk -----------------------------------------------------------------
@dataclass(frozen=True)
class Operator:
    name: str
    role: Role
    key: str


@dataclass(frozen=True)
class Credentials:
    """A stack's secrets: the service key and the operators file (both mode 0600)."""

    service_key: str
    operators_file: Path

    def operator(self, name: str) -> Operator:
        operators = load_operators(self.operators_file)
        if name not in operators:
            raise KeyError(f"no operator {name!r} in {self.operators_file}")
        return operators[name]

    @property
    def signing_keys_file(self) -> Path:
        """Users' token keys beyond BROKERMESH_JWT_SECRET (made by the first key rotation)."""
        return self.operators_file.with_name(tokens.SIGNING_KEYS_FILE_NAME)

    def env(self) -> dict[str, str]:
        return {
            SERVICE_KEY: self.service_key,
            OPERATORS_FILE: str(self.operators_file),
            tokens.SIGNING_KEYS_FILE: str(self.signing_keys_file),
        }


def _write_secret(path: Path, text: str) -> None:
    # Created 0600 from the start: never readable by others, even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def append_private_line(path: Path, line: str) -> None:
    """One line at the end of a file only the owner may read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as handle:
        handle.write(line + "\n")


def ensure_credentials(data_dir: Path) -> Credentials:
    """The stack's credentials under `data_dir/credentials/`, made on first use: a service
    key and two operators, `admin` (role admin) and `auditor` (role read-only)."""
    directory = data_dir / CREDENTIALS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    key_file = directory / SERVICE_KEY_FILE
    if not key_file.exists():
        _write_secret(key_file, secrets.token_urlsafe(48))
    operators_file = directory / OPERATORS_FILE_NAME
    if not operators_file.exists():
        operators = {
            "admin": {"role": Role.ADMIN.value, "key": secrets.token_urlsafe(48)},
            "auditor": {"role": Role.READ_ONLY.value, "key": secrets.token_urlsafe(48)},
        }
        _write_secret(operators_file, json.dumps({"operators": operators}, indent=2) + "\n")
    return Credentials(key_file.read_text().strip(), operators_file)


def load_credentials(data_dir: Path) -> Credentials:
    """A running stack's credentials, as `up` made them."""
    directory = data_dir / CREDENTIALS_DIR
    key_file, operators_file = directory / SERVICE_KEY_FILE, directory / OPERATORS_FILE_NAME
    if not key_file.exists() or not operators_file.exists():
        raise FileNotFoundError(f"no credentials in {directory}; `brokermesh up` makes them")
    return Credentials(key_file.read_text().strip(), operators_file)


def load_operators(path: Path) -> dict[str, Operator]:
    raw = json.loads(path.read_text())["operators"]
    return {name: Operator(name, Role(entry["role"]), entry["key"]) for name, entry in raw.items()}


# --- this process's own identity -----------------------------------------------------------
@dataclass
class _Process:
    name: str = ""
    signer: Signer | None = None


_process = _Process()


def configure_process(name: str) -> None:
    """Called once by `svc_runtime.service.run`: this process calls others as `name`, signing
    with the service key from the environment (none set: it calls without an identity)."""
    key = os.environ.get(SERVICE_KEY, "")
    _process.name = name
    _process.signer = service_signer(name, key) if key else None
    if name and not key:
        log.warning("no %s: calls to other services carry no identity and will be refused", SERVICE_KEY)


def process_name() -> str:
    return _process.name


def process_signer() -> Signer | None:
    return _process.signer


# --- verifying credentials (server side) ---------------------------------------------------
class Verifier:
    """Turns a bearer token into a Principal, for one service (`audience`)."""

    _CACHE_LIMIT = 10_000

    def __init__(
        self,
        audience: str,
        *,
        user_secret: str = "",
        service_key: str,
        operators: dict[str, Operator],
        clock: Any = time.time,
        users: UserTokens | None = None,
    ) -> None:
        self.audience = audience
        # Users' access tokens are checked by the one implementation the gateway uses too.
        self.users = users or (
            UserTokens(tokens.KeySet.single(user_secret), clock=clock) if user_secret else None
        )
        self._service_key = service_key
        self._operators = operators
        self._clock = clock
        self._verified: dict[str, tuple[Principal, float]] = {}

    @classmethod
    def from_env(cls, audience: str, revoked: RevokedSessions | None = None) -> Verifier:
        operators_file = os.environ.get(OPERATORS_FILE, "")
        secret = os.environ.get(config.JWT_SECRET, "")
        return cls(
            audience,
            service_key=os.environ.get(SERVICE_KEY, ""),
            operators=load_operators(Path(operators_file)) if operators_file else {},
            users=UserTokens(SigningKeys.from_env(secret), revoked=revoked) if secret else None,
        )

    @property
    def revoked(self) -> RevokedSessions | None:
        return self.users.revoked if self.users is not None else None

    def verify(self, authorization: str) -> Principal:
        now = self._clock()
        held = self._verified.get(authorization)
        if held is not None:
            if held[1] + LEEWAY_SECONDS >= now:
                if held[0].session and self.users is not None:
                    self.users.check_session(held[0].session)
                return held[0]
            del self._verified[authorization]
            raise Refused("expired")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
            raise Refused("malformed")
        principal, expires = self._decode(token.strip(), now)
        if len(self._verified) >= self._CACHE_LIMIT:
            self._verified.clear()
        self._verified[authorization] = (principal, expires)
        return principal

    def _decode(self, token: str, now: float) -> tuple[Principal, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Refused("malformed") from None
        role: Role | None = None
        if isinstance(kid, str) and kid.startswith(tokens.KID_PREFIX):
            if self.users is None:
                raise Refused("no key for user tokens")
            checked = self.users.verify(token)
            return Principal(Kind.USER, checked.user_id, session=checked.session), float(checked.expires_at)
        if kid == SERVICE_KID:
            kind, key, issuer, audience = Kind.SERVICE, self._service_key, SERVICE_ISSUER, self.audience
        elif isinstance(kid, str) and kid.startswith(OPERATOR_KID_PREFIX):
            operator = self._operators.get(kid[len(OPERATOR_KID_PREFIX) :])
            if operator is None:
                raise Refused("unknown operator")
            kind, key, issuer, audience = Kind.OPERATOR, operator.key, OPERATOR_ISSUER, self.audience
            role = operator.role
        else:
            raise Refused("unknown key id")
        if not key:
            raise Refused(f"no key for {kind.value} tokens")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={
                    "require": ["exp", "iat", "sub", "iss", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
            expires, issued = int(claims["exp"]), int(claims["iat"])
        except (jwt.PyJWTError, TypeError, ValueError):
            raise Refused("invalid") from None
        # Times are checked against our clock (PyJWT would read the wall clock itself).
        if expires + LEEWAY_SECONDS < now:
            raise Refused("expired")
        if issued - LEEWAY_SECONDS > now or int(claims.get("nbf", 0)) - LEEWAY_SECONDS > now:
            raise Refused("not yet valid")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject or "/" in subject:
            raise Refused("invalid subject")
        if expires - issued > MAX_MINTED_LIFETIME:
            raise Refused("lifetime too long")
        if kind is Kind.SERVICE and subject not in SERVICE_NAMES:
            raise Refused("unknown service")
        if kind is Kind.OPERATOR and subject != kid[len(OPERATOR_KID_PREFIX) :]:
            raise Refused("operator mismatch")
        return Principal(kind, subject, role), float(expires)
