"""Clients of several replicas (`ipv4:h:p1,h:p2`) send calls only to replicas whose health
service says SERVING for the client's service: svc_exec's standby, which does not, gets none,
and neither does a replica that is draining."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from svc_runtime import grpc_client, tls

SERVICE = "brokermesh.test.v1.Replicated"


async def _replica(name: str, serving: bool) -> tuple[grpc.aio.Server, int]:
    """A server whose health says `serving` for SERVICE, and SERVING for `name` alone (so a
    call asking after `name` tells which replica answered: the other says NOT_FOUND)."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    status = health_pb2.HealthCheckResponse
    await servicer.set(SERVICE, status.SERVING if serving else status.NOT_SERVING)
    await servicer.set(name, status.SERVING)
    port = tls.add_port(server, "127.0.0.1:0")
    await server.start()
    return server, port


async def test_calls_go_only_to_the_replica_that_serves() -> None:
    standby, standby_port = await _replica("standby", serving=False)
    active, active_port = await _replica("active", serving=True)
    target = f"ipv4:127.0.0.1:{standby_port},127.0.0.1:{active_port}"
    try:
        async with grpc_client.channel(target, health_service=SERVICE) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for _ in range(20):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service="active"), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # Without naming the service, both replicas take calls (round robin).
        answered = set()
        async with grpc_client.channel(target) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for _ in range(20):
                try:
                    await stub.Check(health_pb2.HealthCheckRequest(service="active"), timeout=10)
                    answered.add("active")
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND
                    answered.add("standby")
        assert answered == {"active", "standby"}
    finally:
        await standby.stop(0)
        await active.stop(0)
