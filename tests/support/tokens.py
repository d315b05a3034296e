"""Users' tokens that must prove nothing: one of each kind of defect, each otherwise as the
gateway would issue it (current key id, a session, every claim), so that each test shows
that one defect alone is enough to be refused."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import jwt

from svc_runtime.tokens import ACCESS_AUDIENCE, ALGORITHM, ISSUER, KID_PREFIX, REFRESH_AUDIENCE, KeySet

# The one answer every refused token gets, on REST, SSE and gRPC.
REFUSED = "authentication required"
KINDS = ("expired", "malformed", "wrongly signed", "alg none", "revoked", "wrong audience")


def _part(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def bad_tokens(
    keys: KeySet,
    *,
    user_id: str,
    revoked_session: str,
    audience: str = ACCESS_AUDIENCE,
    kid_prefix: str = KID_PREFIX,
) -> dict[str, str]:
    """Kind → token, for `audience` (an access token unless told otherwise)."""
    now = int(time.time())
    kid, secret = keys.signing()
    header = {"kid": kid_prefix + kid}
    claims = {
        "iss": ISSUER,
        "aud": audience,
        "sub": user_id,
        "sid": secrets.token_hex(16),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": secrets.token_urlsafe(12),
    }

    def signed(changes: dict[str, Any], key: bytes | str = secret) -> str:
        return jwt.encode({**claims, **changes}, key, algorithm=ALGORITHM, headers=header)

    other_audience = REFRESH_AUDIENCE if audience == ACCESS_AUDIENCE else ACCESS_AUDIENCE
    return {
        "expired": signed({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}),
        "malformed": "not.a.token",
        "wrongly signed": signed({}, key="x" * 48),
        "alg none": f"{_part({'alg': 'none', 'typ': 'JWT', **header})}.{_part(claims)}.",
        "revoked": signed({"sid": revoked_session}),
        "wrong audience": signed({"aud": other_audience}),
    }
