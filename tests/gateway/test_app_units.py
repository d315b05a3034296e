"""The live-price hub, login throttling, request validation messages and JSON mapping,
with in-memory fakes of the gateway's own ports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal

import pytest
from connexion.json_schema import Draft4RequestValidator

from brokermesh.marketdata.v1 import marketdata_pb2
from brokermesh.orders.v1 import orders_pb2
from brokermesh.type.v1 import decimal_pb2, trading_pb2
from gateway.app.quotes import QuoteHub
from gateway.app.sessions import BAD_CREDENTIALS, Sessions
from gateway.domain.conflation import MAX_MEMBERS, PUSH_BURST
from gateway.domain.jsonmoney import dumps
from gateway.domain.limits import LoginGuard
from gateway.transport import mapping
from gateway.transport.validation import violations_of
from svc_runtime.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from svc_runtime.tokens import REFRESH_AUDIENCE, KeySet, RevokedSessions, UserTokens
from tests.gateway.fakes import MemorySessions


def quote(symbol: str, price: str, seconds: int, sequence: int) -> marketdata_pb2.Quote:
    q = marketdata_pb2.Quote(
        symbol=symbol,
        last_price=decimal_pb2.Decimal(value=price),
        change=decimal_pb2.Decimal(value="1.00"),
        change_percent=decimal_pb2.Decimal(value="0.07"),
        sequence=sequence,
    )
    q.exchange_time.seconds = seconds
    return q


class FakeQuotes:
    def __init__(self, quotes: dict[str, marketdata_pb2.Quote]) -> None:
        self.quotes = quotes
        self.asked: list[list[str]] = []

    async def latest_quotes(self, symbols: Sequence[str]) -> tuple[list[marketdata_pb2.Quote], list[str]]:
        self.asked.append(list(symbols))
        return [self.quotes[s] for s in symbols if s in self.quotes], [
            s for s in symbols if s not in self.quotes
        ]


def data_of(frame: bytes) -> dict[str, object]:
    return json.loads(frame.split(b"data: ", 1)[1], parse_float=Decimal)


def frames_of(chunks: list[bytes]) -> list[bytes]:
    """Written chunks (a shared payload may hold several frames) → SSE frames."""
    return [f + b"\n\n" for f in b"".join(chunks).split(b"\n\n") if f]


def ticks_of(chunks: list[bytes]) -> list[dict[str, object]]:
    return [data_of(f) for f in frames_of(chunks) if f.startswith(b"event: price_tick")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_hub_starts_with_the_snapshot_then_follows_ticks() -> None:
    hub = QuoteHub(
        FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1), "TCS": quote("TCS", "3500.00", 100, 1)})
    )
    sub = await hub.subscribe(["INFY", "TCS"])
    first = frames_of(sub.take())
    assert [data_of(f)["ltp"] for f in first[:2]] == [Decimal("1500.00"), Decimal("3500.00")]
    assert first[2].startswith(b"event: feed_status")  # after the snapshot: is it live?
    hub.publish([quote("INFY", "1501.05", 101, 2), quote("WIPRO", "400.00", 101, 2)])
    assert not sub.wake.is_set()  # the push stage hands ticks over, not the feed
    hub.push_due()
    assert sub.wake.is_set()
    assert ticks_of(sub.take()) == [
        {
            "symbol": "INFY",
            "ltp": Decimal("1501.05"),
            "change": Decimal("1.00"),
            "changePct": Decimal("0.07"),
            "bid": None,
            "bidQty": 0,
            "ask": None,
            "askQty": 0,
            "volume": 0,
            "sequence": 2,
            "ts": "1970-01-01T00:01:41Z",
        }
    ]


async def test_a_snapshot_never_overtakes_a_newer_live_tick() -> None:
    source = FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1)})
    hub = QuoteHub(source)
    hub.publish([quote("INFY", "1510.00", 200, 7)])  # the hub has seen a newer one already
    sub = await hub.subscribe(["INFY"])
    assert [t["ltp"] for t in ticks_of(sub.take())] == [Decimal("1510.00")]


async def test_each_push_is_joined_once_and_shared_by_all_members() -> None:
    hub = QuoteHub(
        FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1), "TCS": quote("TCS", "3500.00", 100, 1)})
    )
    subs = [await hub.subscribe(["INFY", "TCS"]) for _ in range(50)]
    for sub in subs:
        sub.take()
    hub.publish([quote("INFY", "1502.00", 101, 2), quote("TCS", "3502.00", 101, 2)])
    hub.push_due()
    payloads = [sub.take() for sub in subs]
    assert all(len(p) == 1 and p[0] is payloads[0][0] for p in payloads)
    assert [t["ltp"] for t in ticks_of(payloads[0])] == [Decimal("1502.00"), Decimal("3502.00")]


async def test_pushes_are_paced_and_carry_only_the_latest_price() -> None:
    clock = Clock()
    hub = QuoteHub(FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1)}), pushes_per_second=4, clock=clock)
    sub = await hub.subscribe(["INFY"])
    sub.take()
    for n in range(PUSH_BURST):  # a short burst goes out at once
        hub.publish([quote("INFY", f"{1501 + n}.00", 101, 2 + n)])
        assert hub.push_due() is None  # pushed at once: nothing else waiting
        assert [t["ltp"] for t in ticks_of(sub.take())] == [Decimal(f"{1501 + n}.00")]
    for n in range(3 + PUSH_BURST, 50):
        hub.publish([quote("INFY", f"{1500 + n}.00", 100 + n, n)])
    assert hub.push_due() == pytest.approx(0.25)  # the next push may go a quarter second later
    assert not sub.pending
    clock.now += 0.25
    hub.push_due()
    assert [t["ltp"] for t in ticks_of(sub.take())] == [Decimal("1549.00")]


async def test_an_update_split_over_several_tick_messages_goes_out_in_one_push() -> None:
    """The rest of an exchange update that arrives a few ms after its first part joins the
    same push, rather than waiting a whole paced interval behind it."""
    clock = Clock()
    hub = QuoteHub(
        FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1), "TCS": quote("TCS", "3500.00", 100, 1)}),
        pushes_per_second=4,
        gather_seconds=0.01,
        clock=clock,
    )
    sub = await hub.subscribe(["INFY", "TCS"])
    sub.take()
    hub.publish([quote("INFY", "1501.00", 101, 2)])
    assert hub.push_due() == pytest.approx(0.01)  # gathering, not pushed yet
    clock.now += 0.004
    hub.publish([quote("TCS", "3501.00", 101, 3)])  # the same update's second message
    clock.now += 0.006
    assert hub.push_due() is None
    assert [t["ltp"] for t in ticks_of(sub.take())] == [Decimal("1501.00"), Decimal("3501.00")]
    # The next change goes after the gather time too, not a paced interval later.
    hub.publish([quote("INFY", "1502.00", 102, 4)])
    assert hub.push_due() == pytest.approx(0.01)


async def test_a_client_still_writing_catches_up_with_the_latest_not_every_push() -> None:
    clock = Clock()
    hub = QuoteHub(
        FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1), "TCS": quote("TCS", "3500.00", 100, 1)}),
        clock=clock,
    )
    slow = await hub.subscribe(["INFY", "TCS"])
    slow.take()
    for n in range(2, 30):  # many pushes while the client writes nothing
        hub.publish([quote("INFY", f"{1500 + n}.00", 100 + n, n)])
        hub.push_due()
        clock.now += 1
    assert slow.resyncs == 1
    # One write: the latest frame of each of its symbols, whatever it missed.
    assert [t["ltp"] for t in ticks_of(slow.take())] == [Decimal("1529.00"), Decimal("3500.00")]


async def test_groups_are_bounded_and_emptied_groups_go() -> None:
    hub = QuoteHub(FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1)}))
    subs = [await hub.subscribe(["INFY"]) for _ in range(MAX_MEMBERS + 1)]
    assert len({sub.group for sub in subs}) == 2
    assert hub.subscriber_count("INFY") == MAX_MEMBERS + 1
    for sub in subs:
        hub.unsubscribe(sub)
    assert hub.subscriber_count("INFY") == 0


async def test_unknown_symbols_are_refused_and_leave_no_subscription() -> None:
    hub = QuoteHub(FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1)}))
    with pytest.raises(InvalidArgument) as caught:
        await hub.subscribe(["INFY", "NOPE"])
    assert caught.value.reason == "UNKNOWN_SYMBOL"
    assert hub.subscriber_count("INFY") == 0


async def test_closing_the_hub_wakes_and_closes_every_subscription() -> None:
    hub = QuoteHub(FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1)}))
    sub = await hub.subscribe(["INFY"])
    sub.take()
    hub.close()
    assert sub.closed and sub.wake.is_set()
    with pytest.raises(RuntimeError):
        await hub.subscribe(["INFY"])


async def test_a_live_feed_serves_snapshots_from_what_it_has_seen() -> None:
    source = FakeQuotes({"INFY": quote("INFY", "1500.00", 100, 1), "TCS": quote("TCS", "3500.00", 100, 1)})
    generation: list[int | None] = [0]
    hub = QuoteHub(source, lambda: generation[0])
    hub.publish([quote("INFY", "1501.00", 101, 2)])
    first = await hub.subscribe(["INFY", "TCS"])
    assert source.asked == [["TCS"]]  # INFY came from the feed
    assert [t["ltp"] for t in ticks_of(first.take())] == [Decimal("1501.00"), Decimal("3500.00")]
    second = await hub.subscribe(["TCS", "INFY"])
    assert source.asked == [["TCS"]]  # a reconnect storm does not reach the price tracker
    assert len(ticks_of(second.take())) == 2
    # The feed reconnected: ticks may have been missed, so the cache is not trusted.
    generation[0] = 1
    await hub.subscribe(["INFY"])
    assert source.asked[-1] == ["INFY"]
    # The feed is down: always ask.
    generation[0] = None
    await hub.subscribe(["INFY"])
    await hub.subscribe(["INFY"])
    assert source.asked[-2:] == [["INFY"], ["INFY"]]


class FakeAccounts:
    def __init__(self) -> None:
        self.calls = 0

    async def verify_credentials(self, username: str, password: str) -> str:
        self.calls += 1
        if (username, password) == ("asha", "right-password"):
            return "u_asha"
        raise Unauthenticated("nope")


async def test_login_gives_one_message_for_any_failure_and_throttles_guessing() -> None:
    now = [1000.0]
    accounts = FakeAccounts()
    keys = KeySet.single("secret-" * 8)
    revoked = RevokedSessions(ready=True)
    login = Sessions(
        accounts,
        UserTokens(keys, ttl_seconds=900, clock=lambda: now[0]),
        UserTokens(keys, audience=REFRESH_AUDIENCE, ttl_seconds=3600, clock=lambda: now[0]),
        MemorySessions(revoked),
        guard=LoginGuard(free_failures=2, base_lock=30.0),
        clock=lambda: now[0],
        session_seconds=3600,
    ).login
    messages = set()
    for username in ("asha", "nobody"):
        with pytest.raises(Unauthenticated) as caught:
            await login(username, "wrong", "10.0.0.1")
        messages.add(caught.value.message)
    assert messages == {BAD_CREDENTIALS}
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await login("asha", "wrong", "10.0.0.1")
    # Three failures of "asha" from 10.0.0.1 (two free): that pair is locked, even with the
    # right password, and svc_funds is not asked.
    calls = accounts.calls
    with pytest.raises(ResourceExhausted) as throttled:
        await login("asha", "right-password", "10.0.0.1")
    assert throttled.value.retry_after_seconds == 30.0
    assert accounts.calls == calls
    # Not asha elsewhere, nor another user at the same address.
    assert (await login("asha", "right-password", "10.0.0.3")).access.user_id == "u_asha"
    with pytest.raises(Unauthenticated):
        await login("nobody", "wrong", "10.0.0.1")
    now[0] += 31
    issued = await login("asha", "right-password", "10.0.0.1")
    assert issued.access.user_id == "u_asha"


def test_validation_messages_name_fields_and_never_echo_values() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["username", "password", "side"],
        "properties": {
            "username": {"type": "string"},
            "password": {"type": "string", "maxLength": 8},
            "side": {"type": "string", "enum": ["BUY", "SELL"]},
            "symbols": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z]+$"}},
        },
    }
    body = {
        "password": "hunter2-secret-value",
        "side": "HOLD",
        "symbols": ["INFY", "bad!"],
        "status": "FILLED",
    }
    violations = {
        (v.field, v.description) for v in violations_of(Draft4RequestValidator(schema).iter_errors(body))
    }
    assert violations == {
        ("username", "is required"),
        ("status", "is not a field of this request (or is read-only)"),
        ("password", "must be at most 8 characters long"),
        ("side", "must be one of BUY, SELL"),
        ("symbols[1]", "must match the pattern ^[A-Z]+$"),
    }
    assert not any("hunter2" in d for _, d in violations)


def test_orders_map_to_the_seed_shape_with_exact_prices() -> None:
    order = orders_pb2.Order(
        order_id="ord_1",
        user_id="u_1",
        client_order_id="k1",
        symbol="INFY",
        side=trading_pb2.SIDE_BUY,
        type=trading_pb2.ORDER_TYPE_MARKET,
        quantity=10,
        status=orders_pb2.ORDER_STATUS_FILLED,
        filled_quantity=10,
        average_price=decimal_pb2.Decimal(value="1542.30"),
    )
    body = mapping.order_json(order)
    assert {k: body[k] for k in ("orderId", "clientId", "symbol", "side", "type", "quantity", "status")} == {
        "orderId": "ord_1",
        "clientId": "u_1",
        "symbol": "INFY",
        "side": "BUY",
        "type": "MARKET",
        "quantity": 10,
        "status": "FILLED",
    }
    assert b'"avgPrice":1542.30' in dumps(body)
    assert body["limitPrice"] is None


def test_place_order_takes_the_user_from_the_token_not_the_body() -> None:
    body = {"symbol": "infy", "side": "BUY", "type": "LIMIT", "quantity": 5, "limitPrice": Decimal("1542.35")}
    request = mapping.place_order_request(body, user_id="u_me", idempotency_key="key-1")
    assert request.parent == "users/u_me"
    assert request.request_id == "key-1" and request.order.client_order_id == "key-1"
    assert request.order.symbol == "INFY"
    assert request.order.limit_price.value == "1542.35"
    assert request.order.type == trading_pb2.ORDER_TYPE_LIMIT
    with pytest.raises(InvalidArgument) as caught:
        mapping.place_order_request(
            {**body, "clientId": "u_someone_else"}, user_id="u_me", idempotency_key="k"
        )
    assert caught.value.violations[0].field == "clientId"
    with pytest.raises(InvalidArgument) as bad_prices:
        mapping.place_order_request(
            {**body, "limitPrice": "1.001", "stopPrice": "x"}, user_id="u_me", idempotency_key="k"
        )
    assert {v.field for v in bad_prices.value.violations} == {"limitPrice", "stopPrice"}
