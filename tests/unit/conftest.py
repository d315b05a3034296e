"""The use cases' unit tests run over in-memory fakes of their ports: no processes, no
PostgreSQL, no NATS. Together they must stay fast enough to run on every change: their
summed time (setup, call and teardown) is reported at the end of the session, and a session
that ran all of them over UNIT_BUDGET_SECONDS fails."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_BUDGET_SECONDS = 5.0
_HERE = Path(__file__).resolve().parent
_spent: dict[str, float] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.unit)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid.startswith("tests/unit/"):
        _spent[report.nodeid] = _spent.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _spent:
        return
    total = sum(_spent.values())
    terminalreporter.write_line(
        f"unit tests over fakes: {len(_spent)} in {total:.2f} s (budget {UNIT_BUDGET_SECONDS:.0f} s)"
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    total = sum(_spent.values())
    if total > UNIT_BUDGET_SECONDS and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nunit tests over fakes took {total:.2f} s, over their {UNIT_BUDGET_SECONDS:.0f} s budget")
