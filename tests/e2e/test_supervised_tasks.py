"""Crash-only processes: when a background task of a service dies (its tick publisher, its
report consumer, a ledger writer…), the process does not serve on without it: it stops and
exits non-zero, so that its supervisor starts it again."""

from __future__ import annotations

import asyncio
import signal

import pytest

from svc_runtime.service import EXIT_TASK_FAILED, FAULT_INJECTION
from svc_runtime.stack import SERVICE_NAMES
from tests.conftest import StackFactory

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_a_dead_background_task_stops_its_process_non_zero_and_it_comes_back(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(extra_env={FAULT_INJECTION: "1"})
    for name in SERVICE_NAMES:
        process = stack.processes[name]
        # The hook kills every supervised task of the process, as a crash inside one would.
        process.send_signal(signal.SIGUSR2)
        try:
            code = await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            # Every thread's stack goes to the log, to show where the process is stuck.
            process.send_signal(signal.SIGUSR1)
            await asyncio.sleep(2)
            code = None
        log = (stack.log_dir / f"{name}.log").read_text(errors="replace")
        assert code == EXIT_TASK_FAILED, f"{name} exited with {code}\n{log[-6000:]}"
        assert "background task ended unexpectedly" in log, name
        # Started again, it is healthy.
        await stack.start_service(name)
