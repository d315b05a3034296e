"""Conflation: latest value wins, pushes are paced, memory is bounded by the symbol count."""

from __future__ import annotations

import pytest

from svc_marketdata.domain.conflation import Conflator


def test_only_the_streams_symbols_are_noted_each_once() -> None:
    conflator = Conflator(["INFY", "TCS"], 4)
    assert not conflator.offer({"RELIANCE"})
    for _ in range(1000):
        assert conflator.offer({"INFY", "RELIANCE"})
    conflator.offer({"TCS"})
    assert conflator.pending_count == 2
    assert sorted(conflator.take(now=0.0)) == ["INFY", "TCS"]
    assert conflator.pending_count == 0


def test_pending_never_exceeds_the_symbols_however_many_changes() -> None:
    symbols = [f"S{i}" for i in range(300)]
    conflator = Conflator(symbols, 1)
    for round_ in range(200):
        conflator.offer({f"S{(round_ * 7 + i) % 300}" for i in range(50)} | {"OTHER"})
    assert conflator.pending_count <= len(symbols)


def test_pushes_are_paced_to_the_rate() -> None:
    conflator = Conflator(["INFY"], 4)
    conflator.offer({"INFY"})
    assert conflator.due_in(10.0) == 0.0
    assert conflator.take(10.0) == ["INFY"]
    conflator.offer({"INFY"})
    assert conflator.due_in(10.0) == pytest.approx(0.25)
    assert conflator.due_in(10.2) == pytest.approx(0.05)
    assert conflator.due_in(10.3) == 0.0


def test_an_empty_take_does_not_start_an_interval() -> None:
    conflator = Conflator(["INFY"], 2)
    assert conflator.take(5.0) == []
    conflator.offer({"INFY"})
    assert conflator.due_in(5.0) == 0.0


@pytest.mark.parametrize("rate", [0, 51, -1])
def test_rate_is_bounded(rate: int) -> None:
    with pytest.raises(ValueError):
        Conflator(["INFY"], rate)
