"""AIP-158 page tokens: opaque to clients, bound to the request they continue.

A token carries the sort key of the last item served (keyset pagination, so a master refresh
between pages neither repeats nor skips items) and a fingerprint of the request; a token used
with a different query is rejected rather than silently applied.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib

from svc_runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 → default; above the maximum → the maximum (AIP-158); negative → INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(requested or default, maximum)


def fingerprint(*parts: str) -> int:
    return zlib.crc32("\x1f".join(parts).encode())


def encode_token(key: list[str | int], request_fingerprint: int) -> str:
    raw = json.dumps({"k": key, "f": request_fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, request_fingerprint: int) -> list[str | int] | None:
    """The key in `token`, None for an empty token; INVALID_ARGUMENT if it is malformed or
    was issued for another request."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        key, issued_for = body["k"], body["f"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is not valid", reason="INVALID_PAGE_TOKEN", field="page_token"
        ) from None
    if issued_for != request_fingerprint or not isinstance(key, list):
        raise InvalidArgument(
            "page_token was issued for a different request", reason="INVALID_PAGE_TOKEN", field="page_token"
        )
    return key
