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
import re
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

    def collect(element: ET.Element, into: set[str]) -> set[str]:
        for child in element:
            if child.tag in ("field", "group"):
                into.add(numbers[child.get("name")])
            if child.tag == "group":
                collect(child, into)
            elif child.tag == "component":
                collect(components[child.get("name")], into)
        return into

    return frozenset(collect(_find_group(root, msg_type, count_field, components), set()))


def _find_group(
    root: ET.Element, msg_type: str, count_field: str, components: dict[str | None, ET.Element]
) -> ET.Element:
    def find(element: ET.Element) -> ET.Element | None:
        for child in element:
            if child.tag == "group" and child.get("name") == count_field:
                return child
            inner = components.get(child.get("name", "")) if child.tag == "component" else child
            if child.tag in ("component", "group") and inner is not None:
                found = find(inner)
                if found is not None:
                    return found
        return None

    message = next(m for m in _section(root, "messages") if m.get("msgtype") == msg_type)
    group = find(message)
    if group is None:
        raise LookupError(f"{count_field} is not a group of message {msg_type}")
    return group


def _section(root: ET.Element, name: str) -> ET.Element:
    section = root.find(name)
    if section is None:
        raise LookupError(f"data dictionary has no <{name}>")
    return section


@functools.cache
def _dictionary() -> ET.Element:
    return ET.parse(data_dictionary()).getroot()


_W_ENTRY_TAGS = group_tags("W", "NoMDEntries")
_Y_ENTRY_TAGS = group_tags("y", "NoRelatedSym")


class FixFormatError(ValueError):
    pass


_FIELD = re.compile(r"(\d+)=([^\x01]*)\x01")
# Prices, dates and times repeat across ticks: parsing each distinct text once makes the hot
# path a dictionary lookup. Bounded: cleared when full.
_CACHE_LIMIT = 100_000
_prices: dict[str, Decimal] = {}
_days: dict[str, int] = {}
_times: dict[str, int] = {}


def _day_ns(date_text: str) -> int:
    day = _days.get(date_text)
    if day is None:
        try:
            ordinal = date(int(date_text[0:4]), int(date_text[4:6]), int(date_text[6:8])).toordinal()
        except (ValueError, IndexError) as exc:
            raise FixFormatError(f"bad UTC date {date_text!r}") from exc
        day = (ordinal - _EPOCH_ORDINAL) * _NS_PER_DAY
        if len(_days) > 1000:
            _days.clear()
        _days[date_text] = day
    return day


def _time_ns(time_text: str) -> int:
    value = _times.get(time_text)
    if value is None:
        try:
            seconds = int(time_text[0:2]) * 3600 + int(time_text[3:5]) * 60 + int(time_text[6:8])
            fraction = time_text[9:]
            nanos = int(fraction.ljust(9, "0")[:9]) if fraction else 0
        except (ValueError, IndexError) as exc:
            raise FixFormatError(f"bad UTC time {time_text!r}") from exc
        if len(time_text) < 8 or time_text[2] != ":" or time_text[5] != ":":
            raise FixFormatError(f"bad UTC time {time_text!r}")
        value = seconds * 1_000_000_000 + nanos
        if len(_times) > _CACHE_LIMIT:
            _times.clear()
        _times[time_text] = value
    return value


def utc_ns(date_text: str, time_text: str) -> int:
    """`YYYYMMDD` and `HH:MM:SS[.fff…]` (UTC) → nanoseconds since the epoch."""
    return _day_ns(date_text) + _time_ns(time_text)


def _price(text: str | None) -> Decimal | None:
    if not text:
        return None
    value = _prices.get(text)
    if value is None:
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise FixFormatError(f"bad price {text!r}") from None
        if not value.is_finite() or value <= 0:
            raise FixFormatError(f"bad price {text!r}")
        # Canonical rupee form ("1542.30") when exact; never round a finer price away.
        if places(value) <= 2:
            value = value.quantize(PAISA)
        if len(_prices) > _CACHE_LIMIT:
            _prices.clear()
        _prices[text] = value
    return value


def _quantity(text: str | None) -> int | None:
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise FixFormatError(f"bad quantity {text!r}") from None
    if not value.is_finite() or value < 0 or value != value.to_integral_value():
        raise FixFormatError(f"bad quantity {text!r}")
    return int(value)


def _entry(fields: dict[str, str], action: str) -> MarketDataEntry:
    position = fields.get("290")
    flags = fields.get("286")
    return MarketDataEntry(
        fields.get("269", ""),
        action,
        _price(fields.get("270")),
        _quantity(fields.get("271")),
        int(position) if position else None,
        flags is not None and "4" in flags.split(),
    )


def _entry_time(fields: dict[str, str], default_date: str) -> int:
    """MDEntryDate/MDEntryTime in ns, 0 if the entry carries no time."""
    time_text = fields.get("273")
    if not time_text:
        return 0
    return _day_ns(fields.get("272") or default_date) + _time_ns(time_text)


def _group_entries(
    raw: str, count_tag: str, delimiter: str, in_entry: Callable[[str], bool]
) -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """(body fields, group entries as their fields in order) of a message with one repeating
    group; `in_entry` tells which tags an entry may hold (nested groups included)."""
    body: dict[str, str] = {}
    entries: list[list[tuple[str, str]]] = []
    in_group = False
    for tag, value in _FIELD.findall(raw):
        if tag == count_tag and not in_group:
            in_group = True
        elif in_group and tag == delimiter:
            entries.append([(tag, value)])
        elif in_group and entries and in_entry(tag):
            entries[-1].append((tag, value))
        else:
            body[tag] = value
    return body, entries


def _groups(
    raw: str, delimiter: str, entry_tags: frozenset[str]
) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The hot-path variant for market data: body fields, and each entry as a dict of the
    first value of each tag (these groups nest no groups of their own that we read)."""
    body: dict[str, str] = {}
    entries: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for tag, value in _FIELD.findall(raw):
        if tag == delimiter and (current is not None or "268" in body):
            current = {tag: value}
            entries.append(current)
        elif current is not None and tag in entry_tags:
            if tag not in current:
                current[tag] = value
        else:
            body[tag] = value
    return body, entries


def _sending_ns(body: dict[str, str]) -> int:
    text = body.get("52", "")
    return utc_ns(text[:8], text[9:]) if text else 0


# One incremental-refresh entry as read: (MDUpdateAction, MDEntryType, Symbol, MDEntryPx,
# MDEntrySize, MDEntryDate, MDEntryTime, OpenCloseSettlFlag, MDEntryPositionNo); "" if absent.
RawEntry = tuple[str, str, str, str, str, str, str, str, str]
_X_READ = ("279", "269", "55", "270", "271", "272", "273", "286", "290")
# Sent by venues (the simulator among them) but not needed for a quote: allowed, not read.
_X_SKIPPED = frozenset({"346"})


def group_order(msg_type: str, count_field: str) -> list[str]:
    """The tags of a group's entries in the data dictionary's order (nested groups by their
    count tag), which is the order quickfix writes them in, whatever order they came in."""
    root = _dictionary()
    numbers = {f.get("name"): f.get("number") for f in _section(root, "fields")}
    components = {c.get("name"): c for c in _section(root, "components")}
    group = _find_group(root, msg_type, count_field, components)
    order: list[str] = []

    def walk(element: ET.Element) -> None:
        for child in element:
            if child.tag in ("field", "group"):
                order.append(numbers[child.get("name")])
            elif child.tag == "component":
                walk(components[child.get("name")])

    walk(group)
    return order


def _entry_pattern() -> re.Pattern[str] | None:
    """One regular expression for a whole 35=X entry of the usual shape: the fields we read
    and the ones we skip, each optional, in the dictionary's order, and nothing else up to
    the next entry or the end of the group. None if the dictionary orders the fields we read
    differently from `_X_READ` (the general reader then does all the work)."""
    order = group_order("X", "NoMDEntries")
    if [t for t in order if t in _X_READ] != list(_X_READ):
        return None
    parts = [r"\x01279=([^\x01]*)"]
    for tag in order[1:]:
        if tag in _X_READ:
            parts.append(rf"(?:\x01{tag}=([^\x01]*))?")
        elif tag in _X_SKIPPED:
            parts.append(rf"(?:\x01{tag}=[^\x01]*)?")
    # After an entry: the next entry, the message's own fields after the group, or the trailer.
    parts.append(r"(?=\x01(?:279|813|814|10)=)")
    return re.compile("".join(parts))


_X_ENTRY = _entry_pattern()


def _field_text(raw: str, tag: str, start: int = 0) -> tuple[str, int]:
    """The value of the first `tag` at or after `start` and where it is (-1 if absent)."""
    at = raw.find(f"\x01{tag}=", start)
    if at < 0:
        return "", -1
    begin = at + len(tag) + 2
    end = raw.find(SOH, begin)
    return raw[begin : end if end >= 0 else len(raw)], at


def _incremental_entries(raw: str) -> tuple[str, list[RawEntry]]:
    """SendingTime and the entries of a 35=X: the whole group in one regular-expression pass
    when every entry has the usual shape (checked by counting them against NoMDEntries),
    field by field otherwise."""
    sent, _ = _field_text(raw, "52")
    if _X_ENTRY is not None:
        count, at = _field_text(raw, "268")
        if at >= 0:
            entries: list[RawEntry] = _X_ENTRY.findall(raw, at)
            if count.isdigit() and len(entries) == int(count):
                return sent, entries
    return sent, _entries_field_by_field(raw)


def _entries_field_by_field(raw: str) -> list[RawEntry]:
    """The general reader: any fields, in any order (MDUpdateAction 279 starts an entry)."""
    entries: list[RawEntry] = []
    action: str | None = None
    kind = symbol = price = size = date = at = flags = position = ""
    for tag, value in _FIELD.findall(raw):
        if tag == "279":
            if action is not None:
                entries.append((action, kind, symbol, price, size, date, at, flags, position))
            action, kind, symbol, price, size, date, at, flags, position = (
                value,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            )
        elif action is None:
            continue
        elif tag == "270":
            price = value
        elif tag == "269":
            kind = value
        elif tag == "271":
            size = value
        elif tag == "55":
            symbol = value
        elif tag == "273":
            at = value
        elif tag == "272":
            date = value
        elif tag == "290":
            position = value
        elif tag == "286":
            flags = value
    if action is not None:
        entries.append((action, kind, symbol, price, size, date, at, flags, position))
    return entries


# Entries repeat (the same price and size, another time): each distinct one is made once.
_entries: dict[tuple[str, str, str, str, str, str], MarketDataEntry] = {}


def _market_data_entry(fields: tuple[str, str, str, str, str, str]) -> MarketDataEntry:
    """(MDUpdateAction, MDEntryType, MDEntryPx, MDEntrySize, OpenCloseSettlFlag,
    MDEntryPositionNo) → the entry, made once per distinct text."""
    entry = _entries.get(fields)
    if entry is None:
        action, kind, price, size, flags, position = fields
        entry = MarketDataEntry(
            kind,
            action,
            _price(price),
            _quantity(size),
            int(position) if position else None,
            "4" in flags.split(),
        )
        if len(_entries) > _CACHE_LIMIT:
            _entries.clear()
        _entries[fields] = entry
    return entry


_symbol_names: dict[str, str] = {}


def parse_incremental(raw: str) -> list[SymbolUpdate]:
    """MarketDataIncrementalRefresh (35=X) → one update per symbol it touches, in the order
    the symbols first appear (an entry without Symbol continues the previous entry's
    instrument). A symbol's time is its latest entry time; without any, SendingTime."""
    sent, entries = _incremental_entries(raw)
    by_symbol: dict[str, list[MarketDataEntry]] = {}
    times: dict[str, int] = {}
    default_date = sent[:8]
    name = ""
    # Entries of one message mostly share their time: it is converted once.
    stamp, moment = ("", ""), 0
    for action, kind, raw_name, price, size, day, at, flags, position in entries:
        if raw_name:
            name = _symbol_names.get(raw_name) or _symbol_name(raw_name)
        if not name:
            raise FixFormatError("incremental refresh entry without a symbol")
        entry = _market_data_entry((action, kind, price, size, flags, position))
        listed = by_symbol.get(name)
        if listed is None:
            listed = by_symbol[name] = []
        listed.append(entry)
        if at:
            if (day, at) != stamp:
                stamp, moment = (day, at), _day_ns(day or default_date) + _time_ns(at)
            if moment > times.get(name, 0):
                times[name] = moment
    sent_ns = utc_ns(sent[:8], sent[9:]) if sent else 0
    return [
        SymbolUpdate(name, tuple(listed), times.get(name) or sent_ns) for name, listed in by_symbol.items()
    ]


def _symbol_name(raw_name: str) -> str:
    if len(_symbol_names) > _CACHE_LIMIT:
        _symbol_names.clear()
    name = _symbol_names[raw_name] = normalize_symbol(raw_name)
    return name


def parse_snapshot(raw: str) -> SymbolUpdate:
    """MarketDataSnapshotFullRefresh (35=W) → the symbol's full state."""
    body, entries = _groups(raw, "269", _W_ENTRY_TAGS)
    sent_ns = _sending_ns(body)
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
    """SecurityList (35=y) → instruments, read with the exchange's FIX 4.4 mapping (FIX 4.4
    has no MinPriceIncrement nor a previous close in a SecurityList):

    - Symbol (55); SecurityDesc (107) = company name (Issuer 106, then the symbol, if absent);
      SecurityID (48) when SecurityIDSource (22) is 4 = ISIN; RoundLot (561) = lot size.
    - Stipulations (232): StipulationType (233) MININCR → tick size, SECTOR → sector, with the
      value in StipulationValue (234). Text (58) is the sector when no stipulation gives one;
      MinPriceIncrement (969) is honoured if a venue's dictionary allows it; NSE's 0.05 else.
    - Events (864): EventType (865) 99 with EventText (868) PREVIOUS_CLOSE → EventPx (867) is
      the previous close.
    """
    body, entries = _group_entries(raw, "146", "55", _Y_ENTRY_TAGS.__contains__)
    instruments = []
    for fields in entries:
        instrument = _instrument(fields)
        if instrument is not None:
            instruments.append(instrument)
    return SecurityListPart(
        request_id=body.get("320", ""),
        result=body.get("560", "0"),
        last_fragment=body.get("893", "Y") == "Y",
        instruments=instruments,
    )


def _instrument(fields: list[tuple[str, str]]) -> Instrument | None:
    first = dict(reversed(fields))
    symbol = normalize_symbol(first["55"])
    if not is_valid_symbol(symbol):
        log.warning("security list: skipping a malformed symbol", extra={"symbol": symbol})
        return None
    stipulations: dict[str, str] = {}
    events: list[dict[str, str]] = []
    kind = ""
    for tag, value in fields:
        if tag == "233":
            kind = value
        elif tag == "234" and kind:
            stipulations.setdefault(kind, value)
            kind = ""
        elif tag == "865":
            events.append({"865": value})
        elif tag in ("866", "867", "868") and events:
            events[-1].setdefault(tag, value)
    previous_close_text = next(
        (e.get("867") for e in events if e.get("865") == "99" and e.get("868") == "PREVIOUS_CLOSE"), None
    )
    try:
        lot = _quantity(first.get("561")) or 1
        tick = _price_any(stipulations.get("MININCR") or first.get("969")) or DEFAULT_TICK_SIZE
        previous_close = _price(previous_close_text)
    except FixFormatError:
        log.warning("security list: skipping an instrument with bad fields", extra={"symbol": symbol})
        return None
    return Instrument(
        symbol=symbol,
        company_name=first.get("107") or first.get("106") or symbol,
        sector=stipulations.get("SECTOR") or first.get("58", ""),
        tick_size=tick,
        lot_size=lot,
        previous_close=previous_close,
        isin=first.get("48", "") if first.get("22") == "4" else "",
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
