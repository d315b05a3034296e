"""The gateway's pure parts: error mapping, exact JSON money, SSE frames, conflation,
limits and tokens."""

from __future__ import annotations

import base64
import itertools
import json
from decimal import Decimal

import grpc
import jwt
import pytest

from gateway.domain import sse
from gateway.domain.conflation import PushGroup
from gateway.domain.feed import LIVE, STALE, FeedCondition, FeedView
from gateway.domain.jsonmoney import MalformedJson, decimal_from_json, dumps, json_number_text, loads
from gateway.domain.limits import (
    LoginGuard,
    LoginThrottle,
    RateLimiter,
    StreamSlots,
    claim_slot,
    drop_slots,
    renew_slots,
)
from gateway.domain.problems import problem_from_details, problem_from_error
from svc_runtime.errors import (
    ErrorDetails,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)
from svc_runtime.tokens import KeySet, Refused, UserTokens

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"


# --- problems ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.FAILED_PRECONDITION, 422),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
    ],
)
def test_grpc_codes_map_to_http_statuses(code: grpc.StatusCode, status: int) -> None:
    assert problem_from_details(ErrorDetails(code=code, message="m")).status == status


def test_business_refusal_keeps_reason_and_metadata_free_detail() -> None:
    problem = problem_from_error(
        FailedPrecondition("not enough cash: need 15423.50", reason="INSUFFICIENT_FUNDS"), request_id="req_1"
    )
    body = problem.body(request_id="req_1", instance="/v1/orders")
    assert body == {
        "type": "https://brokermesh.io/problems/insufficient-funds",
        "title": "Insufficient funds",
        "status": 422,
        "detail": "not enough cash: need 15423.50",
        "instance": "/v1/orders",
        "requestId": "req_1",
        "reason": "INSUFFICIENT_FUNDS",
    }
    assert problem.headers() == {}


def test_field_violations_are_carried() -> None:
    error = InvalidArgument("bad", field="limitPrice")
    body = problem_from_error(error).body(request_id="r", instance="/v1/orders")
    assert body["fieldViolations"] == [{"field": "limitPrice", "description": "bad"}]


def test_server_side_failures_hide_the_backend_message() -> None:
    internal = problem_from_details(
        ErrorDetails(code=grpc.StatusCode.INTERNAL, message="Traceback: KeyError 'x' in db.py"),
        request_id="req_9",
    )
    assert "Traceback" not in internal.detail and "req_9" in internal.detail
    unknown = problem_from_details(
        ErrorDetails(code=grpc.StatusCode.UNKNOWN, message="Unexpected <class 'X'>")
    )
    assert unknown.status == 500 and "class" not in unknown.detail


def test_an_unknown_outcome_is_explained_but_only_when_the_gateway_says_so() -> None:
    from svc_runtime.errors import DeadlineExceeded

    told = problem_from_error(DeadlineExceeded("retry with the same key", reason="OUTCOME_UNKNOWN"))
    assert (told.status, told.detail) == (504, "retry with the same key")
    relayed = problem_from_details(
        ErrorDetails(
            code=grpc.StatusCode.DEADLINE_EXCEEDED, message="db at 10.0.0.5 slow", reason="OUTCOME_UNKNOWN"
        )
    )
    assert "10.0.0.5" not in relayed.detail


def test_retry_after_comes_from_retry_info_rounded_up_else_a_default() -> None:
    limited = problem_from_details(
        ErrorDetails(code=grpc.StatusCode.RESOURCE_EXHAUSTED, message="slow down", retry_after_seconds=0.2)
    )
    assert limited.headers() == {"Retry-After": "1"}
    later = problem_from_details(
        ErrorDetails(code=grpc.StatusCode.RESOURCE_EXHAUSTED, message="slow down", retry_after_seconds=7.01)
    )
    assert later.headers() == {"Retry-After": "8"}
    assert problem_from_details(ErrorDetails(code=grpc.StatusCode.UNAVAILABLE, message="")).headers() == {
        "Retry-After": "1"
    }


# --- exact JSON money ----------------------------------------------------------------------
def test_request_numbers_parse_exactly_and_responses_keep_every_digit() -> None:
    body = loads(b'{"limitPrice": 1542.35, "quantity": 10, "avg": 0.1}')
    assert body == {"limitPrice": Decimal("1542.35"), "quantity": 10, "avg": Decimal("0.1")}
    assert isinstance(body["quantity"], int)
    assert dumps({"avgPrice": Decimal("1542.30"), "x": Decimal("0.10")}) == b'{"avgPrice":1542.30,"x":0.10}'
    # The float route would have produced 0.30000000000000004 here.
    assert dumps({"sum": Decimal("0.1") + Decimal("0.2")}) == b'{"sum":0.3}'


@pytest.mark.parametrize("text", [b"NaN", b'{"a": Infinity}', b'{"a": -Infinity}', b"{bad"])
def test_non_json_numbers_and_garbage_are_rejected(text: bytes) -> None:
    with pytest.raises(MalformedJson):
        loads(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Decimal("1542.35"), Decimal("1542.35")), ("1542.35", Decimal("1542.35")), (1542, Decimal(1542))],
)
def test_prices_come_as_numbers_or_strings(value: object, expected: Decimal) -> None:
    assert decimal_from_json(value, field="limitPrice") == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (Decimal("10.001"), "TOO_PRECISE"),
        ("10.001", "TOO_PRECISE"),
        ("1e3", "INVALID_DECIMAL"),
        (True, "INVALID_DECIMAL"),
        ([1], "INVALID_DECIMAL"),
        ("-5", "NOT_POSITIVE"),
        (Decimal(0), "NOT_POSITIVE"),
    ],
)
def test_bad_prices_are_refused_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decimal_from_json(value, field="limitPrice")
    assert caught.value.reason == reason
    assert caught.value.violations[0].field == "limitPrice"


def test_service_decimal_text_is_spliced_only_when_plain() -> None:
    assert json_number_text("1542.35") == "1542.35"
    assert json_number_text("-5.20") == "-5.20"
    assert json_number_text("") == "null"
    assert json_number_text('1,"evil":2') == "null"
    assert json_number_text("1e5") == "null"


# --- SSE frames ----------------------------------------------------------------------------
def test_price_tick_frame_carries_the_book_and_sequence_with_exact_numbers() -> None:
    frame = sse.price_tick(
        "INFY",
        "1542.35",
        "12.10",
        "0.79",
        "2026-01-17T10:45:01Z",
        bid="1542.30",
        bid_qty=120,
        ask="1542.40",
        ask_qty=75,
        volume=182340,
        sequence=1765051501000123,
    )
    assert frame == (
        b"event: price_tick\n"
        b'data: {"symbol":"INFY","ltp":1542.35,"change":12.10,"changePct":0.79,'
        b'"bid":1542.30,"bidQty":120,"ask":1542.40,"askQty":75,"volume":182340,'
        b'"sequence":1765051501000123,"ts":"2026-01-17T10:45:01Z"}\n\n'
    )
    data = json.loads(frame.split(b"data: ", 1)[1], parse_float=Decimal)
    assert data["change"] == Decimal("12.10") and data["bid"] == Decimal("1542.30")
    # A side of the book that is empty is null, not zero.
    empty = json.loads(sse.price_tick("X", "", "", "", "").split(b"data: ", 1)[1])
    assert empty["ltp"] is None and empty["bid"] is None and empty["ask"] is None and empty["ts"] is None


def test_feed_status_and_heartbeat_frames() -> None:
    stale = sse.feed_status("STALE", "2026-01-17T10:45:01Z", "2026-01-17T10:45:02.500Z", 42)
    assert stale == (
        b"event: feed_status\n"
        b'data: {"status":"STALE","staleSince":"2026-01-17T10:45:01Z",'
        b'"serverTime":"2026-01-17T10:45:02.500Z","sequence":42}\n\n'
    )
    live = json.loads(sse.feed_status("LIVE", "", "2026-01-17T10:45:03Z", 43).split(b"data: ", 1)[1])
    assert live["staleSince"] is None
    beat = sse.heartbeat("LIVE", "2026-01-17T10:45:03Z", 43)
    assert beat == (
        b'event: heartbeat\ndata: {"serverTime":"2026-01-17T10:45:03Z","sequence":43,"status":"LIVE"}\n\n'
    )


# --- the price feed's liveness -------------------------------------------------------------
S = 1_000_000_000


def test_feed_is_stale_until_the_tracker_is_heard_and_says_live() -> None:
    view = FeedView(silence_limit=1.0)
    assert view.assess(connected=True, now_ns=10 * S) is None  # stale from the start, unchanged
    assert not view.condition.live
    assert view.on_status(FeedCondition(LIVE), 7, now_ns=10 * S) == FeedCondition(LIVE)
    assert view.last_sequence == 7
    assert view.on_status(FeedCondition(LIVE), 8, now_ns=10 * S + S // 4) is None  # no change


def test_a_silent_tracker_makes_the_feed_stale_since_it_was_last_heard() -> None:
    view = FeedView(silence_limit=1.0)
    view.on_status(FeedCondition(LIVE), 7, now_ns=10 * S)
    assert view.assess(connected=True, now_ns=11 * S) is None  # exactly the limit: still live
    assert view.assess(connected=True, now_ns=11 * S + 1) == FeedCondition(STALE, 10 * S)
    assert view.assess(connected=True, now_ns=12 * S) is None  # told once
    # Heard again: live again.
    assert view.on_status(FeedCondition(LIVE), 9, now_ns=13 * S) == FeedCondition(LIVE)


def test_the_trackers_own_stale_word_and_a_lost_subscription_count() -> None:
    view = FeedView(silence_limit=1.0)
    view.on_status(FeedCondition(LIVE), 7, now_ns=10 * S)
    assert view.on_status(FeedCondition(STALE, 9 * S), 7, now_ns=10 * S + 1) == FeedCondition(STALE, 9 * S)
    assert view.on_status(FeedCondition(LIVE), 7, now_ns=10 * S + 2) == FeedCondition(LIVE)
    assert view.assess(connected=False, now_ns=10 * S + 3) == FeedCondition(STALE, 10 * S + 2)
    view.saw_sequence(11)
    view.saw_sequence(3)
    assert view.last_sequence == 11


def test_event_frames_split_lines_and_carry_ids() -> None:
    assert sse.event("order_update", '{"a":1}\n{"b":2}', event_id="evt_1") == (
        b'id: evt_1\nevent: order_update\ndata: {"a":1}\ndata: {"b":2}\n\n'
    )
    assert sse.comment("hb") == b": hb\n\n"
    assert sse.retry(3000) == b"retry: 3000\n\n"
    with pytest.raises(ValueError):
        sse.event("x", "{}", event_id="a\nevent: forged")


# --- conflation ----------------------------------------------------------------------------
def test_a_push_group_remembers_which_symbols_changed_not_every_tick() -> None:
    group: PushGroup[str] = PushGroup(("INFY", "TCS"), interval=0.25)
    assert group.mark("INFY") is True  # clean → dirty: schedule a push
    for _ in range(1000):
        assert group.mark("INFY") is False
    group.mark("TCS")
    assert group.take(10.0) == ["INFY", "TCS"]  # bounded by symbols, oldest change first
    assert not group.dirty
    assert group.take(10.1) == []  # nothing changed: nothing spent


def test_a_push_group_pushes_a_short_burst_at_once_then_at_its_rate() -> None:
    group: PushGroup[str] = PushGroup(("INFY",), interval=0.25, burst=3)
    pushed_at = []
    now = 10.0
    while now < 12.0:  # a symbol that changes all the time, for two seconds
        group.mark("INFY")
        now = max(now, group.next_push_at)
        assert group.take(now) == ["INFY"]
        pushed_at.append(now)
        now += 0.001
    assert pushed_at[:3] == pytest.approx([10.0, 10.001, 10.002])  # the burst goes at once
    gaps = [b - a for a, b in itertools.pairwise(pushed_at[2:])]
    assert all(gap == pytest.approx(0.25, abs=0.002) for gap in gaps)  # then the rate holds
    assert len(pushed_at) <= 3 + 2.0 / 0.25 + 1
    # Quiet for a while: the bucket fills again, but never above the burst.
    now += 5.0
    for expected_wait in (0.0, 0.0, 0.0):
        group.mark("INFY")
        assert group.next_push_at - now <= expected_wait
        group.take(now)
    group.mark("INFY")
    assert group.next_push_at - now == pytest.approx(0.25)


# --- limits --------------------------------------------------------------------------------
def test_rate_limiter_allows_bursts_then_paces_per_key() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.acquire("u1", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("u1", 0.0) == pytest.approx(0.5)
    assert limiter.acquire("u2", 0.0) == 0.0  # keys are independent
    assert limiter.acquire("u1", 0.5) == 0.0  # one token back after 1/rate seconds
    assert limiter.acquire("u1", 0.5) > 0


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=100)
    for n in range(1000):
        limiter.acquire(f"u{n}", 0.0)
    assert len(limiter._buckets) == 100


def test_login_throttle_locks_out_with_growing_delays_and_forgets() -> None:
    throttle = LoginThrottle(free_failures=2, base_lock=1.0, max_lock=8.0, forget_after=60.0)
    for _ in range(2):
        assert throttle.retry_after("user:asha", 0.0) == 0.0
        throttle.failed("user:asha", 0.0)
    assert throttle.retry_after("user:asha", 0.0) == 0.0
    throttle.failed("user:asha", 0.0)
    assert throttle.retry_after("user:asha", 0.0) == 1.0
    throttle.failed("user:asha", 1.0)
    assert throttle.retry_after("user:asha", 1.0) == 2.0
    for t in range(2, 10):
        throttle.failed("user:asha", float(t))
    assert throttle.retry_after("user:asha", 9.0) == 8.0  # capped
    assert throttle.retry_after("user:asha", 100.0) == 0.0  # forgotten after quiet time
    throttle.failed("user:ravi", 0.0)
    throttle.succeeded("user:ravi")
    assert throttle.retry_after("user:ravi", 0.0) == 0.0


def test_rate_limiter_tells_what_is_left_without_spending_it() -> None:
    limiter = RateLimiter(rate=2.0, burst=4)
    assert limiter.remaining("u1", 0.0) == (4, 0.0)
    for _ in range(3):
        limiter.acquire("u1", 0.0)
    assert limiter.remaining("u1", 0.0) == (1, 1.5)
    assert limiter.remaining("u1", 0.0) == (1, 1.5)  # asking spends nothing
    assert limiter.remaining("u1", 0.5) == (2, 1.0)
    assert limiter.window_seconds == 2.0


def test_login_guard_locks_a_username_at_an_address_not_the_address() -> None:
    guard = LoginGuard(free_failures=2, address_failures=100, user_failures=100, base_lock=1.0)
    for t in range(3):
        guard.failed("asha", "203.0.113.7", float(t))
    assert guard.retry_after("asha", "203.0.113.7", 2.0) == 1.0
    assert guard.retry_after("ASHA ", "203.0.113.7", 2.0) == 1.0  # one user, however written
    # The colleague behind the same NAT, and asha from home, are not locked.
    assert guard.retry_after("ravi", "203.0.113.7", 2.0) == 0.0
    assert guard.retry_after("asha", "198.51.100.1", 2.0) == 0.0
    guard.failed("asha", "203.0.113.7", 3.0)
    assert guard.retry_after("asha", "203.0.113.7", 3.0) == 2.0  # exponential


def test_spraying_from_one_address_spares_users_who_log_in_from_there() -> None:
    guard = LoginGuard(free_failures=5, address_failures=3, user_failures=100, base_lock=10.0)
    guard.succeeded("ravi", "203.0.113.7", 0.0)  # ravi logs in from the office every day
    for n in range(4):
        guard.failed(f"victim{n}", "203.0.113.7", 1.0)
    # The address sprayed usernames: a username new to this address waits, ravi does not.
    assert guard.retry_after("meera", "203.0.113.7", 1.0) == 10.0
    assert guard.retry_after("ravi", "203.0.113.7", 1.0) == 0.0
    assert guard.retry_after("meera", "198.51.100.1", 1.0) == 0.0
    assert guard.known("ravi", "203.0.113.7", 1.0)
    assert not guard.known("ravi", "203.0.113.7", guard.trust_seconds + 1.0)  # trust lapses


def test_a_distributed_guess_does_not_lock_the_victim_out_of_their_own_address() -> None:
    guard = LoginGuard(free_failures=5, address_failures=100, user_failures=3, base_lock=10.0)
    guard.succeeded("asha", "198.51.100.1", 0.0)
    for n in range(4):
        guard.failed("asha", f"192.0.2.{n}", 1.0)
    assert guard.retry_after("asha", "192.0.2.99", 1.0) == 10.0  # the next bot waits
    assert guard.retry_after("asha", "198.51.100.1", 1.0) == 0.0  # asha at home does not
    # A success forgets only its own pair: logging in to one's own account from the attacked
    # address does not wash the address's record.
    guard2 = LoginGuard(free_failures=5, address_failures=2, user_failures=100, base_lock=10.0)
    for n in range(3):
        guard2.failed(f"victim{n}", "203.0.113.9", 1.0)
    guard2.succeeded("attacker", "203.0.113.9", 1.0)
    assert guard2.retry_after("victim9", "203.0.113.9", 1.0) == 10.0


def test_login_guard_memory_is_bounded() -> None:
    guard = LoginGuard(max_keys=50)
    for n in range(500):
        guard.failed(f"u{n}", f"10.0.{n // 250}.{n % 250}", 0.0)
        guard.succeeded(f"u{n}", "10.9.9.9", 0.0)
    assert len(guard._known) == 50
    assert len(guard._pairs._keys) <= 50


def test_stream_slots_cap_concurrent_streams_per_user() -> None:
    slots = StreamSlots(per_user=2)
    assert slots.acquire("u1") and slots.acquire("u1")
    assert not slots.acquire("u1")
    assert slots.acquire("u2")
    slots.release("u1")
    assert slots.acquire("u1")
    slots.release("u1")
    slots.release("u1")
    assert slots.open_streams("u1") == 0


def test_shared_stream_slots_cap_a_user_and_lapse_when_not_renewed() -> None:
    held = claim_slot({}, "a", 100.0, 2, 30.0)
    assert held == {"a": 130.0}
    held = claim_slot(held, "b", 101.0, 2, 30.0)
    assert held is not None and set(held) == {"a", "b"}
    assert claim_slot(held, "c", 102.0, 2, 30.0) is None  # two open, wherever they are
    # "a" is renewed by its process; "b"'s process died, so its lease lapses.
    held = renew_slots(held, {"a"}, 125.0, 30.0)
    assert held == {"a": 155.0, "b": 131.0}
    held = claim_slot(held, "c", 132.0, 2, 30.0)
    assert held == {"a": 155.0, "c": 162.0}
    assert drop_slots(held, {"a"}, 133.0) == {"c": 162.0}
    assert drop_slots(held, {"a", "c"}, 133.0) == {}


# --- tokens --------------------------------------------------------------------------------
class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tokens_round_trip_and_expire() -> None:
    clock = Clock(1_000_000.0)
    authority = UserTokens(KeySet.single(SECRET), ttl_seconds=900, clock=clock)
    issued = authority.issue("u_1", "s1")
    assert issued.expires_in == 900
    assert authority.verify(issued.token).user_id == "u_1"
    clock.now += 900 + 6
    with pytest.raises(Refused) as caught:
        authority.verify(issued.token)
    assert caught.value.why == "expired"


def test_tampered_foreign_and_unsigned_tokens_are_refused() -> None:
    clock = Clock(1_000_000.0)
    authority = UserTokens(KeySet.single(SECRET), ttl_seconds=900, clock=clock)
    header, payload, signature = authority.issue("u_1", "s1").token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "u_2"
    kid = {"kid": "user:0"}
    forged = {
        "tampered": f"{header}.{_b64(claims)}.{signature}",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT', **kid})}.{_b64(claims)}.",
        "other key": jwt.encode(claims, "another-secret-of-sufficient-length-xx", "HS256", kid),
        "garbage": "not-a-token",
        "missing exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET, "HS256", kid),
        "missing sid": jwt.encode({k: v for k, v in claims.items() if k != "sid"}, SECRET, "HS256", kid),
        "no kid": jwt.encode(claims, SECRET, algorithm="HS256"),
        "wrong audience": jwt.encode({**claims, "aud": "someone-else"}, SECRET, "HS256", kid),
        "issued in the future": jwt.encode({**claims, "iat": claims["iat"] + 3600}, SECRET, "HS256", kid),
        "path in sub": jwt.encode({**claims, "sub": "u_1/orders/x"}, SECRET, "HS256", kid),
    }
    for name, token in forged.items():
        with pytest.raises(Refused):
            authority.verify(token)
            pytest.fail(f"{name} token accepted")


def test_field_violation_dataclass_is_what_problems_render() -> None:
    # The HTTP layer builds violations with the runtime's dataclass; keep them compatible.
    violation = FieldViolation("symbol", "is required")
    assert (violation.field, violation.description) == ("symbol", "is required")
