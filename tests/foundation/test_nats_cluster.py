"""A JetStream cluster of three nodes on one machine (what `up --cluster` runs): the streams
are kept on every node, and losing one node loses no acknowledged message and stops no
publisher; the node started again on its old ports rejoins."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from brokermesh.exec.v1 import exec_pb2
from svc_runtime import messaging
from svc_runtime.infra.nats_server import EmbeddedNatsCluster
from tests.support.infra import scratch_dir


@pytest.fixture
def cluster() -> Iterator[EmbeddedNatsCluster]:
    root = scratch_dir("brokermesh-nats-cluster-")
    nodes = EmbeddedNatsCluster(root, 3, sync_always=False)
    nodes.start()
    yield nodes
    nodes.stop()
    shutil.rmtree(root, ignore_errors=True)


async def test_streams_have_three_replicas_and_survive_a_node(cluster: EmbeddedNatsCluster) -> None:
    topology = messaging.Topology("cl", replicas=3)
    nc = await messaging.connect(cluster.url, "test")
    try:
        js = nc.jetstream(timeout=10)
        await messaging.ensure_streams(js, topology)
        info = await js.stream_info(topology.exec_reports_stream)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # the leader's peers

        subject = topology.exec_report_subject("u_1")
        await messaging.publish(js, subject, exec_pb2.SessionStatus(), "before")
        # The stream's leader goes, kill -9: the two others elect one and go on acknowledging.
        leader = info.cluster.leader
        index = next(i for i in range(3) if f"n{i + 1}" == leader)
        handle = cluster.handles[index]
        assert handle is not None
        handle.process.kill()
        await asyncio.to_thread(handle.process.wait)
        for n in range(5):
            await _publish_until_acked(js, subject, f"during-{n}")
        cluster.start_node(index)
        info = await js.stream_info(topology.exec_reports_stream)
        assert info.state.messages == 6
    finally:
        await nc.close()


async def _publish_until_acked(js, subject: str, msg_id: str) -> None:  # type: ignore[no-untyped-def]
    """As a producer does: the same message id again until acknowledged (a new leader may
    take a few seconds to be elected)."""
    for _ in range(100):
        try:
            await messaging.publish(js, subject, exec_pb2.SessionStatus(), msg_id)
            return
        except Exception:
            await asyncio.sleep(0.2)
    raise AssertionError(f"{msg_id} was never acknowledged")
