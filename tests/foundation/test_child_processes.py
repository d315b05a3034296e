"""Children started through `die_with_parent` go away with their parent, even a kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from svc_runtime.infra.processes import die_with_parent
from tests.support.polling import eventually

PARENT = """
import subprocess, sys, time
from svc_runtime.infra.processes import die_with_parent
child = subprocess.Popen(die_with_parent([sys.executable, "-c", "import time; time.sleep(120)"]))
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(120)
"""


async def test_a_child_stops_when_its_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", PARENT, str(pid_file))
    try:
        child_pid = int(await eventually(lambda: pid_file.exists() and pid_file.read_text()))
        child = psutil.Process(child_pid)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    finally:
        parent.send_signal(signal.SIGKILL)
        await parent.wait()
    try:
        await asyncio.to_thread(child.wait, 10)
    except psutil.TimeoutExpired:
        child.kill()
        pytest.fail("the child outlived its killed parent")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="switching user needs root")
def test_a_child_can_run_as_another_user() -> None:
    nobody = 65534
    result = subprocess.run(
        die_with_parent(
            ["/bin/sh", "-c", 'echo "$(id -u) $(id -g) $(id -G)"'],
            user=(nobody, nobody),
        ),
        capture_output=True,
        text=True,
        check=True,
    )
    # Only the user's own group: none of root's supplementary groups are kept.
    assert result.stdout.split() == [str(nobody)] * 3
