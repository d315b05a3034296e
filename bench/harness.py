"""`brokermesh bench`: run benchmark scenarios with same-run baselines and write the results.

    brokermesh bench                       every scenario (full mode: several runs each)
    brokermesh bench --quick               the quick subset, short runs (a smoke check, < 3 min)
    brokermesh bench orders sse            scenarios by name, dotted prefix, module or glob
    brokermesh bench --list                what there is
    brokermesh bench --stack .brokermesh   use the stack `brokermesh up` is running there

It starts PostgreSQL and NATS itself (the same launchers as `brokermesh up` and the tests)
unless BROKERMESH_DATABASE_URL / BROKERMESH_NATS_URL name servers, and scenarios start the
service processes they need. The baselines run first whenever anything else is selected.
Results go to bench/results/<UTC time>/: results.json, report.md and one PNG per scenario
with latencies; the table is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import importlib
import json
import logging
import os
import pkgutil
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import machine, report
from bench.api import BenchContext, Scenario
from svc_runtime import config

if TYPE_CHECKING:
    from collections.abc import Sequence

    from svc_runtime.stack import Infrastructure, Stack, StackPlan

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_ROOT = REPO_ROOT / "bench" / "results"
BASELINES_MODULE = "baselines"
log = logging.getLogger(__name__)


# --- discovery and selection --------------------------------------------------------------
def discover() -> tuple[dict[str, list[Scenario]], dict[str, str]]:
    """Scenario modules of `bench/scenarios/` → their scenarios; and modules that failed to
    import → the error (reported, never fatal: one broken module must not hide the rest)."""
    import bench.scenarios

    found: dict[str, list[Scenario]] = {}
    broken: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(bench.scenarios.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"bench.scenarios.{info.name}")
        except Exception:
            broken[info.name] = traceback.format_exc()
            continue
        scenarios = getattr(module, "SCENARIOS", None)
        if isinstance(scenarios, list):
            found[info.name] = [s for s in scenarios if isinstance(s, Scenario)]
    return found, broken


def matches(pattern: str, module: str, scenario: Scenario) -> bool:
    name = scenario.name
    return (
        pattern in (name, module)
        or name.startswith(pattern + ".")
        or fnmatch.fnmatchcase(name, pattern)
        or fnmatch.fnmatchcase(module, pattern)
    )


def select(
    modules: dict[str, list[Scenario]], patterns: list[str], *, quick: bool, baselines: bool
) -> list[tuple[str, Scenario]]:
    """Scenarios to run, baselines first. With no pattern: all (the quick subset in quick
    mode). Anything selected besides baselines brings every baseline along, since its ratios
    need them."""
    everything = [(module, s) for module, scenarios in modules.items() for s in scenarios]
    if patterns:
        unknown = [p for p in patterns if not any(matches(p, m, s) for m, s in everything)]
        if unknown:
            raise SystemExit(f"no scenario matches {', '.join(unknown)}; see `brokermesh bench --list`")
        chosen = [(m, s) for m, s in everything if any(matches(p, m, s) for p in patterns)]
    else:
        chosen = [(m, s) for m, s in everything if s.in_quick or not quick]
    wants_others = any(m != BASELINES_MODULE for m, _ in chosen)
    if baselines and wants_others:
        chosen += [(BASELINES_MODULE, s) for s in modules.get(BASELINES_MODULE, [])]
    if not baselines:
        chosen = [(m, s) for m, s in chosen if m != BASELINES_MODULE]
    unique: dict[str, tuple[str, Scenario]] = {}
    for module, scenario in chosen:
        unique.setdefault(scenario.name, (module, scenario))
    ordered = list(unique.values())
    return [x for x in ordered if x[0] == BASELINES_MODULE] + [x for x in ordered if x[0] != BASELINES_MODULE]


# --- the run ------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over scenarios with the running scenario's status beside it; where stderr
    is not a terminal (CI logs), one line per scenario instead."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        from tqdm import tqdm

        self.total = total
        self.index = 0
        self.interactive = enabled and sys.stderr.isatty()
        self.quiet = not enabled
        self.bar = tqdm(
            total=total,
            unit="scenario",
            file=sys.stderr,
            disable=not self.interactive,
            dynamic_ncols=True,
            bar_format="{desc} |{bar:24}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}",
            mininterval=0.5,
        )

    def scenario(self, name: str) -> None:
        self.index += 1
        self.bar.set_description_str(name)
        self.bar.set_postfix_str("")
        if not self.interactive and not self.quiet:
            print(f"bench: [{self.index}/{self.total}] {name}", file=sys.stderr, flush=True)

    def status(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    def done(self) -> None:
        self.bar.update(1)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class Stacks:
    """Starts stacks for scenarios (fresh database and namespace each) or hands out the
    running one, and stops what a scenario started once it is done."""

    def __init__(
        self, workdir: Path, infra: Infrastructure, running: dict[str, Any] | None, running_dir: Path | None
    ) -> None:
        self.workdir = workdir
        self.infra = infra
        self.running = running
        self.running_dir = running_dir
        self._trust(running)
        self.started: list[Stack] = []
        self.shared: dict[tuple[object, ...], Stack] = {}
        self.count = 0

    async def new_database(self) -> str:
        from svc_runtime.db import create_database

        if not self.infra.database_url:
            raise RuntimeError("no PostgreSQL server for this run")
        self.count += 1
        return await create_database(
            self.infra.database_url, f"bench_{os.getpid()}_{self.count}_{int(time.time())}"
        )

    def new_namespace(self) -> str:
        self.count += 1
        return f"bench{os.getpid()}n{self.count}"

    async def start(
        self, services: Sequence[str] | None = None, extra_env: dict[str, str] | None = None
    ) -> Stack:
        from svc_runtime.stack import SERVICE_NAMES, Stack, StackPlan

        if self.running is not None:
            return Stack(self._running_plan())
        self.count += 1
        plan = StackPlan.allocate(
            self.workdir / f"stack{self.count}",
            await self.new_database(),
            self.infra.nats_url,
            namespace=self.new_namespace(),
            jwt_secret=f"bench-jwt-secret-{os.getpid()}-{self.count}-{time.time_ns()}",
        )
        plan.extra_env.update(extra_env or {})
        stack = Stack(plan)
        self.started.append(stack)
        await stack.start(tuple(services) if services else SERVICE_NAMES)
        return stack

    async def shared_stack(
        self, services: Sequence[str] | None = None, extra_env: dict[str, str] | None = None
    ) -> Stack:
        key = (tuple(services or ()), tuple(sorted((extra_env or {}).items())))
        stack = self.shared.get(key)
        if stack is None or any(p.returncode is not None for p in stack.processes.values()):
            if stack is not None:  # a service died in an earlier scenario: start afresh
                with contextlib.suppress(Exception):
                    await stack.stop()
            stack = await self.start(services, extra_env)
            if stack in self.started:  # not stopped with the scenario that started it
                self.started.remove(stack)
            self.shared[key] = stack
        return stack

    def _trust(self, running: dict[str, Any] | None) -> None:
        """This run's TLS: the running stack's CA, or one certificate for every stack the run
        starts (given to them as an operator's own), trusted by this process's clients."""
        from svc_runtime import tls

        if running is not None:
            ca = running.get("tls_ca")
            if ca is None:
                os.environ[tls.PLAINTEXT] = "1"
            elif ca:
                os.environ[tls.CA_FILE] = str(ca)
            return
        if tls.plaintext():
            return
        os.environ.update(tls.ensure(self.workdir).env())

    def _running_plan(self) -> StackPlan:
        from svc_runtime import auth, tls
        from svc_runtime.stack import StackPlan

        assert self.running is not None and self.running_dir is not None
        secret_file = self.running_dir / "jwt.secret"
        return StackPlan(
            data_dir=self.running_dir,
            database_url=os.environ.get(config.DATABASE_URL, ""),
            nats_url=str(self.running["nats_url"]),
            namespace=str(self.running["namespace"]),
            ports={k: dict(v) for k, v in self.running["ports"].items()},
            jwt_secret=os.environ.get(config.JWT_SECRET)
            or (secret_file.read_text().strip() if secret_file.exists() else ""),
            credentials=auth.load_credentials(self.running_dir),
            tls_files=None if self.running.get("tls_ca") is None else tls.ensure(self.running_dir),
        )

    async def stop_all(self, *, shared: bool = False) -> None:
        """Stop the stacks scenarios started (and, at the end of the run, the shared ones)."""
        while self.started:
            stack = self.started.pop()
            with contextlib.suppress(Exception):
                await stack.stop()
        if shared:
            while self.shared:
                _, stack = self.shared.popitem()
                with contextlib.suppress(Exception):
                    await stack.stop()


def _server_pids(infra: Infrastructure) -> dict[str, int]:
    handles = {"postgres": infra.postgres, "nats": infra.nats}
    return {name: h.process.pid for name, h in handles.items() if h is not None and h.process.poll() is None}


def _running_stack(path: str | None) -> tuple[dict[str, Any] | None, Path | None]:
    if not path:
        return None, None
    candidate = Path(path).resolve()
    description = candidate if candidate.is_file() else candidate / "stack.json"
    if not description.exists():
        raise SystemExit(f"no stack description at {description}; start one with `brokermesh up`")
    return json.loads(description.read_text()), description.parent


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="brokermesh-bench-"))
    # Traversable by the unprivileged PostgreSQL user when running as root.
    path.chmod(0o711)
    try:
        yield path
    finally:
        if keep:
            print(f"bench: work directory kept at {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


async def run(args: argparse.Namespace, selected: list[tuple[str, Scenario]], broken: dict[str, str]) -> int:
    from svc_runtime.stack import Infrastructure

    started_at: datetime = args.started_at
    results_dir: Path = args.results_dir
    running, running_dir = _running_stack(args.stack)
    description = machine.describe(REPO_ROOT)
    outcomes: list[report.Outcome] = [
        report.Outcome(f"import {name}", "scenario module failed to import", error=error)
        for name, error in broken.items()
    ]
    clock = time.monotonic()
    with _workdir(args.keep_workdir) as workdir:
        infra = Infrastructure(workdir)
        if running is not None and not os.environ.get(config.NATS_URL):
            infra.nats_url = str(running["nats_url"])
        progress = Progress(len(selected), enabled=not args.no_progress)
        progress.status("starting PostgreSQL and NATS")
        stacks: Stacks | None = None
        try:
            # pg_stat_statements lets scenarios count statements per operation (bench.cost).
            await asyncio.to_thread(
                infra.start,
                nats_sync_always=True,
                postgres_settings={"shared_preload_libraries": "pg_stat_statements"},
            )
            description["servers"] = await machine.server_versions(infra.database_url, infra.nats_url)
            stacks = Stacks(workdir, infra, running, running_dir)
            ctx = BenchContext(
                quick=args.quick,
                workdir=workdir,
                database_url=infra.database_url,
                nats_url=infra.nats_url,
                new_database=stacks.new_database,
                new_namespace=stacks.new_namespace,
                start_stack=stacks.start,
                progress=progress.status,
                shared_stack=stacks.shared_stack,
                servers=lambda: _server_pids(infra),
            )
            for _module, scenario in selected:
                progress.scenario(scenario.name)
                outcome = report.Outcome(scenario.name, scenario.description)
                began = time.monotonic()
                try:
                    outcome.figures = list(await asyncio.wait_for(scenario.run(ctx), args.scenario_timeout))
                except Exception as error:
                    outcome.error = traceback.format_exc()
                    outcome.summary = " ".join(f"{type(error).__name__}: {error}".split())[:300]
                    progress.write(f"bench: {scenario.name} failed: {outcome.summary}")
                finally:
                    await stacks.stop_all()
                outcome.seconds = time.monotonic() - began
                outcomes.append(outcome)
                progress.done()
        finally:
            progress.close()
            if stacks is not None:
                await stacks.stop_all(shared=True)
            # A kept work directory keeps its data; otherwise delete what the servers stored,
            # including a cluster kept under /var/lib/brokermesh on our behalf.
            await asyncio.to_thread(infra.stop if args.keep_workdir else infra.destroy)

    run_info = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": time.monotonic() - clock,
        "command": "brokermesh bench " + shlex.join(args.argv),
        "quick": args.quick,
        "machine": description,
        "load_average_end": machine.load_average(),
        "results_dir": str(results_dir),
    }
    plots: dict[str, Path] = {}
    if not args.no_plots:
        for outcome in outcomes:
            try:
                path = report.plot_scenario(outcome, results_dir)
            except Exception:
                log.warning("plot failed", exc_info=True, extra={"scenario": outcome.name})
                continue
            if path is not None:
                plots[outcome.name] = path
    report.write_json(results_dir / "results.json", report.results_document(outcomes, run_info))
    (results_dir / "report.md").write_text(report.markdown(outcomes, run_info, plots))
    print(report.table(outcomes))
    print(f"\nresults: {results_dir}/ (results.json, report.md{', plots' if plots else ''})")
    failed = [o.name for o in outcomes if o.error]
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="brokermesh bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenarios", nargs="*", help="names, dotted prefixes (`orders`), module names or globs"
    )
    parser.add_argument(
        "--quick", action="store_true", help="the quick subset with short runs (a smoke check)"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--results", help="write results here instead of bench/results/<time>/")
    parser.add_argument("--stack", help="use a running stack: its data directory or stack.json")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baselines (no ratios)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the work directory (service logs)")
    parser.add_argument(
        "--scenario-timeout", type=float, default=1200.0, help="give up on a scenario after this many seconds"
    )
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=os.environ.get("BROKERMESH_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    modules, broken = discover()
    if args.list:
        for module, scenarios in modules.items():
            for s in scenarios:
                print(f"{s.name:<36} {'quick' if s.in_quick else '     '}  {s.description}  [{module}]")
        for module, error in broken.items():
            print(f"{module}: failed to import: {report.first_line(error)}")
        return 0
    selected = select(modules, args.scenarios, quick=args.quick, baselines=not args.no_baselines)
    # A module that does not import is reported when it could have held what was asked for.
    broken = {
        name: error
        for name, error in broken.items()
        if not args.scenarios
        or any(
            p == name or p.startswith(name) or name.startswith(p) or fnmatch.fnmatchcase(name, p)
            for p in args.scenarios
        )
    }
    if not selected and not broken:
        print("nothing to run", file=sys.stderr)
        return 1
    args.started_at = datetime.now(UTC)
    args.results_dir = (
        Path(args.results).resolve()
        if args.results
        else RESULTS_ROOT / args.started_at.strftime("%Y%m%dT%H%M%SZ")
    )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(run(args, selected, broken))
    return uvloop.run(run(args, selected, broken))


if __name__ == "__main__":
    sys.exit(main())
