"""What running the stack elsewhere than under `up` needs: container images and secrets.

`brokermesh images` builds one image per process from deploy/Dockerfile (the build argument
SERVICE picks the process); `brokermesh secrets DIR` makes, once, the credentials and TLS
material that deploy/compose.yaml mounts and that docs/deployment.md turns into Kubernetes
Secrets. See docs/deployment.md.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

from svc_runtime import auth, config, tls, tokens
from svc_runtime.stack import SERVICE_NAMES

DOCKERFILE = Path("deploy") / "Dockerfile"
REPOSITORY = "brokermesh"
# The names the processes call each other by in deploy/compose.yaml and deploy/k8s (a
# Service per process); the server certificate must carry every one.
SERVICE_HOSTS = ("svc-orders", "svc-funds", "svc-marketdata", "svc-exec", "exchange-sim", "gateway")


def image_name(service: str, tag: str) -> str:
    return f"{REPOSITORY}/{service}:{tag}"


def build_commands(tag: str, services: tuple[str, ...] = SERVICE_NAMES) -> list[list[str]]:
    """One `docker build` per process, run from the repository root."""
    unknown = sorted(set(services) - set(SERVICE_NAMES))
    if unknown:
        raise ValueError(f"no such process: {', '.join(unknown)} (one of {', '.join(SERVICE_NAMES)})")
    return [
        [
            "docker",
            "build",
            "-f",
            str(DOCKERFILE),
            "--build-arg",
            f"SERVICE={name}",
            "-t",
            image_name(name, tag),
            ".",
        ]
        for name in services
    ]


def docker_available() -> bool:
    return shutil.which("docker") is not None


def build_images(commands: list[list[str]], root: Path) -> int:
    """Runs the builds one after the other; the first that fails stops the rest."""
    for command in commands:
        result = subprocess.run(command, cwd=root, check=False)
        if result.returncode != 0:
            return result.returncode
    return 0


def write_secrets(directory: Path, hostnames: tuple[str, ...] = ()) -> Path:
    """The credentials, TLS material and environment file a deployment mounts, under
    `directory` (made 0700; what exists already is kept). Returns the environment file."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    credentials = auth.ensure_credentials(directory)
    if not credentials.signing_keys_file.exists():
        # No key beyond BROKERMESH_JWT_SECRET yet; the file exists so that a Secret can carry it.
        auth.append_private_line(credentials.signing_keys_file, json.dumps(tokens.empty_key_file()))
    tls.made(directory, tuple(dict.fromkeys((*SERVICE_HOSTS, *hostnames))))
    env_file = directory / "brokermesh.env"
    if not env_file.exists():
        password = secrets.token_urlsafe(24)
        values = {
            "POSTGRES_PASSWORD": password,
            config.DATABASE_URL: f"postgresql://brokermesh:{quote(password)}@postgres:5432/brokermesh",
            config.JWT_SECRET: secrets.token_urlsafe(48),
            auth.SERVICE_KEY: credentials.service_key,
        }
        auth.append_private_line(env_file, "\n".join(f"{name}={value}" for name, value in values.items()))
    return env_file
