"""Client tags: a label a client puts on its orders (a strategy's name, say) to read their
fills, positions, ledger entries and P&L back by it. One rule for every service."""

from __future__ import annotations

import re

from svc_runtime.errors import InvalidArgument

MAX_TAG_LENGTH = 20
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,19}$"
_TAG = re.compile(TAG_PATTERN)


def check_tag(tag: str, field: str = "tag") -> str:
    """The tag, or "" for none: 1–20 letters, digits, '_', '.', ':' or '-', starting with a
    letter or digit."""
    if not tag:
        return ""
    if not _TAG.match(tag):
        raise InvalidArgument(
            f"{field} must be 1–{MAX_TAG_LENGTH} letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
            reason="INVALID_TAG",
            field=field,
        )
    return tag
