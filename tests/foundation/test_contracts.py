"""The contracts: protos lint clean with buf, and gen/ is exactly what they generate."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from svc_runtime import codegen

REPO = Path(__file__).resolve().parents[2]


def _buf() -> str:
    candidate = Path(sys.executable).parent / "buf"
    found = str(candidate) if candidate.exists() else shutil.which("buf")
    if not found:
        pytest.fail("buf CLI missing: install the test extra (`pip install -e .[test]`, it brings buf-bin)")
    return found


def test_buf_lint_is_clean() -> None:
    result = subprocess.run([_buf(), "lint"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gen_matches_a_fresh_regeneration(tmp_path: Path) -> None:
    fresh = tmp_path / "gen"
    codegen.generate(fresh)
    committed = REPO / "gen"

    def listing(root: Path) -> set[str]:
        return {
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        }

    assert listing(fresh) == listing(committed), "gen/ has missing or extra files: run `brokermesh gen`"
    differing = [
        name
        for name in sorted(listing(fresh))
        if not filecmp.cmp(fresh / name, committed / name, shallow=False)
    ]
    assert not differing, f"gen/ drifted from proto/ in {differing}: run `brokermesh gen`"
