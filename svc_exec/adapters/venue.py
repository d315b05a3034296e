"""Venue profiles: how svc_exec's FIX session speaks to one venue, as a file, not code.

A profile is a quickfix session file (`config/venues/<name>.cfg`) with svc_exec's own
settings in its [SESSION] section: `ExecIDScope` and `Dialect`. It fixes the BeginString
(FIX.4.2 or FIX.4.4), the comp ids, heartbeat, reset policy, the data dictionary and how
strict quickfix is with incoming messages. Three ship with svc_exec:

- `fix44`: a venue that follows FIX 4.4 to the letter (the exchange simulator; default);
- `fix42`: a venue that follows FIX 4.2;
- `fix44-tolerant`: a FIX 4.4 venue as many are (4.2-style fills, custom tags, missing
  optional tags), with a tolerant data dictionary derived from quickfix's FIX44.xml.

`BROKERMESH_VENUE_PROFILE` names a profile or gives the path of one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from svc_exec.domain.dialect import Dialect, FixVersion, Speech
from svc_runtime.fix import data_dictionary

PROFILES_DIR = Path(__file__).resolve().parent.parent / "config" / "venues"
DEFAULT_PROFILE = "fix44"
DIALECT = "Dialect"

# ExecType values FIX 4.2 defines and FIX 4.4 venues still send.
_EXEC_TYPES_4_2 = {"1": "PARTIAL_FILL", "2": "FILL"}
_EXECUTION_REPORT = "8"


def profile_path(name_or_path: str) -> Path:
    """The profile file for a name (`fix44`, `fix42`, `fix44-tolerant`) or a path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".cfg" or candidate.is_absolute() or "/" in name_or_path:
        if not candidate.exists():
            raise FileNotFoundError(f"venue profile file {candidate} does not exist")
        return candidate
    path = PROFILES_DIR / f"{name_or_path}.cfg"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.cfg")))
        raise ValueError(f"unknown venue profile {name_or_path!r} (known: {known}; or give a .cfg path)")
    return path


def tolerant_dictionary(source: Path, target: Path) -> Path:
    """A copy of a quickfix data dictionary that lets through what common FIX 4.4 venues
    send: ExecType 1/2, and ExecutionReports missing body fields the standard requires
    (svc_exec's dialect table judges what it needs instead)."""
    tree = ET.parse(source)
    root = tree.getroot()
    for field in root.iter("field"):
        if field.get("number") == "150" and field.get("type"):
            present = {value.get("enum") for value in field.findall("value")}
            for enum, description in _EXEC_TYPES_4_2.items():
                if enum not in present:
                    ET.SubElement(field, "value", enum=enum, description=description)
    messages = root.find("messages")
    for message in messages if messages is not None else []:
        if message.get("msgtype") == _EXECUTION_REPORT:
            for part in message.iter():
                if part.get("required") == "Y":
                    part.set("required", "N")
    target.parent.mkdir(parents=True, exist_ok=True)
    tree.write(target, encoding="unicode")
    return target


def dictionaries(workdir: Path, template: str) -> dict[str, Path]:
    """The placeholders a profile may use for its data dictionary (the tolerant one is
    written only for a profile that uses it)."""
    fix44 = data_dictionary("FIX44")
    found = {
        "data_dictionary": fix44,
        "fix44_dictionary": fix44,
        "fix42_dictionary": data_dictionary("FIX42"),
    }
    if "{fix44_tolerant_dictionary}" in template:
        found["fix44_tolerant_dictionary"] = tolerant_dictionary(fix44, workdir / "FIX44-tolerant.xml")
    return found


def speech(begin_string: str, dialect: str) -> Speech:
    try:
        version = FixVersion(begin_string)
    except ValueError as error:
        raise ValueError(f"BeginString must be FIX.4.2 or FIX.4.4, not {begin_string!r}") from error
    try:
        return Speech(version, Dialect(dialect.upper()))
    except ValueError as error:
        raise ValueError(f"{DIALECT} must be STANDARD or TOLERANT, not {dialect!r}") from error
