"""Deliberate crashes for the crash tests: kill -9 of this very process at a named point
of the command path, once per data directory (a marker file remembers it, so the restarted
process runs through). Configured by BROKERMESH_EXEC_CRASH_AT; empty in production."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

POINTS = frozenset({"after_record", "after_send"})


class CrashPoints:
    def __init__(self, points: set[str], marker_dir: Path) -> None:
        unknown = points - POINTS
        if unknown:
            raise ValueError(f"unknown crash points {sorted(unknown)}; known: {sorted(POINTS)}")
        self.points = points
        self.marker_dir = marker_dir

    def __call__(self, point: str) -> None:
        if point not in self.points:
            return
        marker = self.marker_dir / f"crashed-at-{point}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("1")
        log.warning("crash point reached; killing this process", extra={"point": point})
        os.kill(os.getpid(), signal.SIGKILL)
