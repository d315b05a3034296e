"""The benchmark harness end to end, through `brokermesh bench`, on its smallest quick run:
it must keep producing the table, results.json, report.md and plots. Not a test of speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from svc_runtime import config
from tests.support.infra import SharedInfra

SMALLEST = ["baselines.grpc_unary", "baselines.pg_txn"]


def test_quick_baselines_produce_table_json_report_and_plots(infra: SharedInfra, tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {**os.environ, config.DATABASE_URL: infra.database_url, config.NATS_URL: infra.nats_url}
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from svc_runtime.cli import main; main()",
            "bench",
            *SMALLEST,
            "--quick",
            "--results",
            str(results),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    # The terminal table names every figure.
    for name in ("baseline.grpc_unary_echo.throughput", "baseline.pg_single_row_txn.p99"):
        assert name in completed.stdout

    document = json.loads((results / "results.json").read_text())
    assert document["quick"] is True
    assert [s["name"] for s in document["scenarios"]] == SMALLEST
    assert all(s["error"] is None for s in document["scenarios"])
    machine = document["machine"]
    assert machine["cpus"] >= 1 and machine["python"] and machine["versions"]["grpcio"]
    assert len(machine["git"]["commit"]) == 40 or machine["git"]["commit"] == "unknown"
    assert machine["servers"]["postgresql"] and machine["servers"]["nats-server"]

    figures = {f["name"]: f for f in document["figures"]}
    for stem in ("baseline.grpc_unary_echo", "baseline.pg_single_row_txn"):
        assert figures[f"{stem}.throughput"]["value"] > 0
        latencies = [figures[f"{stem}.{p}"]["value"] for p in ("p50", "p90", "p99", "p99_9")]
        assert 0 < latencies[0] <= latencies[1] <= latencies[2] <= latencies[3]
        assert figures[f"{stem}.errors"]["value"] == 0
        distribution = figures[f"{stem}.p50"]["distribution_ms"]
        assert distribution["p50"] == latencies[0]
        assert figures[f"{stem}.p50"]["samples"] > 10

    report = (results / "report.md").read_text()
    assert "## baselines.grpc_unary" in report and "## baselines.pg_txn" in report
    for scenario in SMALLEST:
        png = results / f"{scenario}.png"
        assert f"({png.name})" in report
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
