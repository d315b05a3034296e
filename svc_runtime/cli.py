"""`brokermesh`: run the stack, administer it, check it, test it.

brokermesh up              start PostgreSQL, NATS, the exchange simulator, every service
                           and the gateway; Ctrl-C stops them all
brokermesh test [ARGS]     run the test suite (ARGS go to pytest)
brokermesh gen             regenerate gen/ from proto/
brokermesh admin ...       create users, deposit, print balances
brokermesh audit           check invariants I1–I6 (docs/architecture.md §5); exit 1 on any violation
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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

from svc_runtime import config, logs

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_USERS = (
    ("asha", "asha-demo-pass", "Asha Rao", "1000000.00"),
    ("ravi", "ravi-demo-pass", "Ravi Iyer", "250000.00"),
)


def data_dir_from(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get(config.DATA_DIR) or REPO_ROOT / ".brokermesh").resolve()


def stack_description(data_dir: Path) -> dict[str, object]:
    path = data_dir / "stack.json"
    if not path.exists():
        sys.exit(f"no running stack described in {path}; start one with `brokermesh up`")
    return json.loads(path.read_text())


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


def machine_lock(name: str) -> IO[bytes]:
    """A lock shared by every stack on this machine, whoever runs it; released by closing the
    returned file or by the process ending."""
    path = Path(tempfile.gettempdir()) / f"brokermesh-{name}.lock"
    handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_CREAT, 0o644), "rb")
    fcntl.flock(handle, fcntl.LOCK_EX)
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
    infra = Infrastructure(data_dir)
    print(f"brokermesh: data directory {data_dir}")
    infra.start(nats_sync_always=not args.fast_nats)
    previous = None
    if (data_dir / "stack.json").exists():
        previous = json.loads((data_dir / "stack.json").read_text()).get("ports")
    # Ports are chosen by probing and bound later by the services: stacks starting at the same
    # moment on one machine take turns from choosing to listening, so they cannot both pick one.
    ports_lock = machine_lock("ports")
    plan = StackPlan.allocate(
        data_dir,
        infra.database_url,
        infra.nats_url,
        preferred=True,
        previous=previous,
        jwt_secret=jwt_secret(data_dir),
    )
    # A demo market moves: liquid symbols trade several times a second unless told otherwise.
    plan.extra_env["BROKERMESH_EXCHANGE_ACTIVITY"] = os.environ.get("BROKERMESH_EXCHANGE_ACTIVITY", "demo")
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
            await stack.start_service(name)
        ports_lock.close()
        if not stop.is_set():
            stack.write_description(data_dir / "stack.json")
            (data_dir / "env").write_text(
                f"export BROKERMESH_GATEWAY_URL={plan.gateway_url}\nexport BROKERMESH_DATA_DIR={data_dir}\n"
            )
            if not args.no_demo:
                await admin.seed_demo(plan, DEMO_USERS)
            _print_banner(plan, data_dir, time.monotonic() - started, demo=not args.no_demo)
            await _supervise(stack, infra, stop)
    finally:
        print("\nbrokermesh: stopping …", flush=True)
        await stack.stop()
        infra.stop()
        print("brokermesh: stopped", flush=True)
    return 0


async def _supervise(stack, infra, stop: asyncio.Event) -> None:  # type: ignore[no-untyped-def]
    """Restart whatever dies — a service, or PostgreSQL or NATS when we started them (crash-only
    design) — with backoff, until told to stop. Servers come back on the ports their clients
    know, so the services reconnect by themselves."""
    backoff: dict[str, float] = {}

    async def restart(name: str, code: int, start: Callable[[], Awaitable[None]]) -> None:
        delay = backoff.get(name, 0.5)
        print(f"brokermesh: {name} exited with {code}; restarting in {delay:.1f}s", flush=True)
        await asyncio.sleep(delay)
        backoff[name] = min(delay * 2, 30.0)
        try:
            await start()
            print(f"brokermesh: {name} is back", flush=True)
        except Exception as exc:  # keep supervising the others; the next round tries again
            print(f"brokermesh: {name} failed to restart: {exc}", flush=True)

    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
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
    ]
    for name, target in d["grpc"].items():  # type: ignore[union-attr]
        lines.append(f"  gRPC {name:<14} {target}")
    lines += [
        f"  FIX (exchange) {d['fix']}",
        f"  NATS           {d['nats_url']} (namespace {d['namespace']})",
        f"  logs           {data_dir / 'logs'}",
        f"  endpoints      source {data_dir / 'env'}",
    ]
    if demo:
        lines.append("  demo users     " + ", ".join(f"{u} / {p}" for u, p, _, _ in DEMO_USERS))
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


# --- admin -------------------------------------------------------------------------------
async def _admin(args: argparse.Namespace) -> int:
    from svc_runtime import admin

    description = stack_description(data_dir_from(args))
    funds_target = description["grpc"]["svc_funds"]  # type: ignore[index]
    if args.admin_command == "create-user":
        user = await admin.create_user(
            funds_target, args.username, args.password, args.display_name or args.username, args.deposit
        )
        print(json.dumps(user, indent=2))
    elif args.admin_command == "deposit":
        print(json.dumps(await admin.deposit(funds_target, args.user_id, args.amount), indent=2))
    elif args.admin_command == "balances":
        for row in await admin.balances(funds_target, args.user_ids):
            print(json.dumps(row))
    return 0


async def _audit(args: argparse.Namespace) -> int:
    from svc_runtime import audit

    description = stack_description(data_dir_from(args))
    report = await audit.run(description)
    print(report.render())
    return 0 if report.ok else 1


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
def _test(argv: list[str]) -> int:
    env = {**os.environ}
    steps = [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        [sys.executable, "-m", "pytest", *argv],
    ]
    for step in steps:
        result = subprocess.run(step, cwd=REPO_ROOT, env=env, check=False)
        if result.returncode != 0:
            return result.returncode
    return 0


def _bench(argv: list[str]) -> int:
    from bench import harness

    return harness.main(argv)


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
        "--fast-nats",
        action="store_true",
        help="let JetStream acknowledge before fsync (faster; an OS crash may lose acked messages)",
    )
    sub.add_parser("gen", help="regenerate gen/ from proto/")
    sub.add_parser("test", help="run the test suite (arguments go to pytest)")
    sub.add_parser("bench", help="run benchmarks (see `brokermesh bench --help`)")
    sub.add_parser("audit", help="check the invariants across the running stack")
    destroy = sub.add_parser(
        "destroy", help="delete a stopped stack's data directory, including a cluster kept elsewhere for it"
    )
    destroy.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    admin_parser = sub.add_parser("admin", help="administer a running stack")
    admin_sub = admin_parser.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create-user", help="open an account with a password and a deposit")
    create.add_argument("username")
    create.add_argument("--password", required=True)
    create.add_argument("--display-name")
    create.add_argument("--deposit", default="0", help="opening deposit in rupees, e.g. 100000.00")
    deposit = admin_sub.add_parser("deposit", help="deposit cash")
    deposit.add_argument("user_id")
    deposit.add_argument("amount")
    balances = admin_sub.add_parser("balances", help="print cash balances (all users if none named)")
    balances.add_argument("user_ids", nargs="*")
    args = parser.parse_args(argv)

    logs.configure("cli", level=os.environ.get("BROKERMESH_LOG_LEVEL", "WARNING"))
    logging.getLogger().setLevel(logging.WARNING)
    if args.command == "gen":
        from svc_runtime import codegen

        codegen.main()
        sys.exit(0)
    if args.command == "destroy":
        sys.exit(_destroy(args))
    handlers = {"up": _up, "admin": _admin, "audit": _audit}
    sys.exit(asyncio.run(handlers[args.command](args)))
