"""Exact decimals for money, prices and quantities, and their wire form.

Binary floating point never touches money: values travel as strings in
`brokermesh.type.v1.Decimal` and live as `decimal.Decimal` in domain code.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

from brokermesh.type.v1 import decimal_pb2
from svc_runtime.errors import InvalidArgument

_PLAIN_DECIMAL = re.compile(r"^-?\d{1,18}(\.\d{1,12})?$")

PAISA = Decimal("0.01")
ZERO = Decimal(0)


def parse_decimal(
    text: str,
    *,
    field: str,
    max_places: int,
    positive: bool = False,
    allow_zero: bool = True,
) -> Decimal:
    """Parse a plain decimal string strictly; raise InvalidArgument naming `field` otherwise."""
    text = (text or "").strip()
    if not _PLAIN_DECIMAL.match(text):
        raise InvalidArgument(
            f"{field} must be a plain decimal number such as '1542.35'",
            reason="INVALID_DECIMAL",
            field=field,
        )
    try:
        value = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid text
        raise InvalidArgument(f"{field} is not a number", reason="INVALID_DECIMAL", field=field) from exc
    if places(value) > max_places:
        raise InvalidArgument(
            f"{field} has more than {max_places} fraction digits",
            reason="TOO_PRECISE",
            field=field,
        )
    if positive and value <= 0:
        raise InvalidArgument(f"{field} must be positive", reason="NOT_POSITIVE", field=field)
    if not allow_zero and value == 0:
        raise InvalidArgument(f"{field} must not be zero", reason="ZERO", field=field)
    return value


def places(value: Decimal) -> int:
    """Number of significant fraction digits (trailing zeros do not count)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def to_proto(value: Decimal | None) -> decimal_pb2.Decimal | None:
    return None if value is None else decimal_pb2.Decimal(value=format_decimal(value))


def from_proto(
    message: decimal_pb2.Decimal,
    *,
    field: str,
    max_places: int,
    positive: bool = False,
) -> Decimal:
    return parse_decimal(message.value, field=field, max_places=max_places, positive=positive)


def format_decimal(value: Decimal) -> str:
    """Canonical plain string: no exponent, no trailing zeros beyond what the value carries."""
    return format(value, "f")


def round_money(value: Decimal) -> Decimal:
    """Round to paise, half up (the convention of Indian contract notes)."""
    return value.quantize(PAISA, rounding=ROUND_HALF_UP)


def round_money_up(value: Decimal) -> Decimal:
    """Round up to the next paisa: what a block must cover."""
    return value.quantize(PAISA, rounding=ROUND_CEILING)
