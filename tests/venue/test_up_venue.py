"""`brokermesh up --venue HOST:PORT` trades at a venue brokermesh did not write (the
simplefix acceptor of `acceptor.py`, speaking FIX 4.4 the common way): no simulator, an
order placed through REST fills, funds settle, the holding appears and the audit is clean."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from svc_runtime.infra.postgres import EmbeddedPostgres
from tests.e2e.test_up_command import BROKERMESH, _ctrl_c, _env, _https, _login, _processes_of, _wait_until_up
from tests.support.infra import scratch_dir
from tests.venue.acceptor import VENUES, Acceptor

pytestmark = pytest.mark.slow

INSTRUMENTS = "symbol,company_name,isin,lot_size,tick_size,previous_close\nINFY,Infosys Ltd,INE009A01021,1,0.05,1500.00\n"


@pytest.mark.parametrize("how", ["options", "environment"])
def test_up_with_a_venue_places_and_fills_an_order_through_rest(how: str) -> None:
    acceptor = Acceptor(VENUES["fix44-common"]).start()
    scratch = scratch_dir("brokermesh-test-up-venue-")
    data_dir = scratch / "data"
    instruments = scratch / "instruments.csv"
    instruments.write_text(INSTRUMENTS)
    env = _env()
    if how == "options":
        venue = ["--venue", f"127.0.0.1:{acceptor.port}", "--venue-profile", "fix44-tolerant"]
    else:
        venue = []
        env.update(
            BROKERMESH_FIX_HOST="127.0.0.1",
            BROKERMESH_FIX_PORT=str(acceptor.port),
            BROKERMESH_VENUE_PROFILE="fix44-tolerant",
        )
    process = subprocess.Popen(
        [str(BROKERMESH), "--data-dir", str(data_dir), "up", *venue, "--instruments", str(instruments)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        banner = _wait_until_up(process)
        assert f"127.0.0.1:{acceptor.port}" in banner and "exchange_sim" not in banner
        assert not list((data_dir / "logs").glob("exchange_sim*")), "the simulator was not started"
        _trade(data_dir, acceptor)
    finally:
        if process.poll() is None:
            _ctrl_c(process)
        acceptor.stop()
        assert _processes_of(data_dir) == []
        EmbeddedPostgres(data_dir / "postgres").remove()
        shutil.rmtree(scratch, ignore_errors=True)


def _trade(data_dir: Path, acceptor: Acceptor) -> None:
    import json

    gateway = json.loads((data_dir / "stack.json").read_text())["gateway_url"]
    verify = _https(data_dir)
    auth = {"Authorization": f"Bearer {_login(gateway, 'asha', 'asha-demo-pass', verify)}"}
    with httpx.Client(base_url=gateway, timeout=30, verify=verify) as client:
        placed = client.post(
            "/v1/orders",
            json={"symbol": "INFY", "side": "BUY", "type": "LIMIT", "quantity": 10, "limitPrice": "1500.05"},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["orderId"]
        order = _eventually(lambda: _if(client.get(f"/v1/orders/{order_id}", headers=auth).json(), "FILLED"))
        assert order["filledQuantity"] == 10
        assert Decimal(str(order["avgPrice"])) == Decimal("1500.05")
        funds = _eventually(lambda: _settled(client.get("/v1/funds", headers=auth).json()))
        assert Decimal(str(funds["total"])) < Decimal("1000000.00") - Decimal("15000.50") + Decimal("1")
        portfolio = _eventually(lambda: _holds(client.get("/v1/portfolio", headers=auth).json(), "INFY"))
        assert portfolio
    assert [m.get(55) for m in acceptor.received.of_type("D")] == [b"INFY"]
    audit = subprocess.run(
        [str(BROKERMESH), "--data-dir", str(data_dir), "audit"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _if(order: dict, status: str) -> dict | None:
    return order if order.get("status") == status else None


def _settled(funds: dict) -> dict | None:
    return funds if Decimal(str(funds["blocked"])) == 0 else None


def _holds(portfolio: dict, symbol: str) -> dict | None:
    rows = [*portfolio.get("holdings", []), *portfolio.get("positions", [])]
    return portfolio if any(r["symbol"] == symbol for r in rows) else None


def _eventually(probe, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        time.sleep(0.2)
    return value
