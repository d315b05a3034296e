"""The documentation stays true to the code: the state-machine table in docs/architecture.md
is the transition table, and every relative link in the docs and READMEs leads to a file."""

from __future__ import annotations

import re
from pathlib import Path

from svc_orders.domain.state_machine import TRANSITIONS, Rule, Trigger

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "docs" / "architecture.md"
NOT_ALLOWED = "·"


def _documents() -> list[Path]:
    found = [
        REPO / "README.md",
        *REPO.glob("*/README.md"),
        *(REPO / "docs").rglob("*.md"),
        *REPO.glob("bench/*.md"),
    ]
    return sorted({p for p in found if ".venv" not in p.parts})


def _table_rows(text: str) -> list[list[str]]:
    start = text.index("<!-- state-machine-table")
    end = text.index("<!-- end state-machine-table -->")
    lines = [line for line in text[start:end].splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


def _cell(target: object) -> str:
    if target is None:
        return NOT_ALLOWED
    if isinstance(target, Rule):
        return f"*{target.value.lower()}*"
    return str(getattr(target, "value", target))


def test_the_state_machine_table_is_the_transition_table() -> None:
    header, _separator, *rows = _table_rows(ARCHITECTURE.read_text())
    triggers = header[1:]
    assert triggers == [t.value for t in Trigger], "the table's columns must be every trigger, in order"
    documented = {row[0].strip("`"): dict(zip(triggers, row[1:], strict=True)) for row in rows}
    expected = {
        status.value: {t.value: _cell(targets.get(t)) for t in Trigger}
        for status, targets in TRANSITIONS.items()
    }
    assert documented == expected


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_lead_to_files() -> None:
    broken = []
    for doc in _documents():
        for target in _LINK.findall(doc.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{doc.relative_to(REPO)} → {target}")
    assert not broken, "links to nothing:\n" + "\n".join(broken)
