"""Stream tickets: what a browser's EventSource sends instead of a bearer token.

EventSource cannot set `Authorization`, so a page trades its token for a ticket
(`POST /v1/stream-tickets`) and opens the stream with `?ticket=`. A ticket is a JWT like an
access token but for another audience and under another key (derived from the token
secret), so neither can ever pass for the other; it lives ~30 s and names its user and a
random id, and the session it was issued in (a revoked session's tickets are refused).
Any gateway process can check signature, expiry and user without a lookup; that it is used
once is the job of `SpentTickets` (one shared record for every process).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from svc_runtime.tokens import KeySet, RevokedSessions, UserTokens

TICKET_AUDIENCE = "brokermesh-stream"
DEFAULT_TICKET_SECONDS = 30
# Spent ticket ids are kept this long; a ticket must expire well before its record does.
SPENT_RECORD_SECONDS = 600
MAX_TICKET_SECONDS = 300
_KEY_LABEL = b"brokermesh stream ticket v1"
TICKET_KID_PREFIX = "ticket:"


def ticket_key(token_secret: str) -> bytes:
    """The tickets' own signing key, derived from the token secret (one secret to manage)."""
    return hmac.new(token_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def ticket_authority(
    token_secret: str,
    *,
    ttl_seconds: int,
    clock: Callable[[], float],
    revoked: RevokedSessions | None = None,
) -> UserTokens:
    if not 0 < ttl_seconds <= MAX_TICKET_SECONDS:
        raise ValueError(f"a stream ticket lives 1 to {MAX_TICKET_SECONDS} seconds, not {ttl_seconds}")
    return UserTokens(
        KeySet.single(ticket_key(token_secret), "1"),
        audience=TICKET_AUDIENCE,
        ttl_seconds=ttl_seconds,
        revoked=revoked,
        clock=clock,
        leeway=2,
        kid_prefix=TICKET_KID_PREFIX,
    )
