"""The StreamQuotes push stage: streams with the same symbols share a group whose response
is built once per push; pushes are paced; a stream still writing catches up with the
latest of everything; the feed's status reaches every stream."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from svc_marketdata.app.streams import MAX_GROUP_MEMBERS, Push, StreamHub


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Renderer:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, symbols: Sequence[str]) -> list[bytes]:
        self.calls.append(list(symbols))
        return [",".join(symbols).encode()]


def hub_with(clock: Clock, render: Renderer) -> StreamHub:
    return StreamHub(max_streams=1000, render=render, clock=clock)


async def test_one_response_per_group_push_shared_by_every_member() -> None:
    clock, render = Clock(), Renderer()
    hub = hub_with(clock, render)
    same = [hub.open(["INFY", "TCS"], 4) for _ in range(10)]
    other = hub.open(["WIPRO"], 4)
    hub.dispatch({"INFY", "RELIANCE"})
    hub.push_due()
    assert render.calls == [["INFY"]]  # built once for the ten, not at all for WIPRO
    pushes = [await stream.next_push(1.0) for stream in same]
    assert all(p.messages is pushes[0].messages for p in pushes)
    assert pushes[0] == Push(messages=[b"INFY"])
    assert (await other.next_push(0.01)) == Push()  # idle: a heartbeat is due


async def test_pushes_are_paced_and_conflated() -> None:
    clock, render = Clock(), Renderer()
    hub = hub_with(clock, render)
    stream = hub.open(["INFY", "TCS"], 4)
    hub.dispatch({"INFY"})
    assert hub.push_due() is None
    await stream.next_push(1.0)
    for _ in range(100):
        hub.dispatch({"INFY"})
    hub.dispatch({"TCS"})
    assert hub.push_due() == pytest.approx(0.25)
    clock.now += 0.25
    hub.push_due()
    assert (await stream.next_push(1.0)).messages == [b"INFY,TCS"]
    assert len(render.calls) == 2


async def test_a_stream_still_writing_is_sent_everything_latest_once() -> None:
    clock, render = Clock(), Renderer()
    hub = hub_with(clock, render)
    slow = hub.open(["INFY", "TCS"], 4)
    for _ in range(20):
        hub.dispatch({"INFY"})
        hub.push_due()
        clock.now += 1
    assert (await slow.next_push(1.0)) == Push(everything=True)


async def test_groups_are_bounded_and_closed_streams_leave_no_group() -> None:
    clock, render = Clock(), Renderer()
    hub = hub_with(clock, render)
    streams = [hub.open(["INFY"], 4) for _ in range(MAX_GROUP_MEMBERS + 1)]
    assert len({s.group for s in streams}) == 2
    for stream in streams:
        hub.close(stream)
    hub.dispatch({"INFY"})
    assert hub.push_due() is None and render.calls == []


async def test_the_feed_status_reaches_every_stream() -> None:
    hub = hub_with(Clock(), Renderer())
    streams = [hub.open(["INFY"], 4), hub.open(["TCS"], 2)]
    hub.feed_changed(b"stale")
    assert [await s.next_push(1.0) for s in streams] == [Push(status=b"stale")] * 2
