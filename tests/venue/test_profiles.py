"""Venue profiles and the dialect table, without a venue: every shipped profile loads in
quickfix, the tolerant dictionary lets through what it should, and each ExecType maps to
one broker outcome per dialect."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import quickfix as fix

from svc_exec.adapters import venue
from svc_exec.domain.dialect import (
    Acknowledged,
    Dialect,
    FixVersion,
    Publish,
    Speech,
    Unmappable,
    fill_status,
    interpret,
)
from svc_exec.domain.model import ExecKind, OrdStatus
from svc_runtime.fix import data_dictionary, load_settings

STRICT_44 = Speech(FixVersion.FIX44, Dialect.STANDARD)
TOLERANT_44 = Speech(FixVersion.FIX44, Dialect.TOLERANT)
STANDARD_42 = Speech(FixVersion.FIX42, Dialect.STANDARD)


@pytest.mark.parametrize(
    ("name", "begin_string", "dialect"),
    [
        ("fix44", "FIX.4.4", "STANDARD"),
        ("fix42", "FIX.4.2", "STANDARD"),
        ("fix44-tolerant", "FIX.4.4", "TOLERANT"),
    ],
)
def test_every_shipped_profile_loads_in_quickfix(
    tmp_path: Path, name: str, begin_string: str, dialect: str
) -> None:
    template = venue.profile_path(name)
    settings = load_settings(
        template,
        tmp_path / "rendered.cfg",
        host="127.0.0.1",
        port=1,
        store_dir=tmp_path / "store",
        log_dir=tmp_path / "log",
        **venue.dictionaries(tmp_path, template.read_text()),
    )
    (session_id,) = list(settings.getSessions())
    assert session_id.getBeginString().getValue() == begin_string
    dictionary = settings.get(session_id)
    assert dictionary.getString("Dialect") == dialect
    assert Path(dictionary.getString("DataDictionary")).exists()
    venue.speech(begin_string, dialect)


def test_profiles_are_found_by_name_or_path_and_unknown_names_are_refused(tmp_path: Path) -> None:
    assert venue.profile_path("fix42").name == "fix42.cfg"
    own = tmp_path / "my-venue.cfg"
    own.write_text(venue.profile_path("fix44").read_text())
    assert venue.profile_path(str(own)) == own
    with pytest.raises(ValueError, match="fix44-tolerant"):
        venue.profile_path("fix43")
    with pytest.raises(FileNotFoundError):
        venue.profile_path(str(tmp_path / "missing.cfg"))


def test_the_tolerant_dictionary_allows_4_2_fills_and_requires_nothing_of_a_report(tmp_path: Path) -> None:
    path = venue.tolerant_dictionary(data_dictionary("FIX44"), tmp_path / "tolerant.xml")
    root = ET.parse(path).getroot()
    exec_type = next(f for f in root.iter("field") if f.get("number") == "150")
    assert {"1", "2", "F"} <= {v.get("enum") for v in exec_type.findall("value")}
    report = next(m for m in root.find("messages") if m.get("msgtype") == "8")  # type: ignore[union-attr]
    assert not [p.get("name") for p in report.iter() if p.get("required") == "Y"]
    fix.DataDictionary(str(path))  # quickfix reads it


@pytest.mark.parametrize(
    ("speech", "exec_type", "trans", "meaning"),
    [
        (STRICT_44, "F", "", Publish(ExecKind.TRADE)),
        (STRICT_44, "I", "", Publish(ExecKind.ORDER_STATUS)),
        (STRICT_44, "2", "", "exec_type"),
        (TOLERANT_44, "1", "", Publish(ExecKind.TRADE)),
        (TOLERANT_44, "2", "", Publish(ExecKind.TRADE)),
        (TOLERANT_44, "F", "", Publish(ExecKind.TRADE)),
        (TOLERANT_44, "0", "3", Publish(ExecKind.ORDER_STATUS)),
        (STANDARD_42, "2", "0", Publish(ExecKind.TRADE)),
        (STANDARD_42, "2", "3", Publish(ExecKind.ORDER_STATUS)),
        (STANDARD_42, "F", "0", "exec_type"),
        (STANDARD_42, "2", "1", "trade_correction"),
        (STANDARD_42, "A", "0", Acknowledged),
        (STRICT_44, "D", "", "restated"),
        (STRICT_44, "H", "", "trade_cancel"),
        (STRICT_44, "3", "", "done_for_day"),
        (STRICT_44, "Z", "", "exec_type"),
    ],
)
def test_each_exec_type_has_one_meaning_per_dialect(
    speech: Speech, exec_type: str, trans: str, meaning: object
) -> None:
    found = interpret(speech, exec_type, trans)
    if isinstance(meaning, str):
        assert isinstance(found, Unmappable) and found.reason == meaning
    elif isinstance(meaning, type):
        assert isinstance(found, meaning)
    else:
        assert found == meaning


def test_a_4_2_fill_takes_its_status_from_the_quantities_when_the_report_does_not_say() -> None:
    assert fill_status(None, 10, 10) is OrdStatus.FILLED
    assert fill_status(None, 4, 10) is OrdStatus.PARTIALLY_FILLED
    assert fill_status(OrdStatus.NEW, 10, 10) is OrdStatus.FILLED
    assert fill_status(OrdStatus.PARTIALLY_FILLED, 10, 10) is OrdStatus.FILLED
    assert fill_status(OrdStatus.PARTIALLY_FILLED, 4, 0) is OrdStatus.PARTIALLY_FILLED
    assert fill_status(OrdStatus.CANCELED, 4, 10) is OrdStatus.CANCELED
