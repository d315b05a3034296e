"""Access tokens: short-lived JWTs signed with HS256; `sub` is the user id.

Only HS256 is accepted when verifying, so `alg: none` and algorithm-confusion tokens fail
like any tampered token. Expiry, issue time, issuer and audience are required.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from svc_runtime.errors import Unauthenticated

ALGORITHM = "HS256"
ISSUER = "brokermesh"
AUDIENCE = "brokermesh-api"
MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class IssuedToken:
    token: str
    user_id: str
    expires_in: int
    expires_at: int


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    user_id: str
    token_id: str
    expires_at: int


class TokenAuthority:
    """Issues and verifies one kind of token: access tokens by default; stream tickets are
    the same kind of JWT for another audience under another key (`gateway.domain.tickets`)."""

    def __init__(
        self,
        secret: str | bytes,
        *,
        ttl_seconds: int,
        clock: Callable[[], float],
        leeway: int = 5,
        audience: str = AUDIENCE,
        noun: str = "access token",
        renew: str = "log in again",
    ) -> None:
        if not secret:
            raise ValueError("a JWT signing secret is required")
        self._secret = secret
        self._audience = audience
        self._noun = noun
        self._renew = renew
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._leeway = leeway

    def issue(self, user_id: str) -> IssuedToken:
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": self._audience,
            "sub": user_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_seconds,
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token, user_id, self.ttl_seconds, now + self.ttl_seconds)

    def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(f"invalid {self._noun}", reason="INVALID_TOKEN")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=ISSUER,
                leeway=self._leeway,
                # Times are checked below against our clock (PyJWT would read the wall clock).
                options={
                    "require": ["exp", "iat", "sub", "iss", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError:
            raise Unauthenticated(f"invalid {self._noun}", reason="INVALID_TOKEN") from None
        now = self._clock()
        try:
            expires, issued, not_before = int(claims["exp"]), int(claims["iat"]), int(claims.get("nbf", 0))
        except (TypeError, ValueError):
            raise Unauthenticated(f"invalid {self._noun}", reason="INVALID_TOKEN") from None
        if issued - self._leeway > now or not_before - self._leeway > now:
            raise Unauthenticated(f"invalid {self._noun}", reason="INVALID_TOKEN")
        if expires + self._leeway < now:
            raise Unauthenticated(f"{self._noun} expired; {self._renew}", reason="TOKEN_EXPIRED")
        user_id = claims["sub"]
        if not isinstance(user_id, str) or not user_id or "/" in user_id:
            raise Unauthenticated(f"invalid {self._noun}", reason="INVALID_TOKEN")
        return Principal(user_id, str(claims.get("jti", "")), expires)
