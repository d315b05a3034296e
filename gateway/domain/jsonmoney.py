"""JSON whose numbers stay exact: money and prices never pass through binary floats.

Request bodies are parsed with `parse_float=Decimal`, so `1542.35` arrives as
`Decimal("1542.35")`; a price or amount may also be sent as a string (`"1542.35"`).
Responses write `Decimal` values as JSON numbers from their decimal text, digit for digit
(`1542.30` stays `1542.30`).

Request bodies come from anyone, so decoding is bounded (`JsonLimits`): nesting is
measured before the decoder recurses, numbers are measured before they are converted, and
every string, array and object is measured as it is built. Anything outside the bounds is
`JsonLimitExceeded`, never a RecursionError or a 10,000-digit integer conversion.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import simplejson

from svc_runtime.decimals import parse_decimal
from svc_runtime.errors import InvalidArgument

# The plain decimal text the services put in `brokermesh.type.v1.Decimal`.
_PLAIN = re.compile(r"^-?\d{1,18}(\.\d{1,12})?$")

# A JSON string literal (escapes included), and the characters that change nesting depth.
_STRING_LITERAL = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class JsonLimits:
    """The shape a request body may have; openapi.yaml publishes the same numbers.

    The API's deepest body is an object holding an array of strings (depth 2), its longest
    string a 256-character password, its longest array 100 symbols and its largest number
    a 10,000,000 share quantity or a 2-place price: the bounds leave room and nothing more.
    """

    max_depth: int = 8
    max_string_chars: int = 1024
    max_array_items: int = 1000
    max_object_members: int = 64
    max_number_chars: int = 40


LIMITS = JsonLimits()


class MalformedJson(ValueError):
    """The request body is not JSON (or uses NaN/Infinity, which are not JSON)."""


class JsonLimitExceeded(MalformedJson):
    """The body is JSON but outside `JsonLimits` (or holds what no field can take)."""


def _reject_constant(name: str) -> Any:
    raise MalformedJson(f"{name} is not a JSON number")


def _check_depth(raw: bytes, limit: int) -> None:
    """Nesting depth from the brackets outside string literals, before anything recurses."""
    depth = 0
    for match in _BRACKETS.finditer(_STRING_LITERAL.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise JsonLimitExceeded(f"JSON nesting deeper than {limit} levels")
        else:
            depth -= 1


def _check_string(text: str, limits: JsonLimits) -> None:
    if len(text) > limits.max_string_chars:
        raise JsonLimitExceeded(f"a JSON string longer than {limits.max_string_chars} characters")
    if _SURROGATE.search(text):
        # "\ud800" alone is valid JSON text but no Unicode character: it cannot be stored.
        raise JsonLimitExceeded("a JSON string with an unpaired surrogate escape")


def _check_value(value: Any, limits: JsonLimits) -> None:
    """Strings and arrays the decoder built (objects are checked as they are built)."""
    if isinstance(value, str):
        _check_string(value, limits)
    elif isinstance(value, list):
        if len(value) > limits.max_array_items:
            raise JsonLimitExceeded(f"a JSON array of more than {limits.max_array_items} items")
        for item in value:
            _check_value(item, limits)
    elif isinstance(value, dict):
        for item in value.values():
            _check_value(item, limits)


def loads(text: str | bytes, limits: JsonLimits = LIMITS) -> Any:
    """Decode a request body: UTF-8 only (RFC 8259 §8.1), exact numbers, bounded shape."""
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedJson("the body is not UTF-8 text") from None
    else:
        raw = text.encode("utf-8", "surrogatepass")
    _check_depth(raw, limits.max_depth)

    def number(kind: type) -> Any:
        def parse(digits: str) -> Any:
            if len(digits) > limits.max_number_chars:
                raise JsonLimitExceeded(f"a JSON number longer than {limits.max_number_chars} characters")
            return kind(digits)

        return parse

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len(pairs) > limits.max_object_members:
            raise JsonLimitExceeded(f"a JSON object with more than {limits.max_object_members} members")
        obj: dict[str, Any] = {}
        for key, value in pairs:
            _check_string(key, limits)
            if key in obj:
                # Two parsers could disagree on which one wins; refuse instead of choosing.
                raise JsonLimitExceeded("an object member name appears more than once")
            obj[key] = value
        return obj

    try:
        value = json.loads(
            text,
            parse_float=number(Decimal),
            parse_int=number(int),
            parse_constant=_reject_constant,
            object_pairs_hook=members,
        )
    except json.JSONDecodeError as exc:
        raise MalformedJson(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # not reachable past _check_depth; kept as a last guard
        raise JsonLimitExceeded("JSON nested too deeply") from None
    _check_value(value, limits)
    return value


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
