"""svc_exec's reports on JetStream: several per stored message, and still each exactly once
in the stream when a restarted process is handed reports its predecessor published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from nats.js import JetStreamContext

from brokermesh.exec.v1 import execution_report_pb2 as er
from svc_exec.adapters.nats_io import JetStreamReports
from svc_exec.domain.model import Addressed, ExecKind, OrdStatus, Report, Side
from svc_runtime import messaging
from svc_runtime.messaging import Topology
from tests.support.infra import SharedInfra


def _fill(n: int) -> Addressed:
    report = Report(
        ExecKind.TRADE,
        f"ex{n}",
        f"cl{n}",
        OrdStatus.FILLED,
        symbol="INFY",
        side=Side.BUY,
        order_qty=1,
        last_qty=1,
        last_px=Decimal("1500.05"),
        cum_qty=1,
    )
    return Addressed(report, f"ord_{n}", "u_1", f"req_{n}")


async def _stored(js, topology: Topology) -> list[str]:  # type: ignore[no-untyped-def]
    """The exec ids the stream keeps, in order, batches unpacked."""
    info = await js.stream_info(topology.exec_reports_stream)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        stored = await js.get_msg(topology.exec_reports_stream, seq)
        for carried in messaging.unpack(stored):  # type: ignore[arg-type]
            ids.append(er.ExecutionReport.FromString(carried.data).exec_id)
    return ids


@pytest.fixture
async def stream(infra: SharedInfra, namespace: str) -> AsyncIterator[tuple[JetStreamContext, Topology]]:
    topology = Topology(namespace)
    nc = await messaging.connect(infra.nats_url, "test")
    js = nc.jetstream()
    await messaging.ensure_streams(js, topology)
    try:
        yield js, topology
    finally:
        await nc.close()


async def test_reports_go_out_in_batches_and_a_successor_never_publishes_them_again(
    stream: tuple[JetStreamContext, Topology],
) -> None:
    js, topology = stream
    first = JetStreamReports(js, topology)
    sent = [_fill(n) for n in range(5)]
    await (await first.send(sent))
    await (await first.send(sent))  # an unknown outcome, retried: the same batch
    info = await js.stream_info(topology.exec_reports_stream)
    assert info.state.messages == 1, "five reports, one stored message"
    # A new process is handed reports 3..6 again (the exchange resends from its last
    # safe point): only the new ones are published.
    successor = JetStreamReports(js, topology)
    await (await successor.send([_fill(n) for n in range(3, 7)]))
    assert await _stored(js, topology) == [f"ex{n}" for n in range(7)]


async def test_a_report_published_alone_is_not_published_again_in_a_batch(
    stream: tuple[JetStreamContext, Topology],
) -> None:
    """A report published by itself, then handed back among others (the exchange resends
    after a session drop, or to a restarted process): the new batch would carry another id,
    so the stream alone would keep the report twice."""
    js, topology = stream
    reports = JetStreamReports(js, topology)
    await (await reports.send([_fill(0)]))
    await (await reports.send([_fill(0), _fill(1), _fill(2)]))  # after a session drop
    successor = JetStreamReports(js, topology)
    await (await successor.send([_fill(n) for n in range(4)]))  # after a restart
    assert await _stored(js, topology) == [f"ex{n}" for n in range(4)]
