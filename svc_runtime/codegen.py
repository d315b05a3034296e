"""Generates gen/ from proto/: protobuf messages, gRPC stubs and typed stubs (.pyi).

One command regenerates everything (`brokermesh gen`); the test suite regenerates into a
temporary directory and fails if the result differs from the committed gen/.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
GEN_ROOT = REPO_ROOT / "gen"


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))


def generate(out_dir: Path = GEN_ROOT, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Regenerate `out_dir` from scratch; returns the files written."""
    import grpc_tools  # the protoc bundled with grpcio-tools, pinned for reproducible output

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    wkt_include = Path(grpc_tools.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    files = [str(p) for p in proto_files(proto_root)]
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={wkt_include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_grpc_out={out_dir}",
        *files,
    ]
    subprocess.run(cmd, check=True, cwd=proto_root, capture_output=True)
    # Message-only protos (NATS payloads, shared types) get no empty gRPC modules.
    for proto in proto_files(proto_root):
        if not any(line.startswith("service ") for line in (proto_root / proto).read_text().splitlines()):
            stem = out_dir / proto.with_suffix("")
            for suffix in ("_pb2_grpc.py", "_pb2_grpc.pyi"):
                stem.with_name(stem.name + suffix).unlink(missing_ok=True)
    # Regular packages (not namespace packages), so that installers and type checkers
    # treat gen/ like any other import root.
    packages = {p.parent for p in out_dir.rglob("*.py")}
    for module_dir in sorted(packages):
        package = module_dir
        while package != out_dir:
            (package / "__init__.py").touch()
            package = package.parent
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def main() -> None:
    written = generate()
    print(f"gen/: {len(written)} files from {len(proto_files())} protos")  # noqa: T201
