"""The import rules of docs/architecture.md ("Layering"), written as import-linter contracts
in pyproject.toml ([tool.importlinter]) and checked here:

- services never import each other, and svc_runtime imports no service;
- inside a service, main → adapters → transport → app → domain, each layer importing only
  the layers below it (the exceptions are listed in the contract, each with its reason);
- domain/ imports nothing that does I/O.

import-linter refuses an exception that no longer matches an import, so the list of
exceptions cannot outlive the code it excuses.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _contracts() -> list[dict[str, Any]]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def _services() -> set[str]:
    """Every process package: a top-level package with a composition root and `python -m` entry."""
    return {
        p.name
        for p in REPO.iterdir()
        if (p / "main.py").is_file() and (p / "__main__.py").is_file() and (p / "__init__.py").is_file()
    }


def test_the_import_rules_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_is_under_every_rule() -> None:
    # A new service missing from a contract would escape it silently.
    services = _services()
    assert services >= {"svc_orders", "svc_funds", "svc_exec", "svc_marketdata", "gateway", "exchange_sim"}
    by_name = {c["name"]: c for c in _contracts()}
    assert set(by_name["Services never import each other"]["modules"]) == services
    assert set(by_name["svc_runtime imports no service"]["forbidden_modules"]) == services
    layers = next(c for c in by_name.values() if c["type"] == "layers")
    assert set(layers["containers"]) == services
    domains = {f"{s}.domain" for s in services if (REPO / s / "domain").is_dir()}
    assert set(by_name["domain/ does no I/O"]["source_modules"]) == domains


def test_every_runtime_module_is_on_one_surface() -> None:
    # svc_runtime/__init__.py: a module is for services (__all__) or operator tooling
    # (forbidden to services); a new module must say which.
    import svc_runtime

    public = set(svc_runtime.__all__)
    contract = next(
        c for c in _contracts() if c["name"] == "Services use the runtime, not its operator tooling"
    )
    tooling = {m.removeprefix("svc_runtime.") for m in contract["forbidden_modules"]}
    assert set(contract["source_modules"]) == _services()
    assert not public & tooling
    modules = {
        p.stem if p.is_file() else p.name
        for p in (REPO / "svc_runtime").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert modules == public | tooling, {
        "on no surface": modules - public - tooling,
        "gone": (public | tooling) - modules,
    }
