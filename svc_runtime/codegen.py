"""Generates gen/ from proto/: protobuf messages, gRPC stubs and typed stubs (.pyi); and the
`Reason` enum of gateway/openapi.yaml from the error catalogue (svc_runtime/reasons.py).

One command regenerates everything (`brokermesh gen`); the test suite regenerates into a
temporary directory and fails if the result differs from the committed gen/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
GEN_ROOT = REPO_ROOT / "gen"
OPENAPI = REPO_ROOT / "gateway" / "openapi.yaml"


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))


def generate(out_dir: Path = GEN_ROOT, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Make `out_dir` exactly what protoc generates from `proto_root`; returns its files.

    Generation goes to a scratch directory first and only changed files are replaced, so
    processes importing gen/ meanwhile never see it half-written.
    """
    import grpc_tools  # the protoc bundled with grpcio-tools, pinned for reproducible output

    wkt_include = Path(grpc_tools.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={proto_root}",
            f"--proto_path={wkt_include}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
            f"--mypy_grpc_out={scratch}",
            *(str(p) for p in proto_files(proto_root)),
        ]
        subprocess.run(cmd, check=True, cwd=proto_root, capture_output=True)
        # Message-only protos (NATS payloads, shared types) get no empty gRPC modules.
        for proto in proto_files(proto_root):
            if not any(line.startswith("service ") for line in (proto_root / proto).read_text().splitlines()):
                stem = scratch / proto.with_suffix("")
                for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi"):
                    stem.with_name(stem.name + suffix).unlink(missing_ok=True)
        # Regular packages (not namespace packages), so that installers and type checkers
        # treat gen/ like any other import root.
        for module_dir in sorted({p.parent for p in scratch.rglob("*.py")}):
            package = module_dir
            while package != scratch:
                (package / "__init__.py").touch()
                package = package.parent
        wanted = {p.relative_to(scratch) for p in scratch.rglob("*") if p.is_file()}
        for relative in sorted(wanted):
            target = out_dir / relative
            fresh = (scratch / relative).read_bytes()
            if not target.exists() or target.read_bytes() != fresh:
                target.parent.mkdir(parents=True, exist_ok=True)
                staging = target.with_name(target.name + ".tmp")
                staging.write_bytes(fresh)
                os.replace(staging, target)
    for stale in sorted(p for p in out_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        if stale.relative_to(out_dir) not in wanted:
            stale.unlink()
    return sorted(out_dir / p for p in wanted)


def write_openapi_reasons(spec: Path = OPENAPI) -> bool:
    """Rewrite the generated `Reason` schema of openapi.yaml; True if it changed."""
    from svc_runtime import reasons

    text = spec.read_text()
    fresh = reasons.with_openapi_schema(text)
    if fresh == text:
        return False
    staging = spec.with_name(spec.name + ".tmp")
    staging.write_text(fresh)
    os.replace(staging, spec)
    return True


def main() -> None:
    if write_openapi_reasons():
        print(f"{OPENAPI.relative_to(REPO_ROOT)}: Reason enum regenerated")  # noqa: T201
    written = generate()
    print(f"gen/: {len(written)} files from {len(proto_files())} protos")  # noqa: T201
