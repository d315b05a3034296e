"""The identifiers every service accepts, written once: resource names (AIP-122) such as
`users/{user}/orders/{order}`, the `users/-` wildcard of a listing across users (AIP-159),
ids, idempotency keys (request ids, AIP-155) and exchange symbols. Each refusal is an
INVALID_ARGUMENT that names the field the caller sent.

Pure: the domain layers use it too.
"""

from __future__ import annotations

import functools
import re

from svc_runtime.errors import InvalidArgument

# One segment of a resource name: a user, an order, a watchlist, a block… Starts with a
# letter or digit so that it can never be `-` (the wildcard) or begin like an option.
ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
# The wildcard segment: every user, where a listing allows it.
EVERY = "-"
# An idempotency key: 1–128 printable ASCII characters, no spaces.
REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
# An exchange symbol as FIX carries it (tag 55): upper case, at most 30 characters.
SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9&._-]{0,29}$")

_ID = re.compile(rf"^{ID}$")
_VARIABLE = re.compile(r"\{([a-z_]+)\}")


class Pattern:
    """A resource-name pattern such as `users/{user}/orders/{order}`. With `every`, its first
    variable may also be `-` (parsed as None)."""

    def __init__(self, template: str, *, every: bool = False) -> None:
        self.template = template
        first = ID + "|" + re.escape(EVERY) if every else ID
        parts = _VARIABLE.split(template)
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"({first if i == 1 else ID})" for i, part in enumerate(parts)
        )
        self._regex = re.compile(f"^{regex}$")

    def parse(self, name: str, field: str = "name") -> tuple[str | None, ...]:
        """The variables of `name`, in order; InvalidArgument(INVALID_NAME) when it does not match."""
        match = self._regex.match(name or "")
        if match is None:
            raise InvalidArgument(
                f"{field} must look like {self.template}", reason="INVALID_NAME", field=field
            )
        return tuple(None if value == EVERY else value for value in match.groups())

    def ids(self, name: str, field: str = "name") -> tuple[str, ...]:
        """The variables of `name` where the pattern has no wildcard: every one is an id."""
        return tuple(value or "" for value in self.parse(name, field))

    def format(self, *values: str) -> str:
        names = iter(values)
        return _VARIABLE.sub(lambda _: next(names), self.template)


@functools.cache
def pattern(template: str, *, every: bool = False) -> Pattern:
    return Pattern(template, every=every)


def user_of(name: str, field: str = "parent") -> str:
    """`users/{user}` → the user."""
    return pattern("users/{user}").ids(name, field)[0]


def user_or_every(parent: str, field: str = "parent") -> str | None:
    """`users/{user}` → the user; `users/-` → None (every user)."""
    return pattern("users/{user}", every=True).parse(parent, field)[0]


def resource_id(value: str, field: str) -> str:
    """An id as one segment of a resource name (a user id, an order id…)."""
    if not _ID.match(value or ""):
        raise InvalidArgument(
            f"{field} must be 1–64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
            reason="INVALID_NAME",
            field=field,
        )
    return value


def request_id(value: str, field: str = "request_id") -> str:
    """An idempotency key, required."""
    if not value:
        raise InvalidArgument(
            f"{field} is required (the idempotency key)", reason="MISSING_REQUEST_ID", field=field
        )
    if not REQUEST_ID.match(value):
        raise InvalidArgument(
            f"{field} must be 1–128 printable characters without spaces",
            reason="INVALID_REQUEST_ID",
            field=field,
        )
    return value


def symbol(value: str, field: str = "symbol") -> str:
    """An exchange symbol, upper-cased; MISSING_SYMBOL or INVALID_SYMBOL otherwise."""
    normalized = (value or "").strip().upper()
    if not normalized:
        raise InvalidArgument(f"{field} is required", reason="MISSING_SYMBOL", field=field)
    if not SYMBOL.match(normalized):
        raise InvalidArgument(
            f"{field} must be an exchange symbol such as INFY", reason="INVALID_SYMBOL", field=field
        )
    return normalized
