"""AIP-158 pagination shared by every List method: page sizes and opaque page tokens.

A token carries the sort key of the last item served (keyset pagination: writes between
pages neither repeat nor skip items) and a fingerprint of the request's filters, so a token
replayed with a different query is rejected instead of silently applied.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from svc_runtime.errors import InvalidArgument


def page_size(requested: int, *, default: int, maximum: int) -> int:
    """0 → `default`; above `maximum` → `maximum` (AIP-158); negative → INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", reason="INVALID_PAGE_SIZE", field="page_size")
    return min(requested or default, maximum)


def _fingerprint(filters: tuple[Any, ...]) -> int:
    return zlib.crc32(json.dumps(filters, default=str, separators=(",", ":")).encode())


def encode_token(key: Any, *filters: Any) -> str:
    """A token resuming after `key` (any JSON value) for a request with these `filters`."""
    raw = json.dumps({"k": key, "f": _fingerprint(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, *filters: Any) -> Any:
    """The key in `token`, or None for an empty token. INVALID_ARGUMENT when the token is
    malformed or was issued for a request with other filters."""
    if not token:
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key, issued_for = body["k"], body["f"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is not valid", reason="INVALID_PAGE_TOKEN", field="page_token"
        ) from None
    if issued_for != _fingerprint(filters):
        raise InvalidArgument(
            "page_token was issued for a different request", reason="INVALID_PAGE_TOKEN", field="page_token"
        )
    return key
