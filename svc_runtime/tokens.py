"""Users' tokens: the one implementation that issues and checks them, for REST, SSE and gRPC.

Every token a user holds is a JWT (HS256 only, so `alg: none` and algorithm confusion fail
like any tampered token) with `iss`, `aud`, `sub` (the user), `sid` (the session),
`iat`, `exp` and a random `jti`, and a `kid` header naming the key that signed it:

- an **access token** (audience `brokermesh-api`) lives minutes and is sent on every call;
- a **refresh token** (audience `brokermesh-refresh`) is traded, once, at
  `POST /v1/sessions:refresh` for a new pair; it carries the session's generation (`gen`)
  so that a second use of one is seen (`gateway.app.sessions`);
- a **stream ticket** (audience `brokermesh-stream`, its own key) opens one event stream.

Keys: a key set maps key ids to secrets. The initial key is `BROKERMESH_JWT_SECRET`
(key id `user:0`); `brokermesh admin rotate-signing-key` adds a key to the signing-keys
file and makes it the one that signs. Every process re-reads that file when it changes, so
the old key keeps verifying what it signed until the longest session could have ended, and
nobody is logged out by a rotation.

Revocation: `RevokedSessions` is the set of ended sessions (logout, refresh-token reuse),
fed from NATS (`svc_runtime.revocations`) in every process that checks tokens; a token of a
revoked session is refused like a forged one, and open streams of it are ended.

Whatever is wrong with a token, `Refused` carries the reason for logs and metrics only;
callers get the same answer for all of them.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from svc_runtime.errors import Unavailable

ALGORITHM = "HS256"
ISSUER = "brokermesh"
ACCESS_AUDIENCE = "brokermesh-api"
REFRESH_AUDIENCE = "brokermesh-refresh"
KID_PREFIX = "user:"
INITIAL_KEY_ID = "0"
MAX_TOKEN_LENGTH = 4096
LEEWAY_SECONDS = 5
# No session outlives this: a retired signing key is kept this long after its retirement,
# and a revocation is remembered this long.
MAX_SESSION_SECONDS = 30 * 24 * 3600
SIGNING_KEYS_FILE = "BROKERMESH_SIGNING_KEYS_FILE"
SIGNING_KEYS_FILE_NAME = "signing-keys.json"
# A process looks at the signing-keys file at most this often.
_RELOAD_SECONDS = 1.0
# The answer to every refused token, on REST, SSE and gRPC: nothing for a prober to learn.
REFUSED_MESSAGE = "authentication required"


class Refused(Exception):
    """The token proves nothing. Why is for logs and metrics, never for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.why = reason


# --- keys ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeySet:
    """Secrets by key id, and the id of the one that signs."""

    keys: dict[str, bytes]
    current: str

    @classmethod
    def single(cls, secret: str | bytes, kid: str = INITIAL_KEY_ID) -> KeySet:
        return cls({kid: secret.encode() if isinstance(secret, str) else secret}, kid)

    def signing(self) -> tuple[str, bytes]:
        return self.current, self.keys[self.current]


def empty_key_file() -> dict[str, Any]:
    """A signing-keys file with no key beyond the initial secret."""
    return {"current": "", "keys": {}, "retired": {}}


def _read_keys_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return empty_key_file()


def key_set_from(initial_secret: str, recorded: dict[str, Any], now: float) -> KeySet:
    """The initial key plus the file's keys, less those retired longer than a session lives."""
    keys: dict[str, bytes] = {}
    if initial_secret:
        keys[INITIAL_KEY_ID] = initial_secret.encode()
    for kid, secret in recorded.get("keys", {}).items():
        keys[kid] = secret.encode()
    for kid, retired_at in recorded.get("retired", {}).items():
        if retired_at + MAX_SESSION_SECONDS < now:
            keys.pop(kid, None)
    current = recorded.get("current") or INITIAL_KEY_ID
    if current not in keys:
        raise ValueError("no signing key: set BROKERMESH_JWT_SECRET")
    return KeySet(keys, current)


class SigningKeys:
    """The key set of this process: the initial secret and the signing-keys file (if any),
    re-read when the file changes (looked at no more than once a second)."""

    def __init__(
        self,
        initial_secret: str,
        path: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._initial = initial_secret
        self._path = path
        self._clock = clock
        self._monotonic = monotonic
        self._seen: tuple[int, int, int] | None = None
        self._checked = -_RELOAD_SECONDS
        self._set = key_set_from(initial_secret, {}, clock()) if path is None else self._load()

    @classmethod
    def from_env(cls, initial_secret: str) -> SigningKeys:
        path = os.environ.get(SIGNING_KEYS_FILE, "")
        return cls(initial_secret, Path(path) if path else None)

    def _load(self) -> KeySet:
        assert self._path is not None
        try:
            stat = self._path.stat()
            self._seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            self._seen = None
        return key_set_from(self._initial, _read_keys_file(self._path), self._clock())

    def current(self) -> KeySet:
        if self._path is not None and self._monotonic() - self._checked >= _RELOAD_SECONDS:
            self._checked = self._monotonic()
            try:
                stat = self._path.stat()
                # A rotation replaces the file (a new inode), so a change is never missed.
                seen: tuple[int, int, int] | None = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            except FileNotFoundError:
                seen = None
            if seen != self._seen:
                self._set = self._load()
        return self._set


def rotate_signing_key(path: Path, initial_secret: str, now: float) -> tuple[str, str]:
    """A new signing key in the file at `path` (written 0600, replaced atomically): the
    previous key is retired but still verifies; keys retired longer than a session lives
    are dropped. Returns (previous key id, new key id)."""
    recorded = _read_keys_file(path)
    previous = recorded.get("current") or INITIAL_KEY_ID
    kid = f"{int(now)}-{secrets.token_hex(3)}"
    retired = dict(recorded.get("retired", {}))
    retired[previous] = now
    keys = {
        k: v
        for k, v in recorded.get("keys", {}).items()
        if k not in retired or retired[k] + MAX_SESSION_SECONDS >= now
    }
    keys[kid] = secrets.token_urlsafe(48)
    # The initial key lives in the environment, not in the file: its retirement is kept for
    # good, or it would verify again once forgotten.
    retired = {k: t for k, t in retired.items() if k == INITIAL_KEY_ID or t + MAX_SESSION_SECONDS >= now}
    # Refuses to write a file that would leave no key to verify with.
    key_set_from(initial_secret, {"current": kid, "keys": keys, "retired": retired}, now)
    text = json.dumps({"current": kid, "keys": keys, "retired": retired}, indent=2) + "\n"
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    temporary.replace(path)
    return previous, kid


# --- revocations -----------------------------------------------------------------------------
class RevokedSessions:
    """Session ids that no longer count, each until its last token would have expired.

    `ready` is False until the set has been loaded from where revocations are kept; until
    then a token cannot be told apart from a revoked one, and is answered "unavailable"
    (fail closed)."""

    def __init__(self, clock: Callable[[], float] = time.time, *, ready: bool = False) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._added = 0
        self.ready = ready

    def __contains__(self, session: object) -> bool:
        return session in self._until

    def __len__(self) -> int:
        return len(self._until)

    def add(self, session: str, until: float) -> None:
        """Record a revocation, and end whatever is open under the session."""
        self._added += 1
        if self._added % 1024 == 0:  # forget sessions whose tokens have all expired anyway
            now = self._clock()
            self._until = {s: t for s, t in self._until.items() if t >= now}
        first = session not in self._until
        self._until[session] = max(until, self._until.get(session, 0.0))
        if first:
            for watcher in list(self._watchers.pop(session, ())):
                watcher()
            for listener in self._listeners:
                listener(session)

    def on_revoked(self, session: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` once if `session` is revoked; returns what forgets it."""
        self._watchers.setdefault(session, set()).add(callback)

        def forget() -> None:
            watchers = self._watchers.get(session)
            if watchers is not None:
                watchers.discard(callback)
                if not watchers:
                    del self._watchers[session]

        return forget

    def listen(self, listener: Callable[[str], None]) -> None:
        """`listener(session)` on every revocation (e.g. to end a process's streams)."""
        self._listeners.append(listener)


# --- issuing and checking --------------------------------------------------------------------
@dataclass(frozen=True)
class Issued:
    token: str
    user_id: str
    session: str
    expires_in: int
    expires_at: int


@dataclass(frozen=True)
class Claims:
    """What a checked token says."""

    user_id: str
    session: str
    token_id: str
    expires_at: int
    generation: int = 0


class UserTokens:
    """Issues and checks one audience's tokens under a key set, consulting the revoked
    sessions (when given) on every check."""

    def __init__(
        self,
        keys: SigningKeys | KeySet,
        *,
        audience: str = ACCESS_AUDIENCE,
        ttl_seconds: int = 900,
        revoked: RevokedSessions | None = None,
        clock: Callable[[], float] = time.time,
        leeway: int = LEEWAY_SECONDS,
        kid_prefix: str = KID_PREFIX,
    ) -> None:
        self._keys = keys
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        self.revoked = revoked
        self._clock = clock
        self._leeway = leeway
        self._kid_prefix = kid_prefix

    def _key_set(self) -> KeySet:
        return self._keys if isinstance(self._keys, KeySet) else self._keys.current()

    def issue(
        self, user_id: str, session: str, *, not_after: int | None = None, generation: int | None = None
    ) -> Issued:
        now = int(self._clock())
        expires = now + self.ttl_seconds if not_after is None else min(not_after, now + self.ttl_seconds)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": self.audience,
            "sub": user_id,
            "sid": session,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "jti": secrets.token_urlsafe(12),
        }
        if generation is not None:
            claims["gen"] = generation
        kid, secret = self._key_set().signing()
        token = jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"kid": self._kid_prefix + kid})
        return Issued(token, user_id, session, expires - now, expires)

    def verify(self, token: str) -> Claims:
        """The token's claims; raises Refused (any defect) or Unavailable (revocations not
        known yet)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Refused("malformed")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Refused("malformed") from None
        if not isinstance(kid, str) or not kid.startswith(self._kid_prefix):
            raise Refused("unknown key id")
        secret = self._key_set().keys.get(kid[len(self._kid_prefix) :])
        if secret is None:
            raise Refused("unknown key id")
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=ISSUER,
                # Times are checked below against our clock (PyJWT would read the wall clock).
                options={
                    "require": ["exp", "iat", "sub", "iss", "aud", "sid"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
            expires, issued = int(claims["exp"]), int(claims["iat"])
            not_before, generation = int(claims.get("nbf", 0)), int(claims.get("gen", 0))
        except (jwt.PyJWTError, TypeError, ValueError):
            raise Refused("invalid") from None
        now = self._clock()
        if expires + self._leeway < now:
            raise Refused("expired")
        if issued - self._leeway > now or not_before - self._leeway > now:
            raise Refused("not yet valid")
        user_id, session = claims["sub"], claims["sid"]
        if not isinstance(user_id, str) or not user_id or "/" in user_id:
            raise Refused("invalid subject")
        if not isinstance(session, str) or not session:
            raise Refused("invalid session")
        self.check_session(session)
        return Claims(user_id, session, str(claims.get("jti", "")), expires, generation)

    def check_session(self, session: str) -> None:
        """Refused if the session was revoked (for a token checked earlier, e.g. remembered)."""
        revoked = self.revoked
        if revoked is None:
            return
        if not revoked.ready:
            raise Unavailable("sign-in cannot be checked now; retry", retry_after_seconds=1)
        if session in revoked:
            raise Refused("revoked")
