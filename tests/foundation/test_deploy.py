"""Deployment files stay true to the code without a container engine or a cluster: the
Dockerfile copies only what exists and every process it names can start, the Kubernetes
manifests pass the API's schemas and give every process probes, measured requests and a
disruption budget, the compose file passes the compose specification, and the in-pod health
probe tells a live process from a ready one."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import check_jsonschema
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from grpc_health.v1 import health_pb2

from svc_runtime import deploy, probe
from svc_runtime.auth import Verifier, ensure_credentials
from svc_runtime.grpc_server import GrpcServer, Guard
from svc_runtime.infra.processes import free_port
from svc_runtime.stack import SERVICE_NAMES

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
MANIFESTS = REPO / "deploy" / "k8s"
COMPOSE = REPO / "deploy" / "compose.yaml"
DEPLOYMENT_PAGE = REPO / "docs" / "deployment.md"
# The Kubernetes release the manifests are checked against (the oldest one still supported
# upstream when they were written; nothing newer is used).
KUBERNETES = "1.32.0"


def _instructions() -> list[dict[str, Any]]:
    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    return parser.structure


def _copy_sources(value: str) -> list[str]:
    words = [w for w in shlex.split(value) if not w.startswith("--")]
    return words[:-1]


def test_the_dockerfile_copies_only_what_the_repository_has() -> None:
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    copies = [i for i in _instructions() if i["instruction"] == "COPY" and "--from=" not in i["value"]]
    assert copies, "no COPY from the build context"
    for instruction in copies:
        for source in _copy_sources(instruction["value"]):
            assert (REPO / source).exists(), f"COPY of {source}, which the repository does not have"
            assert source not in ignored, f"COPY of {source}, which .dockerignore leaves out of the context"
    # Every package the project installs is copied (pyproject.toml lists them).
    copied = {s.rstrip("/") for i in copies for s in _copy_sources(i["value"])}
    assert {*SERVICE_NAMES, "svc_runtime", "gen", "pyproject.toml"} <= copied


def test_what_the_build_stage_copies_installs_every_file_the_processes_need(tmp_path: Path) -> None:
    """The build stage's `pip install .` run here on exactly what it copies: the wheel must
    hold every tracked file of the packages (code, migrations, configs, the web trader), so
    a data file missing from the package data would fail here, not in a container."""
    pytest.importorskip("setuptools", reason="building the wheel without isolation needs setuptools")
    context = tmp_path / "context"
    context.mkdir()
    copies = [i for i in _instructions() if i["instruction"] == "COPY" and "--from=" not in i["value"]]
    sources = [source for i in copies for source in _copy_sources(i["value"])]
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for source in sources:
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, context / source, ignore=ignore)
        else:
            shutil.copy(REPO / source, context / source)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(context),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("brokermesh-*.whl")
    installed = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(
        ["git", "ls-files", "gen", *SERVICE_NAMES, "svc_runtime"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    needed = [path.removeprefix("gen/") for path in tracked if not path.endswith("README.md")]
    assert len(needed) > 200
    missing = [path for path in needed if path not in installed]
    assert not missing, f"not in the image: {missing}"


def test_every_process_has_an_image_that_starts_its_module() -> None:
    instructions = _instructions()
    runtime = max(i["startline"] for i in instructions if i["instruction"] == "FROM")
    final = [i for i in instructions if i["startline"] > runtime]
    assert any(i["instruction"] == "ARG" and i["value"] == "SERVICE" for i in final)
    env = " ".join(i["value"] for i in final if i["instruction"] == "ENV")
    assert "BROKERMESH_SERVICE=${SERVICE}" in env
    (entrypoint,) = [json.loads(i["value"]) for i in final if i["instruction"] == "ENTRYPOINT"]
    assert 'exec python -m "$BROKERMESH_SERVICE"' in entrypoint
    commands = deploy.build_commands("1.2.3")
    built = {c[c.index("--build-arg") + 1].removeprefix("SERVICE="): c for c in commands}
    assert set(built) == set(SERVICE_NAMES)
    for name, command in built.items():
        assert importlib.util.find_spec(f"{name}.__main__") is not None, f"{name} has no __main__"
        assert command[command.index("-f") + 1] == "deploy/Dockerfile"
        assert command[command.index("-t") + 1] == f"brokermesh/{name}:1.2.3"
    with pytest.raises(ValueError, match="no such process"):
        deploy.build_commands("1", ("svc_nothing",))


def _manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def test_the_manifests_pass_the_kubernetes_schemas() -> None:
    documents = _manifests()
    assert len(documents) > 20
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    present = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert set(listed) == present


def _of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _manifests() if d["kind"] == kind}


def test_every_process_runs_with_probes_measured_requests_and_a_budget() -> None:
    deployments, budgets, services = (
        _of_kind("Deployment"),
        _of_kind("PodDisruptionBudget"),
        _of_kind("Service"),
    )
    for name in SERVICE_NAMES:
        host = name.replace("_", "-")
        deployment = deployments[host]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith(f"brokermesh/{name}:")
        assert {"readinessProbe", "livenessProbe"} <= container.keys(), host
        if name != "gateway":
            assert container["readinessProbe"]["exec"]["command"][:4] == [
                "python",
                "-m",
                "svc_runtime.probe",
                "--ready",
            ]
            assert "--ready" not in container["livenessProbe"]["exec"]["command"]
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        labels = deployment["spec"]["selector"]["matchLabels"]
        assert budgets[host]["spec"]["selector"]["matchLabels"] == labels
        assert services[host]["spec"]["selector"] == labels
    # The standby svc_exec is not ready until it holds the FIX session.
    (exec_container,) = deployments["svc-exec"]["spec"]["template"]["spec"]["containers"]
    assert exec_container["readinessProbe"]["exec"]["command"][-1] == "brokermesh.exec.v1.ExecutionService"
    nats = _of_kind("StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3


def test_every_target_names_a_service_that_listens_there() -> None:
    (config,) = [
        d for d in _manifests() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "brokermesh-config"
    ]
    services = _of_kind("Service")
    targets = {k: v for k, v in config["data"].items() if k.endswith("_TARGET") or k == "BROKERMESH_NATS_URL"}
    assert len(targets) == 6
    for variable, target in targets.items():
        host, port = target.removeprefix("nats://").rsplit(":", 1)
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]], variable
    assert set(deploy.SERVICE_HOSTS) <= set(services)


def test_the_requests_are_the_ones_the_deployment_page_gives() -> None:
    rows = re.findall(r"^\| `(\w+)` \| (\d+m) \| (\d+Mi) \|", DEPLOYMENT_PAGE.read_text(), re.MULTILINE)
    documented = {name: (cpu, memory) for name, cpu, memory in rows}
    assert set(documented) == {*SERVICE_NAMES, "nats"}
    workloads = {**_of_kind("Deployment"), **_of_kind("StatefulSet")}
    for name, (cpu, memory) in documented.items():
        (container,) = workloads[name.replace("_", "-")]["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["requests"] == {"cpu": cpu, "memory": memory}, name


def test_the_compose_file_passes_the_compose_specification() -> None:
    schema_file = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    compose = yaml.safe_load(COMPOSE.read_text())
    jsonschema.validate(compose, json.loads(schema_file.read_text()))
    built = {s["build"]["args"]["SERVICE"]: host for host, s in compose["services"].items() if "build" in s}
    assert set(built) == set(SERVICE_NAMES)
    for name, host in built.items():
        assert host == name.replace("_", "-")
        build = compose["services"][host]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert "healthcheck" in compose["services"][host]


def test_images_prints_the_builds_without_docker(capsys: pytest.CaptureFixture[str]) -> None:
    from svc_runtime.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["images", "--print", "--tag", "9.9", "svc_orders", "gateway"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "docker build -f deploy/Dockerfile --build-arg SERVICE=svc_orders -t brokermesh/svc_orders:9.9 .",
        "docker build -f deploy/Dockerfile --build-arg SERVICE=gateway -t brokermesh/gateway:9.9 .",
    ]


def test_secrets_makes_what_the_compose_file_mounts(tmp_path: Path) -> None:
    env_file = deploy.write_secrets(tmp_path / "secrets", ("broker.example.com",))
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert {
        "POSTGRES_PASSWORD",
        "BROKERMESH_DATABASE_URL",
        "BROKERMESH_JWT_SECRET",
        "BROKERMESH_SERVICE_KEY",
    } <= set(values)
    compose = yaml.safe_load(COMPOSE.read_text())
    for host, service in compose["services"].items():
        if "build" not in service:
            continue
        mounted = {}
        for mount in service["volumes"]:
            source, target = mount.split(":")[:2]
            if source.startswith("./secrets/"):
                mounted[target] = tmp_path / "secrets" / source.removeprefix("./secrets/")
        assert not any(path.name == "ca.key" for path in mounted.values()), host
        environment = service["environment"]
        for variable in (
            "BROKERMESH_OPERATORS_FILE",
            "BROKERMESH_SIGNING_KEYS_FILE",
            "BROKERMESH_TLS_CERT",
            "BROKERMESH_TLS_KEY",
            "BROKERMESH_TLS_CA",
        ):
            assert mounted[environment[variable]].is_file(), (host, variable)
    # Made once: a second run keeps every secret.
    assert deploy.write_secrets(tmp_path / "secrets").read_text() == env_file.read_text()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GrpcServer]:
    credentials = ensure_credentials(tmp_path)
    verifier = Verifier("svc_exec", user_secret="", service_key=credentials.service_key, operators={})
    grpc_server = GrpcServer("127.0.0.1:0", guard=Guard(verifier))
    grpc_server.service_names.append("brokermesh.exec.v1.ExecutionService")
    await grpc_server.start()
    yield grpc_server
    await grpc_server.stop(0)


async def test_the_probe_tells_a_live_process_from_a_ready_one(server: GrpcServer) -> None:
    target = probe.local_target(f"0.0.0.0:{server.port}")
    assert target == f"localhost:{server.port}"
    service = "brokermesh.exec.v1.ExecutionService"
    assert (await probe.check(target, service=service, ready=True))[0]
    # A standby: alive, not ready.
    await server.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert (await probe.check(target, service=service))[0]
    passed, said = await probe.check(target, service=service, ready=True)
    assert not passed and "NOT_SERVING" in said
    assert (await probe.check(target, ready=True))[0]


async def test_the_probe_fails_where_nothing_answers() -> None:
    passed, said = await probe.check(f"localhost:{free_port()}")
    assert not passed and "UNAVAILABLE" in said
