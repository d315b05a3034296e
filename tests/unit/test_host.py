"""svc_runtime.host: the drain every service shares, in milliseconds (fakes for the servers,
resources and consumers; the real processes' stops are in tests/e2e/test_supervised_tasks.py
and the stacks' clean-stop check in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from svc_runtime import aio, service
from svc_runtime.host import Host


class FakeHealth:
    def __init__(self, said: list[str]) -> None:
        self.said = said

    async def enter_graceful_shutdown(self) -> None:
        self.said.append("NOT_SERVING")


class FakeAioServer:
    def __init__(self, said: list[str]) -> None:
        self.said = said
        self.in_flight = 0

    async def stop(self, grace: float) -> None:
        self.said.append(f"server stopped (grace {grace}, {self.in_flight} in flight)")


class FakeGrpcServer:
    def __init__(self, said: list[str]) -> None:
        self.health = FakeHealth(said)
        self.server = FakeAioServer(said)

    async def start(self) -> int:
        return 50123


class FakeResource:
    def __init__(self, name: str, said: list[str], *, hangs: bool = False) -> None:
        self.name, self.said, self.hangs = name, said, hangs

    async def close(self) -> None:
        if self.hangs:
            await asyncio.sleep(60)
        self.said.append(f"{self.name} closed")


class FakeConsumer:
    """Pulls until told to stop; the message in hand is finished first."""

    def __init__(self, said: list[str]) -> None:
        self.said = said
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.said.append("consumer told to stop")
        self.stopping.set()

    async def run(self) -> None:
        await self.stopping.wait()
        await asyncio.sleep(0.01)  # the message in hand
        self.said.append("consumer finished its message")


async def test_resources_close_in_the_reverse_order_of_opening() -> None:
    said: list[str] = []
    async with Host("svc_test", asyncio.Event()) as host:
        for name in ("pool", "nats", "channel"):
            host.hold(FakeResource(name, said), what=name)
        host.at_close(lambda: said.append("step"), what="a step")
    assert said == ["step", "channel closed", "nats closed", "pool closed"]


async def test_a_close_that_hangs_is_abandoned_after_its_bound_and_the_others_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    said: list[str] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.INFO, logger="svc_runtime.host"):
        async with Host("svc_test", asyncio.Event(), close_seconds=0.05) as host:
            host.hold(FakeResource("pool", said), what="pool")
            host.hold(FakeResource("nats", said, hangs=True), what="nats")
    assert said == ["pool closed"]
    assert loop.time() - started < 1
    timed_out = [r for r in caplog.records if r.getMessage() == "close timed out"]
    assert [getattr(r, "what", None) for r in timed_out] == ["nats"]
    closed = [getattr(r, "what", None) for r in caplog.records if r.getMessage() == "closed"]
    assert closed == ["pool"]


async def test_a_close_that_fails_is_logged_and_the_others_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    said: list[str] = []

    def broken() -> None:
        raise RuntimeError("connection reset")

    with caplog.at_level(logging.WARNING, logger="svc_runtime.host"):
        async with Host("svc_test", asyncio.Event()) as host:
            host.hold(FakeResource("pool", said), what="pool")
            host.at_close(broken, what="channel")
    assert said == ["pool closed"]
    assert [getattr(r, "what", None) for r in caplog.records if r.getMessage() == "close failed"] == [
        "channel"
    ]


async def test_the_drain_goes_readiness_streams_servers_consumers_then_resources() -> None:
    said: list[str] = []
    stop = asyncio.Event()
    async with Host("svc_test", stop) as host:
        host.hold(FakeResource("pool", said), what="pool")
        host.hold(FakeResource("nats", said), what="nats")
        consumer = FakeConsumer(said)
        host.task(consumer.run(), "consumer", stop=consumer.stop)
        host.on_drain(lambda: said.append("streams ended"), what="streams")
        assert await host.serve_grpc(FakeGrpcServer(said), grace=2.0) == 50123
        stop.set()
        await host.until_stopped()
        assert said == []
    assert said == [
        "NOT_SERVING",
        "streams ended",
        "server stopped (grace 2.0, 0 in flight)",
        "consumer told to stop",
        "consumer finished its message",
        "nats closed",
        "pool closed",
    ]


async def test_a_task_that_does_not_stop_in_time_is_cancelled_and_the_resources_still_close() -> None:
    said: list[str] = []
    stubborn_ended = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stubborn_ended.set()

    async def loop_without_stop() -> None:
        await asyncio.sleep(60)

    async with Host("svc_test", asyncio.Event(), tasks_seconds=0.05) as host:
        host.hold(FakeResource("pool", said), what="pool")
        task = host.task(stubborn(), "stubborn")
        ticker = host.task(loop_without_stop(), "ticker", cancel=True)
    assert stubborn_ended.is_set() and task.cancelled() and ticker.cancelled()
    assert said == ["pool closed"]


async def test_every_runs_its_round_until_the_host_stops() -> None:
    rounds = 0
    thrice = asyncio.Event()

    async def round_() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            thrice.set()

    async with Host("svc_test", asyncio.Event()) as host:
        task = host.every(0.001, round_, "refresh")
        await aio.within(thrice.wait(), 5)
    assert task.done() and not task.cancelled() and task.exception() is None


async def test_a_failed_start_up_closes_what_it_opened_and_says_why() -> None:
    said: list[str] = []
    stop = asyncio.Event()
    with pytest.raises(OSError, match="address in use"):
        async with Host("svc_test", stop) as host:
            host.hold(FakeResource("pool", said), what="pool")
            raise OSError("address in use")
    assert said == ["pool closed"] and stop.is_set()


async def _supervised(body: str) -> tuple[service.Supervisor, list[str]]:
    """A process's supervision as `service.run` sets it up, around a host running one
    background task: `body` is "crash", "return" or "clean" (stopped as by SIGTERM)."""
    said: list[str] = []
    stop = asyncio.Event()
    supervisor = service.Supervisor(stop)
    # As `service.run` sets it, for this test's task only (reset below).
    token = service._supervisor.set(supervisor)

    async def work() -> None:
        await asyncio.sleep(0.01)
        if body == "crash":
            raise RuntimeError("the tick publisher died")
        if body == "return":
            return
        await stop.wait()

    try:
        async with Host("svc_test", stop) as host:
            host.hold(FakeResource("pool", said), what="pool")
            host.task(work(), "tick-publisher")
            if body == "clean":
                asyncio.get_running_loop().call_later(0.02, stop.set)
            await aio.within(host.until_stopped(), 5)
    finally:
        service._supervisor.reset(token)
    return supervisor, said


@pytest.mark.parametrize("body", ["crash", "return"])
async def test_a_background_task_that_ends_stops_the_process_non_zero(body: str) -> None:
    supervisor, said = await _supervised(body)
    # `service.run` exits EXIT_TASK_FAILED when a task failed; the host drained all the same.
    assert supervisor.failed == "tick-publisher"
    assert said == ["pool closed"]


async def test_a_process_told_to_stop_exits_zero() -> None:
    supervisor, said = await _supervised("clean")
    assert supervisor.failed is None
    assert said == ["pool closed"]
