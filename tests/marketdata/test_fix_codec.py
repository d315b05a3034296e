"""Reading FIX market-data messages from raw text, as quickfix hands them over."""

from __future__ import annotations

from decimal import Decimal

import pytest
import quickfix as fix
import quickfix44 as fix44

from svc_marketdata.adapters import fix_codec
from svc_marketdata.adapters.fix_codec import FixFormatError
from svc_runtime.fix import data_dictionary, set_text

SENDING_TIME = "20260117-10:45:01.250"


def message(
    msg_type: str, body: list[tuple[int, str]], groups: list[tuple[int, int, list[list[tuple[int, str]]]]]
) -> str:
    """A FIX 4.4 message as quickfix serializes it: header, body fields, groups."""
    msg = fix.Message()
    header = msg.getHeader()
    header.setField(fix.BeginString("FIX.4.4"))
    header.setField(fix.MsgType(msg_type))
    header.setField(fix.StringField(52, SENDING_TIME))
    for tag, value in body:
        set_text(msg, tag, value)
    for count_tag, delimiter, entries in groups:
        for entry in entries:
            group = fix.Group(count_tag, delimiter)
            for tag, value in entry:
                set_text(group, tag, value)
            msg.addGroup(group)
    return msg.toString()


def test_incremental_refresh_groups_entries_by_symbol_with_exact_prices() -> None:
    raw = message(
        "X",
        [(262, "mdr_1")],
        [
            (
                268,
                279,
                [
                    [
                        (279, "1"),
                        (269, "2"),
                        (55, "INFY"),
                        (270, "1542.35"),
                        (271, "10"),
                        (272, "20260117"),
                        (273, "10:45:01.123"),
                    ],
                    [(279, "1"), (269, "B"), (271, "123456")],  # same instrument as the previous entry
                    [(279, "0"), (269, "0"), (55, "tcs"), (270, "3500.1"), (271, "5")],
                    [(279, "2"), (269, "1"), (55, "TCS")],
                ],
            )
        ],
    )
    updates = {u.symbol: u for u in fix_codec.parse_incremental(raw)}
    assert set(updates) == {"INFY", "TCS"}
    infy = updates["INFY"].entries
    assert [(e.entry_type, e.price, e.size) for e in infy] == [
        ("2", Decimal("1542.35"), 10),
        ("B", None, 123456),
    ]
    assert str(infy[0].price) == "1542.35"
    tcs = updates["TCS"].entries
    assert str(tcs[0].price) == "3500.10"  # canonical paise
    assert tcs[1].action == "2"
    assert updates["INFY"].exchange_time_ns == fix_codec.utc_ns("20260117", "10:45:01.123")
    # No entry time: the message's SendingTime.
    assert updates["TCS"].exchange_time_ns == fix_codec.utc_ns("20260117", "10:45:01.250")


def test_snapshot_reads_the_symbol_and_ignores_body_fields_after_the_group() -> None:
    raw = message(
        "W",
        [(55, "INFY"), (262, "mdr_1"), (451, "12.10")],
        [
            (
                268,
                269,
                [
                    [(269, "5"), (270, "1530.25")],
                    [(269, "2"), (270, "1542.35"), (271, "3"), (273, "10:45:01.000")],
                    [(269, "0"), (270, "1542.30"), (271, "100"), (290, "1")],
                ],
            )
        ],
    )
    update = fix_codec.parse_snapshot(raw)
    assert update.snapshot and update.symbol == "INFY"
    assert [(e.entry_type, str(e.price), e.size, e.position) for e in update.entries] == [
        ("5", "1530.25", None, None),
        ("2", "1542.35", 3, None),
        ("0", "1542.30", 100, 1),
    ]


def test_security_list_maps_instrument_fields() -> None:
    raw = message(
        "y",
        [(320, "slr_1"), (322, "r1"), (560, "0"), (393, "2"), (893, "Y")],
        [
            (
                146,
                55,
                [
                    [
                        (55, "INFY"),
                        (48, "INE009A01021"),
                        (22, "4"),
                        (107, "Infosys Limited"),
                        (561, "1"),
                        (58, "IT"),
                    ],
                    [(55, "M&M"), (107, "Mahindra & Mahindra"), (561, "5")],
                ],
            )
        ],
    )
    part = fix_codec.parse_security_list(raw)
    assert part.request_id == "slr_1" and part.result == "0" and part.last_fragment
    infy, mm = part.instruments
    assert (infy.symbol, infy.company_name, infy.isin, infy.lot_size, infy.sector) == (
        "INFY",
        "Infosys Limited",
        "INE009A01021",
        1,
        "IT",
    )
    assert infy.tick_size == Decimal("0.05")
    assert (mm.symbol, mm.lot_size, mm.isin, mm.sector) == ("M&M", 5, "", "")


def test_security_list_reads_stipulations_and_the_previous_close_event() -> None:
    """exchange_sim's FIX 4.4 mapping: tick size and sector as Stipulations, the previous
    close as an instrument event."""
    msg = fix.Message()
    msg.getHeader().setField(fix.BeginString("FIX.4.4"))
    msg.getHeader().setField(fix.MsgType("y"))
    for tag, value in ((320, "slr_1"), (322, "r1"), (560, "0")):
        set_text(msg, tag, value)
    related = fix44.SecurityList.NoRelatedSym()
    set_text(related, 55, "TCS")
    set_text(related, 107, "Tata Consultancy Services")
    set_text(related, 167, "CS")
    event = fix44.SecurityList.NoRelatedSym.NoEvents()
    for tag, value in ((865, "99"), (867, "3500.1"), (868, "PREVIOUS_CLOSE")):
        set_text(event, tag, value)
    related.addGroup(event)
    for kind, value in (("SECTOR", "Information Technology"), ("MININCR", "0.10")):
        stipulation = fix44.SecurityList.NoRelatedSym.NoStipulations()
        set_text(stipulation, 233, kind)
        set_text(stipulation, 234, value)
        related.addGroup(stipulation)
    set_text(related, 15, "INR")
    set_text(related, 561, "5")
    set_text(related, 58, "IT")
    msg.addGroup(related)
    (tcs,) = fix_codec.parse_security_list(msg.toString()).instruments
    assert (tcs.symbol, tcs.company_name, tcs.sector, tcs.lot_size) == (
        "TCS",
        "Tata Consultancy Services",
        "Information Technology",
        5,
    )
    assert str(tcs.tick_size) == "0.10" and str(tcs.previous_close) == "3500.10"


def test_security_list_fragments_and_refusals_are_visible() -> None:
    raw = message("y", [(320, "slr_1"), (322, "r1"), (560, "2"), (893, "N")], [])
    part = fix_codec.parse_security_list(raw)
    assert part.result == "2" and not part.last_fragment and part.instruments == []


@pytest.mark.parametrize(("price", "size"), [("-1", "1"), ("abc", "1"), ("10.00", "1.5"), ("NaN", "1")])
def test_unusable_numbers_are_refused(price: str, size: str) -> None:
    raw = message("X", [], [(268, 279, [[(279, "1"), (269, "2"), (55, "INFY"), (270, price), (271, size)]])])
    with pytest.raises(FixFormatError):
        fix_codec.parse_incremental(raw)


def test_group_tags_come_from_the_data_dictionary() -> None:
    assert {"279", "269", "55", "270", "271", "272", "273"} <= fix_codec.group_tags("X", "NoMDEntries")
    assert "55" not in fix_codec.group_tags("W", "NoMDEntries")
    assert {"55", "107", "561"} <= fix_codec.group_tags("y", "NoRelatedSym")


def _as_received(raw: str) -> str:
    """The text quickfix hands the application: parsed with the dictionary, written back in
    the dictionary's field order."""
    return fix.Message(raw, fix.DataDictionary(str(data_dictionary())), False).toString()


def test_the_whole_group_reader_and_the_field_by_field_reader_agree() -> None:
    entries = [
        [(279, "1"), (269, "0"), (55, "INFY"), (270, "1542.30"), (271, "40"), (346, "3"), (290, "1")],
        [(279, "1"), (269, "2"), (55, "INFY"), (270, "1542.35"), (271, "10"), (273, "10:45:01.123")],
        [(279, "1"), (269, "5"), (55, "TCS"), (270, "3400.00"), (286, "4")],
        [(279, "2"), (269, "1")],  # no symbol: TCS's
    ]
    raw = _as_received(message("X", [(262, "mdr_1")], [(268, 279, entries)]))
    sent, read = fix_codec._incremental_entries(raw)
    assert sent == SENDING_TIME
    assert read == fix_codec._entries_field_by_field(raw)
    assert read[0] == ("1", "0", "INFY", "1542.30", "40", "", "", "", "1")
    # A field the whole-group reader does not expect: the general reader takes over.
    odd = _as_received(message("X", [], [(268, 279, [[*entries[0], (58, "odd")], entries[1]])]))
    assert fix_codec._incremental_entries(odd)[1] == fix_codec._entries_field_by_field(odd)
    updates = fix_codec.parse_incremental(odd)
    assert [(u.symbol, len(u.entries)) for u in updates] == [("INFY", 2)]
    assert updates[0].entries[0].position == 1
