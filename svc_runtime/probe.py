"""A health probe for container orchestrators: `python -m svc_runtime.probe [--ready] [SERVICE]`.

Kubernetes' built-in gRPC probe cannot speak TLS, and every gRPC listener here does, so the
probe runs inside the container: it asks the process's own standard health service over TLS
(as `localhost`, a name the server certificate must carry) and exits 0 or 1.

Liveness asks only that the process answers at all: svc_exec's standby answers NOT_SERVING
for its ExecutionService while another replica holds the FIX session, and must not be
restarted for it. Readiness (`--ready`) asks for SERVING, of the whole server or of the
named gRPC service, so a standby or a draining process is taken out of its Service.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svc_runtime import config
from svc_runtime.grpc_client import raw_channel

CALL_TIMEOUT = 2.0


def local_target(listen: str) -> str:
    """Where this process's own gRPC listener is reached from inside its container."""
    port = listen.rsplit(":", 1)[-1]
    return f"localhost:{port}"


async def check(target: str, *, service: str = "", ready: bool = False) -> tuple[bool, str]:
    """Whether `target` passes: answers at all (liveness), or answers SERVING (`ready`)."""
    async with raw_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            return False, f"{target}: {error.code().name} {error.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    return (serving or not ready), f"{target} {service or '(server)'}: {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m svc_runtime.probe", description=__doc__)
    parser.add_argument("service", nargs="?", default="", help="a gRPC service name; default: the server")
    parser.add_argument("--ready", action="store_true", help="pass only when SERVING")
    parser.add_argument("--target", help="host:port; default: localhost and BROKERMESH_GRPC_LISTEN's port")
    args = parser.parse_args(argv)
    target = args.target or local_target(config.env(config.GRPC_LISTEN))
    passed, said = asyncio.run(check(target, service=args.service, ready=args.ready))
    print(said, file=sys.stdout if passed else sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
