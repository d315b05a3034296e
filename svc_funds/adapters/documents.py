"""Statements and contract notes as CSV (one table, a row per line and a totals row) and PDF
(fpdf2: pure Python, so it installs wherever the project does, with tables whose numeric
columns align right). Amounts are written exactly as the ledger holds them, to the paisa."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from decimal import Decimal

from fpdf import FPDF
from fpdf.enums import Align

from svc_funds.app.ports import Document, DocumentFormat
from svc_funds.domain.model import EXCHANGE_TZ
from svc_funds.domain.statements import ZERO, ContractNote, Statement

STATEMENT_COLUMNS = (
    "date",
    "time",
    "transaction_id",
    "kind",
    "description",
    "order_id",
    "debit",
    "credit",
    "balance",
)


def _amount(value: Decimal | None) -> str:
    return "" if value is None else f"{value:.2f}"


def statement_table(s: Statement) -> list[list[str]]:
    """Opening row, one row per movement, closing row with the range's total debits and credits."""
    rows = [[s.start.isoformat(), "", "", "OPENING", "Opening balance", "", "", "", _amount(s.opening)]]
    for line in s.lines:
        m = line.movement
        local = m.posted_at.astimezone(EXCHANGE_TZ)
        rows.append(
            [
                local.date().isoformat(),
                local.strftime("%H:%M:%S"),
                m.txn_id,
                m.kind,
                m.description,
                m.order_id,
                _amount(-m.amount) if m.amount < 0 else "",
                _amount(m.amount) if m.amount > 0 else "",
                _amount(line.balance),
            ]
        )
    rows.append(
        [
            s.end.isoformat(),
            "",
            "",
            "CLOSING",
            "Closing balance",
            "",
            _amount(s.debits),
            _amount(s.credits),
            _amount(s.closing),
        ]
    )
    return rows


def contract_columns(note: ContractNote) -> list[str]:
    return [
        "trade_time",
        "order_id",
        "exec_id",
        "symbol",
        "side",
        "product",
        "quantity",
        "price",
        "value",
        *note.charge_names,
        "total_charges",
        "net",
    ]


def contract_table(note: ContractNote) -> list[list[str]]:
    """One row per fill, then BOUGHT and SOLD (values) and TOTAL (charges and net) rows."""
    rows = []
    for f in note.fills:
        rows.append(
            [
                f.executed_at.astimezone(EXCHANGE_TZ).strftime("%Y-%m-%d %H:%M:%S"),
                f.order_id,
                f.exec_id,
                f.symbol,
                str(f.side),
                f.product,
                str(f.quantity),
                _amount(f.price),
                _amount(f.value),
                *(_amount(f.charges.get(n, ZERO)) for n in note.charge_names),
                _amount(f.total_charges),
                _amount(f.net),
            ]
        )
    blank = [""] * len(note.charge_names)
    rows.append(["BOUGHT", *[""] * 7, _amount(note.bought), *blank, "", ""])
    rows.append(["SOLD", *[""] * 7, _amount(note.sold), *blank, "", ""])
    charges = [_amount(note.charge_total(n)) for n in note.charge_names]
    rows.append(["TOTAL", *[""] * 8, *charges, _amount(note.total_charges), _amount(note.net)])
    return rows


def _csv(header: Sequence[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def _latin1(text: str) -> str:
    """The PDF's built-in fonts cover Latin-1 only: anything else is shown as '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def _pdf(
    title: str, facts: list[tuple[str, str]], header: Sequence[str], rows: list[list[str]], numeric_from: int
) -> bytes:
    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_compression(False)  # small documents; text stays searchable as written
    pdf.set_title(_latin1(title))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(text=_latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    for name, value in facts:
        pdf.cell(text=_latin1(f"{name}: {value}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("Helvetica", size=6 if len(header) > 10 else 7)
    aligns = tuple(Align.R if i >= numeric_from else Align.L for i in range(len(header)))
    with pdf.table(text_align=aligns, first_row_as_headings=True) as table:
        for row in [list(header), *rows]:
            cells = table.row()
            for value in row:
                cells.cell(_latin1(value))
    return bytes(pdf.output())


class DocumentRenderer:
    def statement(self, s: Statement, fmt: DocumentFormat) -> Document:
        name = f"statement-{s.start.isoformat()}-{s.end.isoformat()}"
        rows = statement_table(s)
        if fmt is DocumentFormat.CSV:
            return Document("text/csv; charset=utf-8", f"{name}.csv", _csv(STATEMENT_COLUMNS, rows))
        facts = [
            ("Account", s.user_id),
            ("Period", f"{s.start.isoformat()} to {s.end.isoformat()} (IST)"),
            ("Opening balance", f"INR {_amount(s.opening)}"),
            ("Total debits", f"INR {_amount(s.debits)}"),
            ("Total credits", f"INR {_amount(s.credits)}"),
            ("Closing balance", f"INR {_amount(s.closing)}"),
        ]
        content = _pdf("Statement of account", facts, STATEMENT_COLUMNS, rows, numeric_from=6)
        return Document("application/pdf", f"{name}.pdf", content)

    def contract_note(self, note: ContractNote, fmt: DocumentFormat) -> Document:
        name = f"contract-note-{note.trading_day.isoformat()}"
        header = contract_columns(note)
        rows = contract_table(note)
        if fmt is DocumentFormat.CSV:
            return Document("text/csv; charset=utf-8", f"{name}.csv", _csv(header, rows))
        facts = [
            ("Account", note.user_id),
            ("Trading day", note.trading_day.isoformat()),
            ("Bought", f"INR {_amount(note.bought)}"),
            ("Sold", f"INR {_amount(note.sold)}"),
            ("Charges", f"INR {_amount(note.total_charges)}"),
            ("Net: sold - bought - charges", f"INR {_amount(note.net)}"),
        ]
        content = _pdf("Contract note", facts, header, rows, numeric_from=6)
        return Document("application/pdf", f"{name}.pdf", content)
