"""What the bench charges to a process tree: its own CPU, its live descendants' and what its
reaped children used (PostgreSQL's backends come and go under the postmaster)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.cost import process_cpu

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n{then}"


def _burner(seconds: float, then: str = "") -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", BURN.format(seconds=seconds, then=then)])


def test_a_tree_is_charged_its_live_descendants_and_its_reaped_children(tmp_path: Path) -> None:
    # A parent that starts a grandchild burning 0.6 s, waits for it (reaping it), says so,
    # then sleeps: the grandchild's CPU now shows only in the parent's children's time.
    reaped = tmp_path / "reaped"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, subprocess, sys, time\n"
            f"subprocess.run([sys.executable, '-c', {BURN.format(seconds=0.6, then='')!r}])\n"
            f"pathlib.Path({str(reaped)!r}).touch()\n"
            "time.sleep(30)\n",
        ]
    )
    live = _burner(0.4, "time.sleep(30)")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cpu = process_cpu({"parent": parent.pid, "live": live.pid})
            if reaped.exists() and cpu["live"] >= 0.4:
                break
            time.sleep(0.1)
        cpu = process_cpu({"parent": parent.pid, "live": live.pid})
        assert cpu["parent"] >= 0.6, cpu
        assert cpu["live"] >= 0.4, cpu
        # A process that is gone counts nothing (its parent, if it reaps it, counts it).
        assert process_cpu({"gone": 2**22 + 12345}) == {"gone": 0.0}
    finally:
        for process in (parent, live):
            process.kill()
            process.wait()
