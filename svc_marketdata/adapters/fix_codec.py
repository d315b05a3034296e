"""Reading FIX 4.4 market-data and security-list messages from their raw text.

quickfix has already validated each message against FIX44.xml when it reaches us. Reading
the raw tag text (instead of quickfix's typed fields, which are C doubles, and its per-group
accessors, which cost a Python↔C++ call per field) keeps prices exact and parsing cheap.

Repeating groups are recognized by their delimiter tag (the first field of every entry, which
FIX requires first) and by the set of tags an entry may hold; any other tag after the group
belongs to the message body.
"""

from __future__ import annotations

import functools
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from svc_marketdata.domain.instruments import DEFAULT_TICK_SIZE, Instrument, is_valid_symbol, normalize_symbol
from svc_marketdata.domain.quotes import MarketDataEntry, SymbolUpdate
from svc_runtime.decimals import PAISA, places
from svc_runtime.fix import data_dictionary

log = logging.getLogger(__name__)

SOH = "\x01"
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NS_PER_DAY = 86_400 * 1_000_000_000


def group_tags(msg_type: str, count_field: str) -> frozenset[str]:
    """Every tag an entry of repeating group `count_field` of message `msg_type` may hold
    (nested components and groups included), from the FIX44.xml data dictionary."""
    root = _dictionary()
    numbers = {f.get("name"): f.get("number") for f in _section(root, "fields")}
    components = {c.get("name"): c for c in _section(root, "components")}

    def find_group(element: ET.Element) -> ET.Element | None:
        for child in element:
            if child.tag == "group" and child.get("name") == count_field:
                return child
            inner = components.get(child.get("name", "")) if child.tag == "component" else child
            if child.tag in ("component", "group") and inner is not None:
                found = find_group(inner)
                if found is not None:
                    return found
        return None

    def collect(element: ET.Element, into: set[str]) -> set[str]:
        for child in element:
            if child.tag in ("field", "group"):
                into.add(numbers[child.get("name")])
            if child.tag == "group":
                collect(child, into)
            elif child.tag == "component":
                collect(components[child.get("name")], into)
        return into

    message = next(m for m in _section(root, "messages") if m.get("msgtype") == msg_type)
    group = find_group(message)
    if group is None:
        raise LookupError(f"{count_field} is not a group of message {msg_type}")
    return frozenset(collect(group, set()))


def _section(root: ET.Element, name: str) -> ET.Element:
    section = root.find(name)
    if section is None:
        raise LookupError(f"data dictionary has no <{name}>")
    return section


@functools.cache
def _dictionary() -> ET.Element:
    return ET.parse(data_dictionary()).getroot()


_X_ENTRY_TAGS = group_tags("X", "NoMDEntries")
_W_ENTRY_TAGS = group_tags("W", "NoMDEntries")
_Y_ENTRY_TAGS = group_tags("y", "NoRelatedSym")


class FixFormatError(ValueError):
    pass


def split_fields(raw: str) -> list[tuple[str, str]]:
    out = []
    for part in raw.split(SOH):
        if part:
            tag, _, value = part.partition("=")
            out.append((tag, value))
    return out


def utc_ns(date_text: str, time_text: str) -> int:
    """`YYYYMMDD` and `HH:MM:SS[.fff…]` (UTC) → nanoseconds since the epoch."""
    try:
        days = (
            date(int(date_text[0:4]), int(date_text[4:6]), int(date_text[6:8])).toordinal() - _EPOCH_ORDINAL
        )
        seconds = int(time_text[0:2]) * 3600 + int(time_text[3:5]) * 60 + int(time_text[6:8])
        fraction = time_text[9:]
        nanos = int(fraction.ljust(9, "0")[:9]) if fraction else 0
    except (ValueError, IndexError) as exc:
        raise FixFormatError(f"bad UTC time {date_text!r} {time_text!r}") from exc
    return days * _NS_PER_DAY + seconds * 1_000_000_000 + nanos


def sending_time_ns(raw: str) -> int:
    """SendingTime (52), `YYYYMMDD-HH:MM:SS[.fff]`, in ns; 0 if absent."""
    start = raw.find(SOH + "52=")
    if start < 0:
        return 0
    start += 4
    end = raw.find(SOH, start)
    text = raw[start:end]
    return utc_ns(text[:8], text[9:])


def _price(text: str | None) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise FixFormatError(f"bad price {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise FixFormatError(f"bad price {text!r}")
    # Canonical rupee form ("1542.30") when exact; never round a finer price away.
    return value.quantize(PAISA) if places(value) <= 2 else value


def _quantity(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise FixFormatError(f"bad quantity {text!r}") from None
    if not value.is_finite() or value < 0 or value != value.to_integral_value():
        raise FixFormatError(f"bad quantity {text!r}")
    return int(value)


def _entry(fields: dict[str, str], action: str) -> MarketDataEntry:
    position = fields.get("290")
    return MarketDataEntry(
        entry_type=fields.get("269", ""),
        action=action,
        price=_price(fields.get("270")),
        size=_quantity(fields.get("271")),
        position=int(position) if position else None,
        previous_day="4" in fields.get("286", "").split(),
    )


def _entry_time(fields: dict[str, str], default_date: str) -> int:
    """MDEntryDate/MDEntryTime in ns, 0 if the entry carries no time."""
    time_text = fields.get("273")
    if not time_text:
        return 0
    return utc_ns(fields.get("272") or default_date, time_text)


def _groups(
    raw: str, count_tag: str, delimiter: str, in_entry: Callable[[str], bool]
) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(body fields, group entries) of a message with one repeating group; `in_entry` tells
    which tags an entry may hold."""
    body: dict[str, str] = {}
    entries: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    in_group = False
    for tag, value in split_fields(raw):
        if tag == count_tag:
            in_group = True
            continue
        if in_group and tag == delimiter:
            current = {tag: value}
            entries.append(current)
        elif in_group and current is not None and in_entry(tag) and tag not in current:
            current[tag] = value
        else:
            body[tag] = value
    return body, entries


def parse_incremental(raw: str) -> list[SymbolUpdate]:
    """MarketDataIncrementalRefresh (35=X) → one update per symbol it touches."""
    sent_ns = sending_time_ns(raw)
    body, entries = _groups(raw, "268", "279", _X_ENTRY_TAGS.__contains__)
    default_date = body.get("52", "")[:8]
    by_symbol: dict[str, list[MarketDataEntry]] = {}
    times: dict[str, int] = {}
    symbol = ""
    for fields in entries:
        # An entry without an instrument continues the previous entry's instrument.
        symbol = normalize_symbol(fields.get("55", symbol))
        if not symbol:
            raise FixFormatError("incremental refresh entry without a symbol")
        by_symbol.setdefault(symbol, []).append(_entry(fields, fields["279"]))
        times[symbol] = max(_entry_time(fields, default_date), times.get(symbol, 0))
    # A symbol's time is its latest entry time; without any, the message's SendingTime.
    return [SymbolUpdate(s, tuple(e), times[s] or sent_ns) for s, e in by_symbol.items()]


def parse_snapshot(raw: str) -> SymbolUpdate:
    """MarketDataSnapshotFullRefresh (35=W) → the symbol's full state."""
    sent_ns = sending_time_ns(raw)
    body, entries = _groups(raw, "268", "269", _W_ENTRY_TAGS.__contains__)
    symbol = normalize_symbol(body.get("55", ""))
    if not symbol:
        raise FixFormatError("snapshot without a symbol")
    default_date = body.get("52", "")[:8]
    at = max((_entry_time(f, default_date) for f in entries), default=0) or sent_ns
    return SymbolUpdate(symbol, tuple(_entry(f, "0") for f in entries), at, snapshot=True)


@dataclass(frozen=True)
class SecurityListPart:
    """One SecurityList message: its request id, result (560; "0" = valid), and instruments."""

    request_id: str
    result: str
    last_fragment: bool
    instruments: list[Instrument]


def parse_security_list(raw: str) -> SecurityListPart:
    """SecurityList (35=y) → instruments. Fields per instrument: Symbol (55), SecurityDesc
    (107, the company name; Issuer 106 if absent), SecurityID (48) when SecurityIDSource (22)
    is 4 = ISIN, RoundLot (561) = lot size, MinPriceIncrement (969) = tick size when present
    (NSE's 0.05 otherwise), Text (58) = sector."""
    body, entries = _groups(raw, "146", "55", _Y_ENTRY_TAGS.__contains__)
    instruments = []
    for fields in entries:
        symbol = normalize_symbol(fields["55"])
        if not is_valid_symbol(symbol):
            log.warning("security list: skipping a malformed symbol", extra={"symbol": symbol})
            continue
        try:
            lot = _quantity(fields.get("561")) or 1
            tick = _price_any(fields.get("969")) or DEFAULT_TICK_SIZE
        except FixFormatError:
            log.warning("security list: skipping an instrument with bad fields", extra={"symbol": symbol})
            continue
        instruments.append(
            Instrument(
                symbol=symbol,
                company_name=fields.get("107") or fields.get("106") or symbol,
                sector=fields.get("58", ""),
                tick_size=tick,
                lot_size=lot,
                isin=fields.get("48", "") if fields.get("22") == "4" else "",
            )
        )
    return SecurityListPart(
        request_id=body.get("320", ""),
        result=body.get("560", "0"),
        last_fragment=body.get("893", "Y") == "Y",
        instruments=instruments,
    )


def _price_any(text: str | None) -> Decimal | None:
    """A positive decimal kept as sent (tick sizes may have more places than prices)."""
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise FixFormatError(f"bad decimal {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise FixFormatError(f"bad decimal {text!r}")
    return value
