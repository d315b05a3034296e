"""`brokermesh up` as an operator runs it: one process tree that starts everything, prints
its endpoints, stops cleanly on Ctrl-C leaving no process behind, and keeps its data across
restarts."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx
import psutil
import pytest

from svc_runtime import config, tls
from svc_runtime.infra.postgres import EmbeddedPostgres
from tests.support.infra import scratch_dir

pytestmark = pytest.mark.slow

BROKERMESH = Path(sys.executable).parent / "brokermesh"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    # `up` must start its own servers and make its own certificates here, whatever the test
    # session was given, as in a fresh shell.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BROKERMESH_") and k not in tls.CLIENT_TRUST_VARIABLES
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _https(data_dir: Path) -> ssl.SSLContext:
    """A client that trusts what `up` made: the CA in the data directory, and nothing else."""
    return tls.client_context(data_dir / "tls" / "ca.pem")


def _start(data_dir: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BROKERMESH), "--data-dir", str(data_dir), "up", *options],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own process group, like a command in a terminal: Ctrl-C reaches the whole group.
        start_new_session=True,
    )


def _wait_until_up(process: subprocess.Popen[str], timeout: float = 180.0) -> str:
    deadline = time.monotonic() + timeout
    output = []
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            output.append(line)
            if "Press Ctrl-C to stop." in line:
                return "".join(output)
            continue
        if process.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail("brokermesh up did not come up:\n" + "".join(output))


def _ctrl_c(process: subprocess.Popen[str]) -> None:
    """Ctrl-C as a terminal sends it: SIGINT to every process of the foreground group (the
    process's own group when it leads one, else just the process)."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
    try:
        process.wait(90)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("brokermesh up did not stop within 90s of Ctrl-C")
    assert process.returncode == 0


def _processes_of(data_dir: Path) -> list[str]:
    """Processes still running that belong to this stack (by command line or environment)."""
    marker = str(data_dir)
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.environ() if marker not in cmdline else {}
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        belongs = marker in cmdline or environ.get(config.DATA_DIR) == marker
        if belongs and proc.status() != psutil.STATUS_ZOMBIE:
            left.append(f"{proc.pid} {cmdline[:120]}")
    return left


def _error_lines(log_dir: Path) -> list[str]:
    """Lines of any log that report an error: a service's JSON lines at error level or above,
    PostgreSQL's ERROR/FATAL/PANIC (a server stopped under connected services logs FATAL for
    each), nats-server's [ERR]/[FTL]."""
    found = []
    for log_file in sorted(log_dir.glob("*.log")):
        for line in log_file.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    level = str(json.loads(line).get("level", "")).lower()
                except ValueError:
                    level = ""
                bad = level in {"error", "critical", "fatal"}
            else:
                bad = any(mark in line for mark in (" ERROR: ", " FATAL: ", " PANIC: ", "[ERR]", "[FTL]"))
            if bad or line.startswith("Traceback"):
                found.append(f"{log_file.name}: {line[:300]}")
    return found


def _brokermesh(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A `brokermesh` command against the stack `up` runs on `data_dir`, as an operator types it."""
    return subprocess.run(
        [str(BROKERMESH), "--data-dir", str(data_dir), *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _total_cash(gateway: str, token: str, verify: ssl.SSLContext) -> Decimal:
    response = httpx.get(
        f"{gateway}/v1/funds", headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=verify
    )
    return json.loads(response.text, parse_float=Decimal)["total"]


def _login(gateway: str, username: str, password: str, verify: ssl.SSLContext) -> str:
    response = httpx.post(
        f"{gateway}/v1/sessions",
        json={"username": username, "password": password},
        timeout=30,
        verify=verify,
    )
    assert response.status_code == 200, response.text
    return response.json()["accessToken"]


def _market_buy_fills(gateway: str, token: str, verify: ssl.SSLContext, key: str, *, quantity: int) -> None:
    """A MARKET buy of INFY placed over REST is accepted and fills within a minute."""
    headers = {"Authorization": f"Bearer {token}"}
    placed = httpx.post(
        f"{gateway}/v1/orders",
        headers={**headers, "Idempotency-Key": key},
        json={"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": quantity},
        timeout=30,
        verify=verify,
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["orderId"]
    deadline = time.monotonic() + 60
    order: dict[str, object] = {}
    while time.monotonic() < deadline:
        order = httpx.get(
            f"{gateway}/v1/orders/{order_id}", headers=headers, timeout=30, verify=verify
        ).json()
        if order["status"] == "FILLED":
            break
        time.sleep(0.2)
    assert order["status"] == "FILLED", order


def test_up_starts_everything_stops_cleanly_and_keeps_data() -> None:
    scratch = scratch_dir("brokermesh-test-up-")
    try:
        _up_stop_restart(scratch / "data")
    finally:
        EmbeddedPostgres(scratch / "data" / "postgres").remove()
        shutil.rmtree(scratch, ignore_errors=True)


def _up_stop_restart(data_dir: Path) -> None:
    process = _start(data_dir)
    try:
        banner = _wait_until_up(process)
        description = json.loads((data_dir / "stack.json").read_text())
        gateway = description["gateway_url"]
        assert gateway.startswith("https://") and gateway in banner
        _assert_made_tls(data_dir)
        verify = _https(data_dir)
        for target in description["grpc"].values():
            assert target in banner
        # The web trader is served at the gateway's root, and the banner says where.
        assert f"web trader     {gateway}/" in banner
        page = httpx.get(f"{gateway}/", timeout=30, verify=verify)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # A demo user can log in and see the opening deposit.
        token = _login(gateway, "asha", "asha-demo-pass", verify)
        assert _total_cash(gateway, token, verify) == Decimal("1000000.00")
        # An operator adds a user with the admin command.
        created = _brokermesh(
            data_dir,
            "admin",
            "create-user",
            "meera",
            "--password",
            "meera-password-1",
            "--deposit",
            "5000.00",
        )
        assert created.returncode == 0, created.stdout + created.stderr
    finally:
        if process.poll() is None:
            _ctrl_c(process)
    first_ca = (data_dir / "tls" / "ca.pem").read_bytes()
    assert _processes_of(data_dir) == []
    # An orderly stop: services first, then the servers they use; nothing logs an error.
    assert _error_lines(data_dir / "logs") == []

    # Again, on the same data directory: users and balances are still there, and the demo
    # deposit was not made twice.
    process = _start(data_dir)
    try:
        _wait_until_up(process)
        gateway = json.loads((data_dir / "stack.json").read_text())["gateway_url"]
        # The same CA: a client that trusted the stack before still does.
        assert (data_dir / "tls" / "ca.pem").read_bytes() == first_ca
        token = _login(gateway, "meera", "meera-password-1", verify)
        assert _total_cash(gateway, token, verify) == Decimal("5000.00")
        token = _login(gateway, "asha", "asha-demo-pass", verify)
        assert _total_cash(gateway, token, verify) == Decimal("1000000.00")
    finally:
        if process.poll() is None:
            _ctrl_c(process)
    assert _processes_of(data_dir) == []


def _assert_made_tls(data_dir: Path) -> None:
    """`up` made a CA and a server certificate, keys for the owner only, and the env file
    makes a shell's curl and Python trust them."""
    directory = data_dir / "tls"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((directory / key).stat().st_mode) == 0o600, key
    exported = (data_dir / "env").read_text()
    for variable in (*tls.CLIENT_TRUST_VARIABLES, tls.CA_FILE):
        assert f"export {variable}=" in exported, variable
    # What the README has a shell do: source the file, then call the gateway.
    script = 'source "$1" && python3 -c "import os, urllib.request; '
    script += "print(urllib.request.urlopen(os.environ['BROKERMESH_GATEWAY_URL'] + '/healthz').status)\""
    if shutil.which("curl"):
        script += ' && curl -sf -o /dev/null -w "%{http_code}\n" "$BROKERMESH_GATEWAY_URL/healthz"'
    done = subprocess.run(
        ["bash", "-c", script, "-", str(data_dir / "env")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and set(done.stdout.split()) == {"200"}, done.stdout + done.stderr


def _checkout_copy(target: Path) -> None:
    """The working tree as a fresh clone would have it: tracked files and new ones not ignored."""
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_the_readme_commands_work_from_a_private_checkout() -> None:
    """A fresh clone in a mode-700 directory (a home directory under /root when the suite runs
    as root): `./brokermesh up` installs into the clone's own .venv, comes up, and the README
    walkthrough's market order fills and settles."""
    private = Path(tempfile.mkdtemp(prefix="brokermesh-private-checkout-"))
    assert private.stat().st_mode & 0o777 == 0o700
    checkout = private / "brokermesh"
    _checkout_copy(checkout)
    process = subprocess.Popen(
        ["./brokermesh", "up"],
        cwd=checkout,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    data_dir = checkout / ".brokermesh"
    try:
        _wait_until_up(process, timeout=600)
        gateway = json.loads((data_dir / "stack.json").read_text())["gateway_url"]
        verify = _https(data_dir)
        token = _login(gateway, "asha", "asha-demo-pass", verify)
        _market_buy_fills(gateway, token, verify, "private-checkout-walkthrough", quantity=10)
        audit = subprocess.run(
            [str(checkout / ".venv" / "bin" / "brokermesh"), "audit"],
            cwd=checkout,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
        # While it runs, the data directory is the stack's: it cannot be deleted under it.
        refused = _destroy(checkout)
        assert refused.returncode != 0 and data_dir.exists(), refused.stdout + refused.stderr
        _ctrl_c(process)
        assert _processes_of(data_dir) == []
        # Stopped, `destroy` deletes it and the cluster it owns, wherever that lives.
        elsewhere = EmbeddedPostgres(data_dir / "postgres").cluster_outside()
        destroyed = _destroy(checkout)
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
        assert not data_dir.exists()
        assert elsewhere is None or not elsewhere.exists()
    finally:
        if process.poll() is None:
            _ctrl_c(process)
        EmbeddedPostgres(data_dir / "postgres").remove()
        shutil.rmtree(private, ignore_errors=True)


def _destroy(checkout: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["./brokermesh", "destroy", "--yes"],
        cwd=checkout,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_up_restarts_the_servers_it_started_and_orders_fill_again() -> None:
    """kill -9 of NATS and of PostgreSQL under a running stack: `up` starts each again on the
    port its clients know, says so, and a new order is accepted and fills."""
    scratch = scratch_dir("brokermesh-test-up-servers-")
    data_dir = scratch / "data"
    process = _start(data_dir)
    output: list[str] = []
    try:
        output.append(_wait_until_up(process))
        gateway = json.loads((data_dir / "stack.json").read_text())["gateway_url"]
        nats = next(
            p
            for p in psutil.process_iter(["cmdline"])
            if str(data_dir / "nats") in " ".join(p.info["cmdline"] or [])
            and "nats-server" in " ".join(p.info["cmdline"] or [])
        )
        nats.kill()
        postmaster = int((data_dir / "postgres" / "pgdata" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + 120
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            output.append(line)
            if "nats is back" in "".join(output) and "postgres is back" in "".join(output):
                break
            if not line:
                time.sleep(0.1)
        assert "nats is back" in "".join(output) and "postgres is back" in "".join(output), "".join(output)
        verify = _https(data_dir)
        token = _login_eventually(gateway, "asha", "asha-demo-pass", verify)
        headers = {"Authorization": f"Bearer {token}"}
        order_id = ""
        while time.monotonic() < deadline and not order_id:
            placed = httpx.post(
                f"{gateway}/v1/orders",
                headers={**headers, "Idempotency-Key": "after-server-restarts"},
                json={"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": 1},
                timeout=30,
                verify=verify,
            )
            if placed.status_code in (200, 201):
                order_id = placed.json()["orderId"]
            else:
                assert placed.status_code < 500 or placed.status_code == 503, placed.text
                time.sleep(0.5)
        assert order_id, "no order accepted after the restarts"
        status = ""
        while time.monotonic() < deadline and status != "FILLED":
            status = httpx.get(
                f"{gateway}/v1/orders/{order_id}", headers=headers, timeout=30, verify=verify
            ).json()["status"]
            time.sleep(0.2)
        assert status == "FILLED"
    finally:
        if process.poll() is None:
            _ctrl_c(process)
            process.wait(90)
        EmbeddedPostgres(data_dir / "postgres").remove()
        shutil.rmtree(scratch, ignore_errors=True)
    assert _processes_of(data_dir) == []


def _login_eventually(
    gateway: str, username: str, password: str, verify: ssl.SSLContext, timeout: float = 60
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(
            f"{gateway}/v1/sessions",
            json={"username": username, "password": password},
            timeout=30,
            verify=verify,
        )
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.json()["accessToken"]
        time.sleep(0.5)


class RestingLoad:
    """A client placing resting LIMIT buys over REST and cancelling every second one, on
    and on, as a trader would while the operator restarts `up`: it retries through the
    outage with the same Idempotency-Key, and finds the gateway again in the data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.placed: list[str] = []
        self.cancelled: set[str] = set()
        self.prices: dict[str, Decimal] = {}
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self._token = ""

    def gateway(self) -> str:
        return str(json.loads((self.data_dir / "stack.json").read_text())["gateway_url"])

    def call(self, method: str, path: str, *, key: str = "", **kwargs: object) -> httpx.Response:
        """Until the broker answers (not 503): an outage is waited out, a lost login redone."""
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            try:
                if not self._token:
                    self._token = _login(self.gateway(), "asha", "asha-demo-pass", _https(self.data_dir))
                headers = {"Authorization": f"Bearer {self._token}"}
                if key:
                    headers["Idempotency-Key"] = key
                response = httpx.request(
                    method,
                    f"{self.gateway()}{path}",
                    headers=headers,
                    timeout=15,
                    verify=_https(self.data_dir),
                    **kwargs,
                )
            except (httpx.TransportError, AssertionError, OSError, ValueError):
                # Down, refusing logins, or its description being rewritten: try again.
                time.sleep(0.2)
                continue
            if response.status_code == 401:
                self._token = ""
            elif response.status_code not in (502, 503, 504):
                return response
            time.sleep(0.2)
        raise AssertionError(f"{method} {path}: the broker did not come back")

    def resting_price(self, symbol: str) -> Decimal:
        """6 % under the best bid, on the tick grid: a bid that rests."""
        if symbol not in self.prices:
            while True:
                quotes = self.call("GET", "/v1/quotes", params={"symbols": symbol}).json()["quotes"]
                if quotes and quotes[0]["bid"]:
                    break
                time.sleep(0.2)
            bid = Decimal(str(quotes[0]["bid"]))
            self.prices[symbol] = (bid * Decimal("0.94") / Decimal("0.05")).to_integral_value() * Decimal(
                "0.05"
            )
        return self.prices[symbol]

    def run(self) -> None:
        try:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                symbol = ("INFY", "TCS")[i % 2]
                order = {"symbol": symbol, "side": "BUY", "type": "LIMIT", "quantity": 1}
                order["limitPrice"] = str(self.resting_price(symbol))
                placed = self.call("POST", "/v1/orders", key=f"restart-load-{i}", json=order)
                assert placed.status_code in (200, 201), placed.text
                order_id = placed.json()["orderId"]
                self.placed.append(order_id)
                if i % 2:
                    cancel = self.call("POST", f"/v1/orders/{order_id}:cancel", key=f"restart-cancel-{i}")
                    assert cancel.status_code in (200, 202), cancel.text
                    self.cancelled.add(order_id)
                time.sleep(0.1)
        except BaseException as error:
            self.failure = error


# Two starts of the whole stack: on a busy machine each takes a minute or more.
@pytest.mark.timeout(600)
def test_a_restart_of_up_under_a_stream_of_resting_orders_and_cancels_loses_nothing() -> None:
    """Ctrl-C and `up` again on the same data directory, as the README has it, while a
    client keeps placing resting orders and cancelling every second one. Afterwards every
    order accepted is there, each cancelled one is over, every other one still rests (the
    exchange kept its book), and the strict audit finds every working order at the
    exchange with its block, nothing unverified."""
    scratch = scratch_dir("brokermesh-test-up-restart-")
    data_dir = scratch / "data"
    load = RestingLoad(data_dir)
    client = threading.Thread(target=load.run, name="resting-load", daemon=True)
    began = time.monotonic()
    phases: list[str] = []  # shown if the test fails: where the time went

    def phase(name: str) -> None:
        phases.append(f"{name} at {time.monotonic() - began:.0f}s")
        print(phases[-1], flush=True)

    process = _start(data_dir)
    try:
        _wait_until_up(process)
        phase("up")
        client.start()
        while len(load.placed) < 20 and client.is_alive():
            time.sleep(0.2)
        _ctrl_c(process)
        phase("stopped")
        during_restart = len(load.placed)
        process = _start(data_dir)
        _wait_until_up(process)
        phase("up again")
        while len(load.placed) < during_restart + 10 and client.is_alive():
            time.sleep(0.2)
        load.stop.set()
        client.join(60)
        assert load.failure is None, repr(load.failure)
        assert len(load.placed) >= during_restart + 10 and load.cancelled

        def settled() -> dict[str, dict[str, object]]:
            orders = {o: load.call("GET", f"/v1/orders/{o}").json() for o in load.placed}
            pending = [o for o in orders.values() if str(o["status"]).startswith("PENDING")]
            return {} if pending else orders

        deadline = time.monotonic() + 60
        while not (orders := settled()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert orders, "orders still pending a minute after the load"
        phase("settled")
        for order_id, order in orders.items():
            # Resting far below the market; a fill would still be an order not lost.
            expected = {"CANCELLED" if order_id in load.cancelled else "OPEN", "FILLED"}
            assert order["status"] in expected, order
        audit = _brokermesh(data_dir, "audit", "--strict", timeout=180)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        phase("audited")
    finally:
        load.stop.set()
        if process.poll() is None:
            _ctrl_c(process)
        EmbeddedPostgres(data_dir / "postgres").remove()
        shutil.rmtree(scratch, ignore_errors=True)
    assert _processes_of(data_dir) == []
