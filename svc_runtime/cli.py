"""`brokermesh`: run the stack, administer it, check it, test it.

brokermesh up              start PostgreSQL, NATS, the exchange simulator, every service
                           and the gateway; Ctrl-C stops them all (--venue HOST:PORT: trade
                           at another FIX venue instead of the simulator)
brokermesh test [ARGS]     run the test suite (ARGS go to pytest)
brokermesh gen             regenerate gen/ from proto/ (and the OpenAPI Reason enum)
brokermesh admin ...       operate the stack: users, cash, kill switch, halts, cancels, end of
                           day, the audit trail, the FIX session (as an operator)
brokermesh audit           check invariants I1–I9 (docs/architecture.md §5); exit 1 on any violation
                           (--strict: also when some orders could not be checked)
brokermesh destroy         delete a stopped stack's data directory and everything it owns
brokermesh bench ...       run the benchmark harness
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from svc_runtime import aio, config, logs, market_clock, tls

if TYPE_CHECKING:
    from svc_runtime.auth import Signer

REPO_ROOT = Path(__file__).resolve().parent.parent
# How long `up` waits, once every service is healthy, for a first order to be possible.
READY_TIMEOUT = 120.0
# A process restarted longer ago than this that dies again is restarted without back-off.
BACKOFF_RESET_SECONDS = 60.0
DEMO_USERS = (
    ("asha", "asha-demo-pass", "Asha Rao", "1000000.00"),
    ("ravi", "ravi-demo-pass", "Ravi Iyer", "250000.00"),
)


def data_dir_from(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get(config.DATA_DIR) or REPO_ROOT / ".brokermesh").resolve()


def stack_description(data_dir: Path) -> dict[str, object]:
    """The running stack's endpoints; this process's clients then trust its CA (or speak
    plain text to a stack started in plain-text mode)."""
    path = data_dir / "stack.json"
    if not path.exists():
        sys.exit(f"no running stack described in {path}; start one with `brokermesh up`")
    description: dict[str, object] = json.loads(path.read_text())
    ca = description.get("tls_ca")
    if ca is None:
        os.environ[tls.PLAINTEXT] = "1"
    elif ca:
        os.environ.setdefault(tls.CA_FILE, str(ca))
    return description


def env_file(plan) -> str:  # type: ignore[no-untyped-def]
    """`<data dir>/env`: what `source` sets for a shell to reach the stack (and trust it)."""
    variables = {"BROKERMESH_GATEWAY_URL": plan.gateway_url, config.DATA_DIR: str(plan.data_dir)}
    if plan.tls_files is not None:
        variables.update(plan.tls_files.client_env())
    return "".join(f"export {name}={value}\n" for name, value in variables.items())


def jwt_secret(data_dir: Path) -> str:
    if os.environ.get(config.JWT_SECRET):
        return os.environ[config.JWT_SECRET]
    path = data_dir / "jwt.secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def hold_data_dir(data_dir: Path) -> IO[str] | None:
    """Takes the data directory for this process (released when the process ends, however it
    ends), or None if another process holds it: one stack per data directory, and nothing
    deletes a directory a stack is using."""
    handle = open(data_dir / ".lock", "a")  # noqa: SIM115 - held for the process's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


# --- up ----------------------------------------------------------------------------------
async def _up(args: argparse.Namespace) -> int:
    from svc_runtime import admin
    from svc_runtime.stack import Infrastructure, Stack, StackPlan

    data_dir = data_dir_from(args)
    data_dir.mkdir(parents=True, exist_ok=True)
    owner = hold_data_dir(data_dir)
    if owner is None:
        sys.exit(f"brokermesh: another `brokermesh up` is running on {data_dir}")
    started = time.monotonic()
    if args.plaintext:
        os.environ[tls.PLAINTEXT] = "1"
    if args.fast_clock is not None:
        os.environ[market_clock.CLOCK] = "fast"
        os.environ[market_clock.FAST_DAY_SECONDS] = str(args.fast_clock)
    # A fast market clock goes on where the last `up` on this data directory left it.
    os.environ.update(market_clock.resume_env(dict(os.environ), data_dir / "market_clock.json"))
    if tls.plaintext():
        print(
            "brokermesh: WARNING: TLS is OFF (--plaintext / BROKERMESH_INSECURE_PLAINTEXT=1): every "
            "listener accepts plain text; tokens and passwords cross the network readable. "
            "For local debugging only.",
            flush=True,
        )
    infra = Infrastructure(data_dir, nats_nodes=CLUSTER_NATS_NODES if args.cluster else 1)
    print(f"brokermesh: data directory {data_dir}")
    infra.start(nats_sync_always=not args.fast_nats)
    previous = None
    if (data_dir / "stack.json").exists():
        previous = json.loads((data_dir / "stack.json").read_text()).get("ports")
    # Ports are proposals (the preferred ones when free): a service that finds one of its ports
    # taken when it binds (another stack starting at the same moment, any other process) exits
    # saying so and is started on others (Stack.start_service(may_move=True)).
    plan = StackPlan.allocate(
        data_dir,
        infra.database_url,
        infra.nats_url,
        preferred=True,
        previous=previous,
        jwt_secret=jwt_secret(data_dir),
        replicas=CLUSTER_REPLICAS if args.cluster else 1,
    )
    if args.cluster:
        cluster_settings(plan)
    if plan.tls_files is not None and plan.tls_files.ca is not None:
        # This process's own clients (readiness checks, the demo users) trust the stack too.
        os.environ[tls.CA_FILE] = str(plan.tls_files.ca)
    venue, profile, instruments = _venue(args)
    if venue:
        plan.use_venue(venue, profile)
        if instruments:
            plan.extra_env["BROKERMESH_MARKETDATA_INSTRUMENTS"] = instruments
        print(f"brokermesh: trading at {venue} (no simulator, no market-data feed)")
    # A demo market moves: liquid symbols trade several times a second unless told otherwise.
    plan.extra_env["BROKERMESH_EXCHANGE_ACTIVITY"] = os.environ.get("BROKERMESH_EXCHANGE_ACTIVITY", "demo")
    # The gateway runs a worker process per core, so streams fan out on every core (in a
    # cluster, each gateway replica is one such process).
    plan.extra_env.setdefault(
        "BROKERMESH_GATEWAY_WORKERS", os.environ.get("BROKERMESH_GATEWAY_WORKERS", str(os.cpu_count() or 1))
    )
    stack = Stack(plan)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            return
        # A second Ctrl-C while stopping: stop now, in the same order, without waiting.
        print("\nbrokermesh: forced stop", flush=True)
        for process in reversed(list(stack.processes.values())):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        infra.kill()
        os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        for name in plan.ports:
            if stop.is_set():
                break
            print(f"brokermesh: starting {name} …", flush=True)
            await stack.start_service(name, may_move=True)
        if not stop.is_set():
            print("brokermesh: waiting until a first order could succeed …", flush=True)
            await _until_ready(plan, stop)
        if not stop.is_set():
            stack.write_description(data_dir / "stack.json")
            (data_dir / "env").write_text(env_file(plan))
            if not args.no_demo:
                await admin.seed_demo(plan, DEMO_USERS)
            _print_banner(plan, data_dir, time.monotonic() - started, demo=not args.no_demo)
            await supervise(stack, infra, stop)
    finally:
        print("\nbrokermesh: stopping …", flush=True)
        await stack.stop()
        for name, code in stack.unclean_stops:
            print(f"brokermesh: {name} did not stop cleanly (exit {code}); see {stack.log_dir / name}.log")
        infra.stop()
        print("brokermesh: stopped", flush=True)
    return 0


# `up --cluster`: a JetStream cluster of three nodes (survives losing one), two processes of
# every service of ours.
CLUSTER_NATS_NODES = 3
CLUSTER_REPLICAS = 2


def cluster_settings(plan) -> None:  # type: ignore[no-untyped-def]
    """What every process of a `--cluster` stack is told: streams and buckets kept on every
    NATS node, and one worker per gateway process (the replicas are the workers)."""
    plan.extra_env[config.NATS_REPLICAS] = str(CLUSTER_NATS_NODES)
    plan.extra_env["BROKERMESH_GATEWAY_WORKERS"] = "1"


async def _until_ready(plan, stop: asyncio.Event) -> None:  # type: ignore[no-untyped-def]
    """Readiness as svc_runtime/readiness.py defines it, or a Ctrl-C. Never up without it: past
    READY_TIMEOUT, what is missing is printed and the wait goes on."""
    from svc_runtime import readiness

    stopping = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            waiting = asyncio.create_task(readiness.wait(plan, timeout=READY_TIMEOUT))
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                waiting.cancel()
                return
            try:
                waiting.result()
                return
            except readiness.NotReady as not_ready:
                print(f"brokermesh: {not_ready}; still waiting (Ctrl-C stops)", flush=True)
    finally:
        stopping.cancel()


def _venue(args: argparse.Namespace) -> tuple[str, str, str]:
    """The venue (--venue, else BROKERMESH_FIX_HOST / BROKERMESH_FIX_PORT), its profile and
    the instrument file; files as absolute paths, for services run from elsewhere."""
    venue = args.venue or ""
    host, port = os.environ.get(config.FIX_HOST, ""), os.environ.get(config.FIX_PORT, "")
    if not venue and (host or port):
        venue = f"{host or '127.0.0.1'}:{port or '9878'}"
    profile = args.venue_profile or os.environ.get(config.VENUE_PROFILE, "")
    if profile.endswith(".cfg") or os.sep in profile:
        profile = os.path.abspath(profile)
    instruments = os.path.abspath(args.instruments) if args.instruments else ""
    return venue, profile, instruments


def _say(text: str) -> None:
    print(f"brokermesh: {text}", flush=True)


async def supervise(stack, infra, stop: asyncio.Event, *, say: Callable[[str], None] = _say) -> None:  # type: ignore[no-untyped-def]
    """Restart whatever dies — a service, or PostgreSQL or NATS when we started them (crash-only
    design) — with backoff, until told to stop. Servers come back on the ports their clients
    know, so the services reconnect by themselves. (The chaos test and bench run it too.)"""
    backoff: dict[str, float] = {}
    restarted: dict[str, float] = {}

    async def restart(name: str, code: int, start: Callable[[], Awaitable[None]]) -> None:
        # Back-off is for a crash loop: a process that ran for a while starts from the shortest delay.
        if time.monotonic() - restarted.get(name, 0.0) > BACKOFF_RESET_SECONDS:
            backoff.pop(name, None)
        delay = backoff.get(name, 0.5)
        say(f"{name} exited with {code}; restarting in {delay:.1f}s")
        await asyncio.sleep(delay)
        backoff[name] = min(delay * 2, 30.0)
        restarted[name] = time.monotonic()
        try:
            await start()
            say(f"{name} is back")
        except Exception as exc:  # keep supervising the others; the next round tries again
            say(f"{name} failed to restart: {exc}")

    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await aio.within(stop.wait(), 1.0)
        if stop.is_set():
            return
        for name, code in infra.exited().items():
            await restart(name, code, lambda name=name: asyncio.to_thread(infra.restart, name))
        for name, process in list(stack.processes.items()):
            if process.returncode is not None and not stop.is_set():
                await restart(name, process.returncode, lambda name=name: stack.start_service(name))


def _print_banner(plan, data_dir: Path, seconds: float, *, demo: bool) -> None:  # type: ignore[no-untyped-def]
    d = plan.describe()
    lines = [
        "",
        f"brokermesh is up ({seconds:.1f}s).",
        f"  web trader     {d['gateway_url']}/",
        f"  REST + SSE     {d['gateway_url']}/v1",
        f"  API docs       {d['docs_url']}",
        f"  OpenAPI        {d['gateway_url']}/v1/openapi.json",
        f"  internal       http://127.0.0.1:{plan.ports['gateway']['metrics']}/metrics, /healthz (details)",
    ]
    for name, target in d["grpc"].items():  # type: ignore[union-attr]
        lines.append(f"  gRPC {name:<14} {target}")
    lines += [
        f"  FIX (exchange) {d['fix']} ({d['venue']})",
        f"  NATS           {d['nats_url']} (namespace {d['namespace']})",
        f"  logs           {data_dir / 'logs'}",
        "  CORS origins   "
        + (os.environ.get("BROKERMESH_CORS_ORIGINS") or "none (set BROKERMESH_CORS_ORIGINS)"),
        f"  endpoints      source {data_dir / 'env'}",
        "  TLS            "
        + (
            "OFF: plain text (--plaintext)"
            if plan.tls_files is None
            else f"1.2+, certificate {plan.tls_files.cert}"
            + (f", CA {plan.tls_files.ca}" if plan.tls_files.ca else "")
        ),
        f"  credentials    {data_dir / 'credentials'} (operators: brokermesh admin --operator …)",
    ]
    if demo:
        lines.append("  demo users     " + ", ".join(f"{u} / {p}" for u, p, _, _ in DEMO_USERS))
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


# --- admin -------------------------------------------------------------------------------
async def _admin(args: argparse.Namespace) -> int:
    import grpc

    try:
        return await _admin_command(args)
    except grpc.aio.AioRpcError as error:
        sys.exit(f"brokermesh: {error.code().name}: {error.details()}")


_LIMIT_OPTIONS = {
    "max_order_value": "rupees one order may be worth",
    "max_order_quantity": "shares in one order",
    "max_open_orders": "working orders at once",
    "max_position_quantity": "net shares of one symbol, long or short",
    "max_daily_loss": "today's loss (rupees) after which only closing orders go through",
}


async def _risk_limits(args: argparse.Namespace, orders: str, signer: Signer) -> object:
    from svc_runtime import admin

    name = f"users/{args.user}/riskLimits" if args.user else f"segments/{args.segment}/riskLimits"
    if args.action == "show":
        return await admin.risk_limits(orders, name, signer=signer)
    changes: dict[str, str | bool | None] = {}
    for option in _LIMIT_OPTIONS:
        value = getattr(args, option)
        if value is not None:
            changes[option] = None if value == "none" else value
    if args.halt is not None:
        changes["trading_halted"] = args.halt == "on"
    if not changes:
        sys.exit("brokermesh: risk-limits set needs at least one limit or --halt")
    return await admin.set_risk_limits(orders, name, changes, signer=signer)


def _risk_limits_parser(admin_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    limits = admin_sub.add_parser(
        "risk-limits",
        help="show or set a user's or a segment's risk limits (the tightest of user, segment "
        "and broker default applies)",
    )
    limits.add_argument("action", choices=("show", "set"))
    whose = limits.add_mutually_exclusive_group(required=True)
    whose.add_argument("--user", help="a user id")
    whose.add_argument("--segment", choices=("CNC", "INTRADAY"), help="a product segment")
    for option, what in _LIMIT_OPTIONS.items():
        limits.add_argument("--" + option.replace("_", "-"), help=f"{what}; 'none' clears it")
    limits.add_argument(
        "--halt",
        choices=("on", "off"),
        help="the scope's own kill switch; on also cancels its working orders",
    )


async def _admin_command(args: argparse.Namespace) -> int:
    from svc_runtime import admin, auth

    data_dir = data_dir_from(args)
    if args.admin_command == "rotate-signing-key":
        return _rotate_signing_key(data_dir, args.operator)
    grpc_targets: dict[str, str] = stack_description(data_dir)["grpc"]  # type: ignore[assignment]
    try:
        signer = auth.operator_signer(auth.load_credentials(data_dir).operator(args.operator))
    except (FileNotFoundError, KeyError) as error:
        sys.exit(f"brokermesh: {error}")
    funds, orders = grpc_targets["svc_funds"], grpc_targets["svc_orders"]
    command = args.admin_command
    result: object
    if command == "create-user":
        result = await admin.create_user(
            funds,
            args.username,
            args.password,
            args.display_name or args.username,
            args.deposit,
            signer=signer,
        )
    elif command in ("deposit", "withdraw"):
        result = await admin.move_cash(
            funds,
            args.user_id,
            args.amount,
            withdraw=command == "withdraw",
            signer=signer,
            request_id=args.request_id or "",
        )
    elif command == "balances":
        result = await admin.balances(funds, args.user_ids, signer=signer)
    elif command == "set-bank-account":
        result = await admin.set_bank_account(
            funds, args.user_id, args.account_number, args.ifsc, signer=signer
        )
    elif command == "kill-switch":
        if args.state == "status":
            result = await admin.trading_controls(orders, signer=signer)
        else:
            result = await admin.set_kill_switch(orders, args.state == "on", args.reason, signer=signer)
    elif command in ("halt", "resume"):
        result = await admin.halt_symbol(orders, args.symbol, command == "halt", signer=signer)
    elif command == "cancel-all":
        result = await admin.cancel_all(orders, args.user_id, signer=signer)
    elif command == "risk-limits":
        result = await _risk_limits(args, orders, signer)
    elif command == "end-of-day":
        result = await admin.end_of_day(funds, args.trading_day or "", signer=signer)
    elif command == "audit-trail":
        parent = f"users/{args.user_id}" if args.user_id else "users/-"
        if args.order_id:
            parent = f"{parent}/orders/{args.order_id}"
        result = await admin.audit_trail(orders, parent, args.limit, signer=signer)
    elif command == "fix-session":
        result = await admin.fix_session(grpc_targets["svc_exec"], signer=signer)
    elif command == "end-order":
        result = await admin.end_order(grpc_targets["svc_exec"], args.order_id, args.reason, signer=signer)
    else:  # pragma: no cover - argparse allows only the commands above
        raise AssertionError(command)
    if isinstance(result, list):
        for row in result:
            print(json.dumps(row))
    else:
        print(json.dumps(result, indent=2))
    return 0


def _admin_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    admin_parser = sub.add_parser("admin", help="operate a running stack (as an operator)")
    admin_parser.add_argument(
        "--operator",
        default="admin",
        help="whose credentials to use, from <data dir>/credentials/operators.json (default admin)",
    )
    admin_sub = admin_parser.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create-user", help="open an account with a password and a deposit")
    create.add_argument("username")
    create.add_argument("--password", required=True)
    create.add_argument("--display-name")
    create.add_argument("--deposit", default="0", help="opening deposit in rupees, e.g. 100000.00")
    for name, what in (("deposit", "deposit cash"), ("withdraw", "withdraw cash")):
        move = admin_sub.add_parser(name, help=what)
        move.add_argument("user_id")
        move.add_argument("amount")
        move.add_argument("--request-id", help="idempotency key: the same key is applied once")
    bank = admin_sub.add_parser("set-bank-account", help="register the bank account a user withdraws to")
    bank.add_argument("user_id")
    bank.add_argument("account_number", help="9 to 18 digits")
    bank.add_argument("ifsc", help="the branch's IFSC, e.g. HDFC0001234")
    balances = admin_sub.add_parser("balances", help="print cash balances (all users if none named)")
    balances.add_argument("user_ids", nargs="*")
    kill = admin_sub.add_parser("kill-switch", help="stop (on) or allow (off) all new orders, or show")
    kill.add_argument("state", choices=("on", "off", "status"))
    kill.add_argument("--reason", default="", help="shown to users whose orders are refused")
    for name, what in (("halt", "refuse new orders in a symbol"), ("resume", "accept them again")):
        admin_sub.add_parser(name, help=what).add_argument("symbol")
    cancel = admin_sub.add_parser("cancel-all", help="cancel every working order of a user")
    cancel.add_argument("user_id")
    _risk_limits_parser(admin_sub)
    eod = admin_sub.add_parser("end-of-day", help="close the trading day: settle intraday positions")
    eod.add_argument("--trading-day", help="YYYY-MM-DD (default: the current one)")
    trail = admin_sub.add_parser("audit-trail", help="list audit records, oldest first")
    trail.add_argument("--user-id")
    trail.add_argument("--order-id", help="with --user-id: one order's records")
    trail.add_argument("--limit", type=int, default=100)
    admin_sub.add_parser("fix-session", help="the FIX order-entry session's status")
    admin_sub.add_parser(
        "rotate-signing-key",
        help="sign users' tokens with a new key; the old one still verifies until its tokens expire",
    )
    end = admin_sub.add_parser(
        "end-order",
        help="end a working order the venue does not hold (flagged as needing attention); "
        "the venue is asked first, and an order it holds is refused",
    )
    end.add_argument("order_id")
    end.add_argument("--reason", required=True, help="what the venue said; kept in the order's status reason")


def _rotate_signing_key(data_dir: Path, operator_name: str) -> int:
    """A new key for users' tokens, in the signing-keys file every process re-reads; the
    rotation is recorded with the operator's name in `credentials/key-rotations.log`."""
    from svc_runtime import auth, tokens

    try:
        credentials = auth.load_credentials(data_dir)
        operator = credentials.operator(operator_name)
    except (FileNotFoundError, KeyError) as error:
        sys.exit(f"brokermesh: {error}")
    if operator.role is not auth.Role.ADMIN:
        sys.exit(f"brokermesh: PERMISSION_DENIED: operator {operator_name} may not rotate keys")
    now = time.time()
    previous, kid = tokens.rotate_signing_key(credentials.signing_keys_file, jwt_secret(data_dir), now)
    record = {"at": now, "actor": f"operator:{operator.name}", "action": "rotate-signing-key"}
    record |= {"previous": previous, "current": kid}
    auth.append_private_line(credentials.signing_keys_file.with_name("key-rotations.log"), json.dumps(record))
    print(json.dumps(record, indent=2))
    return 0


async def _audit(args: argparse.Namespace) -> int:
    from svc_runtime import audit, auth

    data_dir = data_dir_from(args)
    description = stack_description(data_dir)
    signer = auth.operator_signer(auth.load_credentials(data_dir).operator(args.operator))
    report = await audit.run(description, signer=signer)
    print(report.render())
    return report.exit_code(strict=args.strict)


def _destroy(args: argparse.Namespace) -> int:
    from svc_runtime.infra.postgres import EmbeddedPostgres

    data_dir = data_dir_from(args)
    if not data_dir.exists():
        print(f"brokermesh: nothing to delete: {data_dir} does not exist")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            sys.exit("brokermesh: destroy deletes every user, order and balance; pass --yes to confirm")
        if input(f"Delete {data_dir} and everything it owns? [y/N] ").strip().lower() != "y":
            return 1
    owner = hold_data_dir(data_dir)
    if owner is None:
        sys.exit(f"brokermesh: a stack is running on {data_dir}; stop it first")
    postgres = EmbeddedPostgres(data_dir / "postgres")
    elsewhere = postgres.cluster_outside()
    postgres.remove()
    shutil.rmtree(data_dir)
    print(f"brokermesh: deleted {data_dir}" + (f" and {elsewhere}" if elsewhere else ""))
    return 0


# --- test, gen, bench ----------------------------------------------------------------------
# Browsers the tests in tests/browser drive (Debian's package names are also the commands).
CHROMIUM_COMMANDS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
BROWSER_ENV = "BROKERMESH_CHROMIUM"


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, CHROMIUM_COMMANDS)), None)


def _ensure_chromium() -> str | None:
    """A headless Chromium for tests/browser: the one installed, or Debian's package installed
    once when we may (root with apt-get). Elsewhere None: those tests skip and say why."""
    found = find_chromium()
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    print("brokermesh: installing chromium-headless-shell for tests/browser …", file=sys.stderr, flush=True)
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium-headless-shell"],
    ):
        done = subprocess.run(step, env=apt_env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"brokermesh: {' '.join(step)} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return None
    return find_chromium()


def _parallel(argv: list[str]) -> list[str]:
    """`BROKERMESH_TEST_WORKERS=N` runs the suite on N pytest-xdist workers: most of its time is
    spent waiting on whole stacks, and each worker has its own PostgreSQL and NATS. A module
    stays on one worker, so its stack fixtures start once. One process is the default."""
    if any(a == "-n" or a.startswith(("-n", "--numprocesses", "-p")) for a in argv):
        return []
    workers = os.environ.get("BROKERMESH_TEST_WORKERS", "1")
    if workers in ("0", "1"):
        return []
    return ["-n", workers, "--dist", "loadfile"]


def _test(argv: list[str]) -> int:
    env = {**os.environ}
    if not env.get(BROWSER_ENV):
        browser = _ensure_chromium()
        if browser:
            env[BROWSER_ENV] = browser
    steps = [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        [sys.executable, "-m", "pytest", *_parallel(argv), *argv],
    ]
    for step in steps:
        result = subprocess.run(step, cwd=REPO_ROOT, env=env, check=False)
        if result.returncode != 0:
            return result.returncode
    return 0


def _bench(argv: list[str]) -> int:
    from bench import harness

    return harness.main(argv)


# --- images, secrets: running elsewhere than under `up` (docs/deployment.md) -------------------
def _deploy_parsers(sub: Any) -> None:
    images = sub.add_parser("images", help="build one container image per process (docker build)")
    images.add_argument("services", nargs="*", help="only these processes (default: all six)")
    images.add_argument("--tag", default=_version(), help="image tag (default: the project's version)")
    images.add_argument("--print", action="store_true", help="print the commands instead of running them")
    made = sub.add_parser("secrets", help="make the credentials and TLS material a deployment mounts")
    made.add_argument(
        "directory", type=Path, help="where to write them (deploy/compose.yaml: deploy/secrets)"
    )
    made.add_argument("--hostname", action="append", default=[], help="another name for the certificate")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("brokermesh")
    except PackageNotFoundError:
        return "latest"


def _deploy(args: argparse.Namespace) -> int:
    from svc_runtime import deploy

    if args.command == "secrets":
        env_file = deploy.write_secrets(args.directory, tuple(args.hostname))
        print(f"credentials and TLS in {args.directory}; environment in {env_file} (keep them secret)")
        return 0
    commands = deploy.build_commands(args.tag, tuple(args.services) or deploy.SERVICE_NAMES)
    if args.print or not deploy.docker_available():
        if not args.print:
            print("# no docker on this machine; from the repository root run:", file=sys.stderr)
        print("\n".join(shlex.join(command) for command in commands))
        return 0
    return deploy.build_images(commands, Path(__file__).resolve().parent.parent)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["test"]:
        sys.exit(_test(argv[1:]))
    if argv[:1] == ["bench"]:
        sys.exit(_bench(argv[1:]))
    parser = argparse.ArgumentParser(prog="brokermesh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="where the stack keeps its data (default ./.brokermesh)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole stack; Ctrl-C stops it")
    up.add_argument("--no-demo", action="store_true", help="do not create the demo users")
    up.add_argument(
        "--plaintext",
        action="store_true",
        help="no TLS on any listener, for local debugging only (as BROKERMESH_INSECURE_PLAINTEXT=1)",
    )
    up.add_argument(
        "--fast-clock",
        type=float,
        metavar="SECONDS",
        help="a fast market clock: a whole market day (pre-open, open, close, square-off, end of "
        "day) in SECONDS wall seconds (as BROKERMESH_MARKET_CLOCK=fast)",
    )
    up.add_argument(
        "--fast-nats",
        action="store_true",
        help="let JetStream acknowledge before fsync (faster; an OS crash may lose acked messages)",
    )
    up.add_argument(
        "--cluster",
        action="store_true",
        help=f"a {CLUSTER_NATS_NODES}-node NATS JetStream cluster and {CLUSTER_REPLICAS} processes of every "
        "service on this machine (svc_exec active/standby, the others active/active)",
    )
    up.add_argument(
        "--venue",
        metavar="HOST:PORT",
        help="trade at this FIX acceptor instead of starting the simulator "
        "(default: BROKERMESH_FIX_HOST / BROKERMESH_FIX_PORT if set)",
    )
    up.add_argument(
        "--venue-profile",
        metavar="NAME|FILE",
        help="how the venue speaks FIX: fix44 (default), fix42, fix44-tolerant, or a session "
        "file (default: BROKERMESH_VENUE_PROFILE)",
    )
    up.add_argument(
        "--instruments",
        metavar="CSV",
        help="with --venue: the instrument master (symbol,company_name,isin,lot_size,tick_size,"
        "previous_close,sector)",
    )
    sub.add_parser("gen", help="regenerate gen/ from proto/ and the OpenAPI Reason enum")
    sub.add_parser("test", help="run the test suite (arguments go to pytest)")
    sub.add_parser("bench", help="run benchmarks (see `brokermesh bench --help`)")
    audit_parser = sub.add_parser("audit", help="check the invariants across the running stack")
    audit_parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 also when some orders could not be checked (the exchange no longer answers for them)",
    )
    audit_parser.add_argument("--operator", default="auditor", help="whose credentials to use")
    destroy = sub.add_parser(
        "destroy", help="delete a stopped stack's data directory, including a cluster kept elsewhere for it"
    )
    destroy.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _admin_parser(sub)
    _deploy_parsers(sub)
    args = parser.parse_args(argv)

    logs.configure("cli", level=os.environ.get("BROKERMESH_LOG_LEVEL", "WARNING"))
    logging.getLogger().setLevel(logging.WARNING)
    if args.command == "gen":
        from svc_runtime import codegen

        codegen.main()
        sys.exit(0)
    if args.command == "destroy":
        sys.exit(_destroy(args))
    if args.command in ("images", "secrets"):
        sys.exit(_deploy(args))
    handlers = {"up": _up, "admin": _admin, "audit": _audit}
    sys.exit(asyncio.run(handlers[args.command](args)))
