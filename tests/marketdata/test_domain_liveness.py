"""The exchange feed's liveness: live while the exchange is heard from, stale after a
silence longer than the limit (or at once when the session is down), probed in between."""

from __future__ import annotations

import pytest

from svc_marketdata.domain.liveness import LIVE, STALE, FeedLiveness, FeedState

S = 1_000_000_000


def liveness() -> FeedLiveness:
    return FeedLiveness(stale_after=1.2, probe_after=0.4)


def test_stale_until_heard_then_live() -> None:
    feed = liveness()
    assert feed.current == FeedState(STALE)
    assert feed.assess(session_up=True, last_heard_ns=0, now_ns=5 * S) is None
    assert feed.assess(session_up=True, last_heard_ns=5 * S, now_ns=5 * S) == FeedState(LIVE)
    assert feed.assess(session_up=True, last_heard_ns=5 * S, now_ns=6 * S) is None  # unchanged


def test_silence_beyond_the_limit_is_stale_since_the_last_word() -> None:
    feed = liveness()
    feed.assess(session_up=True, last_heard_ns=5 * S, now_ns=5 * S)
    limit = int(1.2 * S)
    assert feed.assess(session_up=True, last_heard_ns=5 * S, now_ns=5 * S + limit) is None
    assert feed.assess(session_up=True, last_heard_ns=5 * S, now_ns=5 * S + limit + 1) == FeedState(
        STALE, 5 * S
    )
    assert feed.assess(session_up=True, last_heard_ns=5 * S, now_ns=9 * S) is None  # said once
    assert feed.assess(session_up=True, last_heard_ns=9 * S, now_ns=9 * S) == FeedState(LIVE)


def test_a_session_that_is_down_is_stale_at_once() -> None:
    feed = liveness()
    feed.assess(session_up=True, last_heard_ns=5 * S, now_ns=5 * S)
    assert feed.assess(session_up=False, last_heard_ns=5 * S, now_ns=5 * S + 1) == FeedState(STALE, 5 * S)


def test_a_silent_exchange_is_probed_at_most_once_per_interval() -> None:
    feed = liveness()
    heard = 5 * S
    assert not feed.should_probe(session_up=True, last_heard_ns=heard, now_ns=heard + S // 4)
    assert feed.should_probe(session_up=True, last_heard_ns=heard, now_ns=heard + S // 2)
    assert not feed.should_probe(session_up=True, last_heard_ns=heard, now_ns=heard + S // 2 + S // 10)
    assert feed.should_probe(session_up=True, last_heard_ns=heard, now_ns=heard + S)
    assert not feed.should_probe(session_up=False, last_heard_ns=heard, now_ns=heard + 3 * S)


def test_probing_must_come_before_staleness() -> None:
    with pytest.raises(ValueError):
        FeedLiveness(stale_after=1.0, probe_after=1.0)
