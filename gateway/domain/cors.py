"""Which web origins may call the API from a browser (CORS), parsed from configuration.

Origins are listed exactly, as a browser sends them in `Origin` (`scheme://host[:port]`,
no path). There is no wildcard: the API is called with bearer tokens and stream tickets,
never cookies, so credentials are never allowed, and a trading API names the web front
ends it serves rather than trusting every page on the internet.
"""

from __future__ import annotations

import re

_ORIGIN = re.compile(r"^https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$")

# What a page may send and read, beyond what CORS allows without asking.
ALLOWED_METHODS = ("GET", "POST", "DELETE")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id", "Last-Event-ID")
EXPOSED_HEADERS = ("X-Request-Id", "Idempotency-Key", "Location", "Retry-After")
# How long a browser may cache a preflight answer (Chromium caps it at 2 hours).
PREFLIGHT_MAX_AGE_SECONDS = 600


def parse_origins(text: str) -> tuple[str, ...]:
    """`"https://app.example.com, http://127.0.0.1:5173"` → the origins, or ValueError that
    names the bad entry."""
    origins: list[str] = []
    for raw in text.split(","):
        origin = raw.strip()
        if not origin:
            continue
        if origin in {"*", "null"}:
            raise ValueError(f"CORS origin {origin!r} is not accepted: list each origin exactly")
        if not _ORIGIN.match(origin):
            raise ValueError(
                f"CORS origin {origin!r} is not scheme://host[:port] in lower case without a path "
                "(as a browser sends it in Origin)"
            )
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)
