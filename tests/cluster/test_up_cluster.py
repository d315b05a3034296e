"""`brokermesh up --cluster` as an operator runs it: three NATS nodes and two processes of
each service come up, an order placed over REST fills, and Ctrl-C stops every process
cleanly (services before the servers they use)."""

from __future__ import annotations

import json
import shutil

import pytest

from svc_runtime.infra.postgres import EmbeddedPostgres
from tests.e2e.test_up_command import (
    _ctrl_c,
    _error_lines,
    _https,
    _login_eventually,
    _market_buy_fills,
    _processes_of,
    _start,
    _wait_until_up,
)
from tests.support.infra import scratch_dir

pytestmark = pytest.mark.slow

ROUTE_DIAL = "[ERR] Error trying to connect to route"


@pytest.mark.timeout(420)
def test_up_cluster_starts_fills_an_order_and_stops_cleanly() -> None:
    scratch = scratch_dir("brokermesh-test-up-cluster-")
    data_dir = scratch / "data"
    process = _start(data_dir, "--cluster")
    try:
        banner = _wait_until_up(process, timeout=300)
        assert "starting svc_orders.2" in banner and "starting gateway.2" in banner, banner
        gateway = json.loads((data_dir / "stack.json").read_text())["gateway_url"]
        verify = _https(data_dir)
        token = _login_eventually(gateway, "asha", "asha-demo-pass", verify)
        _market_buy_fills(gateway, token, verify, "up-cluster-first-order", quantity=1)
    finally:
        if process.poll() is None:
            _ctrl_c(process)
        try:
            assert _processes_of(data_dir) == []
            # A node dialling a peer not yet started (or already stopped) is how a NATS cluster
            # forms and parts; anything else logged as an error is not.
            errors = [line for line in _error_lines(data_dir / "logs") if ROUTE_DIAL not in line]
            assert errors == []
        finally:
            EmbeddedPostgres(data_dir / "postgres").remove()
            shutil.rmtree(scratch, ignore_errors=True)
