"""Several gateway processes on one port: each serves streams with the same ticks, and the
gateway still stops cleanly, all of its workers with it."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from pathlib import Path

import httpx
import psutil

from tests.gateway.conftest import Edge, events, make_quote, next_event, start_edge
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

STREAM = "/v1/marketdata/stream"
STREAMS = 16  # all on one worker by chance: 2 in 2^16


def _serving_pids(edge: Edge) -> set[int]:
    """Processes of this gateway with a connection on its public port, listening or not."""
    port = int(edge.url.rsplit(":", 1)[1])
    root = psutil.Process(edge.stack.processes["gateway"].pid)
    pids = set()
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            if any(c.laddr and c.laddr.port == port for c in process.net_connections("tcp")):
                pids.add(process.pid)
    return pids


def _stream_pids(edge: Edge) -> set[int]:
    port = int(edge.url.rsplit(":", 1)[1])
    root = psutil.Process(edge.stack.processes["gateway"].pid)
    return {
        process.pid
        for process in [root, *root.children(recursive=True)]
        if any(
            c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            for c in process.net_connections("tcp")
        )
    }


async def test_two_workers_share_the_port_serve_the_same_ticks_and_stop_cleanly(
    infra: SharedInfra, tmp_path: Path
) -> None:
    edge, teardown = await start_edge(infra, tmp_path, BROKERMESH_GATEWAY_WORKERS="2")
    try:
        await eventually(lambda: _ready(edge), timeout=30)
        async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
            async with contextlib.AsyncExitStack() as streams:
                readers = []
                for n in range(STREAMS):
                    response = await streams.enter_async_context(
                        client.stream("GET", STREAM, params={"symbols": "INFY"}, headers=edge.auth(f"w{n}"))
                    )
                    assert response.status_code == 200
                    readers.append(events(response))
                for reader in readers:
                    await next_event(reader)  # retry
                    await next_event(reader)  # snapshot
                # Both workers hold streams, and a tick reaches every stream, wherever it is.
                assert len(_stream_pids(edge)) == 2
                await edge.publish([make_quote("INFY", "1777.05", 900_001)])
                ticks = await asyncio.gather(*(_next_tick(reader) for reader in readers))
                assert {tick["ltp"] for tick in ticks} == {Decimal("1777.05")}
            workers = [
                p for p in psutil.Process(edge.stack.processes["gateway"].pid).children(recursive=True)
            ]
            code = await edge.stack.stop_service("gateway")
            assert code == 0  # drained on SIGTERM, workers included, not killed
            assert not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        await teardown()


async def _ready(edge: Edge) -> bool:
    return len(_serving_pids(edge)) == 2


async def _next_tick(reader: object) -> dict[str, object]:
    while True:
        event = await next_event(reader)  # type: ignore[arg-type]
        if event.event == "price_tick":
            return event.json()
