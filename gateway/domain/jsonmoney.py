"""JSON whose numbers stay exact: money and prices never pass through binary floats.

Request bodies are parsed with `parse_float=Decimal`, so `1542.35` arrives as
`Decimal("1542.35")`; a price or amount may also be sent as a string (`"1542.35"`).
Responses write `Decimal` values as JSON numbers from their decimal text, digit for digit
(`1542.30` stays `1542.30`).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import simplejson

from svc_runtime.decimals import parse_decimal
from svc_runtime.errors import InvalidArgument

# The plain decimal text the services put in `brokermesh.type.v1.Decimal`.
_PLAIN = re.compile(r"^-?\d{1,18}(\.\d{1,12})?$")


class MalformedJson(ValueError):
    """The request body is not JSON (or uses NaN/Infinity, which are not JSON)."""


def _reject_constant(name: str) -> Any:
    raise MalformedJson(f"{name} is not a JSON number")


def loads(text: str | bytes) -> Any:
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise MalformedJson(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; `Decimal` values become numbers with their exact digits."""
    return simplejson.dumps(value, use_decimal=True, separators=(",", ":"), ensure_ascii=False).encode()


def decimal_from_json(value: Any, *, field: str, max_places: int = 2, positive: bool = True) -> Decimal:
    """A price or amount from a JSON number (already a Decimal) or a decimal string."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise InvalidArgument(
            f"{field} must be a number or a decimal string such as '1542.35'",
            reason="INVALID_DECIMAL",
            field=field,
        )
    text = value if isinstance(value, str) else format(Decimal(value), "f")
    return parse_decimal(text, field=field, max_places=max_places, positive=positive)


def decimal_or_none(text: str) -> Decimal | None:
    """A service's decimal text as a Decimal; None when absent or not a plain decimal."""
    if not text or not _PLAIN.match(text):
        return None
    return Decimal(text)


def json_number_text(text: str) -> str:
    """A service's decimal text, safe to splice into JSON as a number (`null` otherwise)."""
    return text if text and _PLAIN.match(text) else "null"
