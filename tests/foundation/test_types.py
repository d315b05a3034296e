"""The type checker runs over every service's domain/ and app/ ([tool.mypy] in pyproject.toml
names them) and finds nothing: a wrong type there fails the test suite, not a client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_domain_and_app_type_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(REPO / ".mypy_cache")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
