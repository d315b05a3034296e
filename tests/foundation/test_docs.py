"""The documentation stays true to the code and self-contained: the state-machine table in
docs/architecture.md is the transition table, every relative link in the docs and READMEs
leads to a file, and nothing in the repository cites a document that is not in it."""

from __future__ import annotations

import os
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


def _rendered_table() -> str:
    """The table as it belongs in docs/architecture.md."""
    lines = [
        "| status ↓ / trigger → | " + " | ".join(t.value for t in Trigger) + " |",
        "|---|" + "---|" * len(Trigger),
    ]
    for status, targets in TRANSITIONS.items():
        cells = " | ".join(_cell(targets.get(t)) for t in Trigger)
        lines.append(f"| `{status.value}` | {cells} |")
    return "\n".join(lines)


def test_the_state_machine_table_is_the_transition_table() -> None:
    header, _separator, *rows = _table_rows(ARCHITECTURE.read_text())
    documented = {row[0].strip("`"): dict(zip(header[1:], row[1:], strict=True)) for row in rows}
    expected = {
        status.value: {t.value: _cell(targets.get(t)) for t in Trigger}
        for status, targets in TRANSITIONS.items()
    }
    assert documented == expected, "docs/architecture.md §4 should read:\n" + _rendered_table()


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


# Citations of design documents, notes or requirement texts kept elsewhere. What the code
# relies on is written down in docs/ (or stated where it is used) instead.
_OUTSIDE = re.compile(
    r"DESIGN\.md|\.\./shared|\bnotes/(performance|reliability)|\bseeds?\s+0\d\d|\bthe\s+issue\b|\bissue\s+\d",
    re.IGNORECASE,
)
_TEXT = {".py", ".pyi", ".md", ".yaml", ".yml", ".proto", ".sql", ".cfg", ".toml", ".ini", ".sh", ".txt"}
_SKIP = {".git", ".venv", ".brokermesh", "__pycache__", "results", "build"}


def _text_files() -> list[Path]:
    out = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _SKIP and not d.endswith(".egg-info")]
        out += [Path(root, f) for f in files if Path(f).suffix in _TEXT or f == "brokermesh"]
    return out


def test_nothing_points_outside_the_repository() -> None:
    found = []
    for path in _text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if _OUTSIDE.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "references to documents outside the repository:\n" + "\n".join(found)
