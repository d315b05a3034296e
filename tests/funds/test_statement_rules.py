"""Statements and contract notes as pure figures: running balances, totals, and the refusal to
hand out a document that does not reconcile with the ledger."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from svc_funds.adapters.documents import DocumentRenderer
from svc_funds.app.ports import DocumentFormat
from svc_funds.domain.ledger import LedgerError
from svc_funds.domain.model import Side
from svc_funds.domain.statements import (
    ContractFill,
    Movement,
    check_range,
    make_contract_note,
    make_statement,
)
from svc_runtime.errors import InvalidArgument

D = Decimal
AT = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
DAY = date(2026, 12, 1)


def movements() -> list[Movement]:
    return [
        Movement("t1", AT, "DEPOSIT", "deposit", "", D("1000.00")),
        Movement("t2", AT, "FILL", "BUY 1 INFY", "o1", D("-500.37")),
        Movement("t3", AT, "BLOCK", "nets to zero", "o2", D("0.00")),
        Movement("t4", AT, "WITHDRAWAL", "withdrawal", "", D("-99.63")),
    ]


def test_a_statement_runs_from_opening_to_closing_with_exact_totals() -> None:
    s = make_statement(
        "u1", start=DAY, end=DAY, opening=D("10.00"), movements=movements(), ledger_closing=D("410.00")
    )
    assert [line.balance for line in s.lines] == [D("1010.00"), D("509.63"), D("410.00")]
    assert (s.credits, s.debits, s.closing) == (D("1000.00"), D("600.00"), D("410.00"))
    rows = list(
        csv.DictReader(io.StringIO(DocumentRenderer().statement(s, DocumentFormat.CSV).content.decode()))
    )
    assert [r["kind"] for r in rows] == ["OPENING", "DEPOSIT", "FILL", "WITHDRAWAL", "CLOSING"]
    assert (rows[-1]["debit"], rows[-1]["credit"], rows[-1]["balance"]) == ("600.00", "1000.00", "410.00")


def test_a_statement_that_does_not_reach_the_ledgers_balance_is_refused() -> None:
    with pytest.raises(LedgerError):
        make_statement(
            "u1", start=DAY, end=DAY, opening=D("10.00"), movements=movements(), ledger_closing=D("410.01")
        )


def test_a_contract_note_nets_sales_purchases_and_charges_and_must_match_the_ledger() -> None:
    fills = [
        ContractFill(
            "x1", "o1", "INFY", Side.BUY, "CNC", 10, D("100.00"), D("1000.00"), AT, {"stt": D("1.00")}
        ),
        ContractFill(
            "x2",
            "o2",
            "INFY",
            Side.SELL,
            "CNC",
            4,
            D("110.00"),
            D("440.00"),
            AT,
            {"stt": D("0.44"), "gst": D("0.01")},
        ),
    ]
    note = make_contract_note("u1", DAY, fills, D("-561.45"), ["stt", "gst"])
    assert (note.bought, note.sold, note.total_charges, note.net) == (
        D("1000.00"),
        D("440.00"),
        D("1.45"),
        D("-561.45"),
    )
    assert note.charge_total("stt") == D("1.44")
    with pytest.raises(LedgerError):
        make_contract_note("u1", DAY, fills, D("-561.44"), ["stt", "gst"])
    pdf = DocumentRenderer().contract_note(note, DocumentFormat.PDF)
    assert pdf.content.startswith(b"%PDF-") and b"Net: sold - bought - charges: INR -561.45" in pdf.content


def test_a_range_must_run_forwards_and_stay_within_a_year() -> None:
    check_range(date(2026, 1, 1), date(2026, 12, 31))
    for start, end in ((date(2026, 1, 2), date(2026, 1, 1)), (date(2025, 1, 1), date(2026, 1, 2))):
        with pytest.raises(InvalidArgument):
            check_range(start, end)
