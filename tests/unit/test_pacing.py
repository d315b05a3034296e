"""Pacing of price pushes: a token bucket (the rate sustained, a burst back to back), and a
burst of one for a fixed spacing."""

from __future__ import annotations

import itertools

import pytest

from svc_runtime.pacing import PushPace


def _pushes(pace: PushPace, *, start: float, seconds: float, step: float = 0.001) -> list[float]:
    """When pushes go out for a stream whose symbols change every `step` seconds."""
    at, out = start, []
    while (at := max(at, pace.next_push_at)) < start + seconds:
        pace.spend(at)
        out.append(at)
        at += step
    return out


def test_a_burst_goes_at_once_then_the_rate_holds() -> None:
    pushed = _pushes(PushPace(0.25, burst=3), start=10.0, seconds=3.0)
    assert pushed[:3] == pytest.approx([10.0, 10.001, 10.002])
    later = pushed[3:]
    assert all(b - a == pytest.approx(0.25, abs=0.002) for a, b in itertools.pairwise(later))
    assert len(pushed) <= 3 + 3.0 / 0.25 + 1


def test_a_burst_of_one_is_a_fixed_spacing() -> None:
    pushed = _pushes(PushPace(0.5, burst=1), start=0.0, seconds=2.0)
    assert pushed == pytest.approx([0.0, 0.5, 1.0, 1.5])


def test_a_quiet_stream_earns_its_burst_back_but_no_more() -> None:
    pace = PushPace(0.25, burst=3)
    _pushes(pace, start=0.0, seconds=1.0)
    pushed = _pushes(pace, start=100.0, seconds=0.6)
    assert pushed[:3] == pytest.approx([100.0, 100.001, 100.002])
    assert pushed[3] == pytest.approx(100.002 + 0.25, abs=0.002)


@pytest.mark.parametrize(("interval", "burst"), [(0.0, 3), (-1.0, 3), (0.25, 0)])
def test_a_pace_needs_a_positive_interval_and_burst(interval: float, burst: int) -> None:
    with pytest.raises(ValueError):
        PushPace(interval, burst)
