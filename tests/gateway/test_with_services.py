"""Through the gateway to the real services: login, funds, idempotent orders, orders of
other users, business refusals, and the order-update stream with Last-Event-ID replay.

Each group needs its services to exist; until a colleague's service has landed, its
tests are skipped with the reason shown in the summary.
"""

from __future__ import annotations

import contextlib
import importlib.util
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from svc_runtime import admin, audit
from svc_runtime.stack import SERVICE_NAMES, Stack
from tests.conftest import new_stack
from tests.gateway.conftest import events, next_event
from tests.gateway.test_http_edge import assert_problem
from tests.support.grpc import service_channel
from tests.support.infra import SharedInfra, unique_name
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


def landed(*services: str) -> bool:
    return all(importlib.util.find_spec(f"{name}.main") is not None for name in services)


needs_funds = pytest.mark.skipif(not landed("svc_funds"), reason="svc_funds has not landed yet")
needs_all = pytest.mark.skipif(not landed(*SERVICE_NAMES), reason="not every service has landed yet")


async def open_account(stack: Stack, deposit: str) -> tuple[str, str, str]:
    username, password = unique_name("u"), "pw-" + unique_name("")
    created = await admin.create_user(
        stack.plan.target("svc_funds"),
        username,
        password,
        username,
        deposit,
        signer=stack.plan.operator_signer(),
    )
    return username, password, created["account"]["user_id"]


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await client.post("/v1/sessions", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


@pytest.fixture(scope="module")
async def funds_stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    env = {"BROKERMESH_GATEWAY_LOGIN_FREE_FAILURES": "3"}
    stack = await new_stack(infra, tmp_path_factory.mktemp("funds"), ["svc_funds", "gateway"], env)
    yield stack
    with contextlib.suppress(Exception):
        await stack.stop()


@pytest.fixture(scope="module")
async def full_stack(infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = await new_stack(infra, tmp_path_factory.mktemp("full"))
    yield stack
    with contextlib.suppress(Exception):
        await stack.stop()


@needs_funds
async def test_login_then_exact_funds_and_ledger(funds_stack: Stack) -> None:
    username, password, user_id = await open_account(funds_stack, "100000.50")
    async with httpx.AsyncClient(base_url=funds_stack.plan.gateway_url, timeout=30) as client:
        session = await client.post("/v1/sessions", json={"username": username, "password": password})
        assert session.status_code == 200, session.text
        assert session.headers["cache-control"] == "no-store"
        assert session.json()["userId"] == user_id and session.json()["tokenType"] == "Bearer"
        auth = {"Authorization": f"Bearer {session.json()['accessToken']}"}
        funds = await client.get("/v1/funds", headers=auth)
        assert funds.status_code == 200, funds.text
        assert b'"available":100000.50' in funds.content
        assert Decimal(str(funds.json()["blocked"])) == 0
        ledger = (await client.get("/v1/funds/ledger", params={"pageSize": 10}, headers=auth)).json()
        assert any(
            e["kind"] == "DEPOSIT" and Decimal(str(e["amount"])) == Decimal("100000.50")
            for e in ledger["entries"]
        )


@needs_funds
async def test_failed_logins_say_the_same_thing_and_are_throttled(funds_stack: Stack) -> None:
    username, password, _ = await open_account(funds_stack, "0")
    async with httpx.AsyncClient(base_url=funds_stack.plan.gateway_url, timeout=30) as client:
        wrong = await client.post("/v1/sessions", json={"username": username, "password": "not-it"})
        nobody = await client.post("/v1/sessions", json={"username": unique_name("ghost"), "password": "x"})
        assert_problem(wrong, 401)
        assert_problem(nobody, 401)
        assert wrong.json()["detail"] == nobody.json()["detail"]
        assert wrong.json()["reason"] == nobody.json()["reason"]
        # Three free failures (BROKERMESH_GATEWAY_LOGIN_FREE_FAILURES) of this username here.
        for _ in range(3):
            await client.post("/v1/sessions", json={"username": username, "password": "not-it"})
        throttled = await client.post("/v1/sessions", json={"username": username, "password": password})
        assert_problem(throttled, 429, "LOGIN_THROTTLED")
        assert int(throttled.headers["retry-after"]) >= 1
        # The lock is on that username at this address: a colleague at the same address
        # (an office behind one NAT) still logs in.
        colleague, colleague_password, _ = await open_account(funds_stack, "0")
        await login(client, colleague, colleague_password)


ORDER = {"symbol": "INFY", "side": "BUY", "type": "LIMIT", "quantity": 2, "limitPrice": "1400.00"}


@needs_all
async def test_orders_are_idempotent_per_key(full_stack: Stack) -> None:
    username, password, _ = await open_account(full_stack, "100000.00")
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        key = str(uuid.uuid4())
        first = await client.post("/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key})
        assert first.status_code == 201, first.text
        order = first.json()
        assert order["clientOrderId"] == key and order["status"] == "PENDING_EXCHANGE"
        assert first.headers["location"] == f"/v1/orders/{order['orderId']}"
        again = await client.post("/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key})
        assert again.status_code == 201, again.text
        assert again.json()["orderId"] == order["orderId"]
        # The same key in the body is the same key.
        by_body = await client.post("/v1/orders", json={**ORDER, "clientOrderId": key}, headers=auth)
        assert by_body.json()["orderId"] == order["orderId"]
        different = await client.post(
            "/v1/orders", json={**ORDER, "quantity": 3}, headers={**auth, "Idempotency-Key": key}
        )
        assert_problem(different, 409)
        listed = (await client.get("/v1/orders", headers=auth)).json()["orders"]
        assert [o["orderId"] for o in listed if o["clientOrderId"] == key] == [order["orderId"]]
        assert len(listed) == 1
        await client.post(f"/v1/orders/{order['orderId']}:cancel", headers=auth)


@needs_all
async def test_the_audit_trail_names_the_request_the_client_and_the_user(full_stack: Stack) -> None:
    username, password, user_id = await open_account(full_stack, "100000.00")
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        request_id = "req-audit-" + unique_name("")
        placed = await client.post(
            "/v1/orders",
            json=ORDER,
            headers={**auth, "Idempotency-Key": str(uuid.uuid4()), "X-Request-Id": request_id},
        )
        assert placed.status_code == 201, placed.text
        assert placed.headers["x-request-id"] == request_id
        order_id = placed.json()["orderId"]
    async with service_channel(full_stack.plan, "svc_orders") as ch:
        records = await orders_pb2_grpc.OrdersServiceStub(ch).ListAuditRecords(
            orders_pb2.ListAuditRecordsRequest(parent=f"users/{user_id}/orders/{order_id}"), timeout=10
        )
    place = [r for r in records.records if r.action == "PLACE"]
    assert len(place) == 1
    assert (place[0].request_id, place[0].client_ip, place[0].actor) == (
        request_id,
        "127.0.0.1",
        f"user:{user_id}",
    )


@needs_all
async def test_another_users_order_is_not_found(full_stack: Stack) -> None:
    owner_name, owner_password, _ = await open_account(full_stack, "100000.00")
    other_name, other_password, _ = await open_account(full_stack, "100000.00")
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        owner = await login(client, owner_name, owner_password)
        other = await login(client, other_name, other_password)
        placed = await client.post(
            "/v1/orders", json=ORDER, headers={**owner, "Idempotency-Key": str(uuid.uuid4())}
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["orderId"]
        assert_problem(await client.get(f"/v1/orders/{order_id}", headers=other), 404)
        assert_problem(await client.post(f"/v1/orders/{order_id}:cancel", headers=other), 404)
        assert_problem(
            await client.post(f"/v1/orders/{order_id}:modify", json={"quantity": 1}, headers=other), 404
        )
        trades = await client.get("/v1/trades", params={"orderId": order_id}, headers=other)
        assert trades.status_code in (200, 404)
        if trades.status_code == 200:
            assert trades.json()["trades"] == []
        # The owner's order is untouched by all that.
        mine = (await client.get(f"/v1/orders/{order_id}", headers=owner)).json()
        assert mine["status"] not in ("CANCELLED", "PENDING_CANCEL") and mine["quantity"] == 2
        await client.post(f"/v1/orders/{order_id}:cancel", headers=owner)


@needs_all
async def test_refused_orders_change_nothing(full_stack: Stack) -> None:
    username, password, _ = await open_account(full_stack, "1000.00")
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        broke = await client.post(
            "/v1/orders",
            json={**ORDER, "quantity": 100},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert_problem(broke, 422, "INSUFFICIENT_FUNDS")
        bad_tick = await client.post(
            "/v1/orders",
            json={**ORDER, "limitPrice": "1400.03"},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        body = assert_problem(bad_tick, 400)
        assert [v["field"] for v in body["fieldViolations"]] == ["limitPrice"]
        no_price = await client.post(
            "/v1/orders",
            json={k: v for k, v in ORDER.items() if k != "limitPrice"},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert_problem(no_price, 400)
        assert (await client.get("/v1/orders", headers=auth)).json()["orders"] == []
        funds = (await client.get("/v1/funds", headers=auth)).json()
        assert Decimal(str(funds["available"])) == Decimal("1000.00")
        assert Decimal(str(funds["blocked"])) == 0


@needs_all
async def test_order_updates_stream_and_replay_after_last_event_id(full_stack: Stack) -> None:
    username, password, _ = await open_account(full_stack, "100000.00")
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        async with client.stream("GET", "/v1/orders/stream", headers=auth) as response:
            assert response.status_code == 200
            stream = events(response)
            assert (await next_event(stream)).event == "retry"
            placed = await client.post(
                "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": str(uuid.uuid4())}
            )
            assert placed.status_code == 201, placed.text
            order_id = placed.json()["orderId"]
            first = await next_event(stream, timeout=30)
            assert first.event == "order_update" and first.id
            assert first.json()["order"]["orderId"] == order_id
            cancelled = await client.post(f"/v1/orders/{order_id}:cancel", headers=auth)
            assert cancelled.status_code == 200, cancelled.text
            seen = [first]

            async def terminal() -> bool:
                seen.append(await next_event(stream, timeout=30))
                return seen[-1].json()["order"]["status"] == "CANCELLED"

            await eventually(terminal)
        # Reconnect after the first event: everything after it is replayed, in order.
        async with client.stream(
            "GET", "/v1/orders/stream", headers={**auth, "Last-Event-ID": first.id}
        ) as replay:
            assert replay.status_code == 200
            stream = events(replay)
            await next_event(stream)  # retry
            replayed = [await next_event(stream, timeout=30) for _ in seen[1:]]
            assert [e.id for e in replayed] == [e.id for e in seen[1:]]


@needs_all
async def test_an_unknown_or_foreign_last_event_id_is_refused_not_streamed(full_stack: Stack) -> None:
    owner_name, owner_password, _ = await open_account(full_stack, "100000.00")
    other_name, other_password, _ = await open_account(full_stack, "100000.00")
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        owner = await login(client, owner_name, owner_password)
        other = await login(client, other_name, other_password)
        async with client.stream("GET", "/v1/orders/stream", headers=owner) as response:
            stream = events(response)
            await next_event(stream)  # retry
            placed = await client.post(
                "/v1/orders", json=ORDER, headers={**owner, "Idempotency-Key": str(uuid.uuid4())}
            )
            assert placed.status_code == 201, placed.text
            event_id = (await next_event(stream, timeout=30)).id
        await client.post(f"/v1/orders/{placed.json()['orderId']}:cancel", headers=owner)
        # A problem response (not a 200 stream) makes EventSource stop reconnecting.
        unknown = await client.get(
            "/v1/orders/stream", headers={**other, "Last-Event-ID": "evt_not_a_real_one"}
        )
        assert 400 <= unknown.status_code < 500
        assert unknown.headers["content-type"].startswith("application/problem+json")
        foreign = await client.get("/v1/orders/stream", headers={**other, "Last-Event-ID": event_id})
        assert 400 <= foreign.status_code < 500
        assert foreign.headers["content-type"].startswith("application/problem+json")


@needs_all
async def test_a_stream_ticket_follows_only_its_own_users_orders(full_stack: Stack) -> None:
    owner_name, owner_password, _ = await open_account(full_stack, "100000.00")
    other_name, other_password, _ = await open_account(full_stack, "100000.00")
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        owner = await login(client, owner_name, owner_password)
        other = await login(client, other_name, other_password)
        issued = await client.post("/v1/stream-tickets", headers=other)
        assert issued.status_code == 201, issued.text
        ticket = issued.json()["ticket"]
        # As EventSource opens it: no Authorization, only the ticket in the URL.
        async with client.stream("GET", "/v1/orders/stream", params={"ticket": ticket}) as response:
            assert response.status_code == 200
            stream = events(response)
            assert (await next_event(stream)).event == "retry"
            mine = await client.post(
                "/v1/orders", json=ORDER, headers={**owner, "Idempotency-Key": str(uuid.uuid4())}
            )
            theirs = await client.post(
                "/v1/orders", json=ORDER, headers={**other, "Idempotency-Key": str(uuid.uuid4())}
            )
            assert mine.status_code == 201 and theirs.status_code == 201
            # The owner's order came first, yet the ticket's user sees only their own.
            first = await next_event(stream, timeout=30)
            assert first.json()["order"]["orderId"] == theirs.json()["orderId"]
        reused = await client.get("/v1/orders/stream", params={"ticket": ticket})
        assert_problem(reused, 401, "TICKET_ALREADY_USED")
        await client.post(f"/v1/orders/{mine.json()['orderId']}:cancel", headers=owner)
        await client.post(f"/v1/orders/{theirs.json()['orderId']}:cancel", headers=other)


def _money(value: object) -> Decimal:
    return Decimal(str(value))


async def _funds(client: httpx.AsyncClient, auth: dict[str, str]) -> tuple[Decimal, Decimal]:
    funds = (await client.get("/v1/funds", headers=auth)).json()
    return _money(funds["available"]), _money(funds["blocked"])


@needs_all
async def test_a_preview_is_the_block_the_order_then_takes(full_stack: Stack) -> None:
    username, password, _ = await open_account(full_stack, "100000.00")
    order = {**ORDER, "quantity": 7, "product": "CNC"}
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        response = await client.post("/v1/orders:preview", json=order, headers=auth)
        assert response.status_code == 200, response.text
        preview = response.json()
        assert preview["acceptable"] is True and preview["refusal"] is None
        assert _money(preview["blockPrice"]) == Decimal("1400.00")
        assert _money(preview["orderValue"]) == Decimal("9800.00")
        charges = {c["name"]: _money(c["amount"]) for c in preview["charges"]}
        # Delivery buys pay STT and stamp duty among others; their sum is the total shown.
        assert {"stt", "stamp_duty"} <= charges.keys()
        assert sum(charges.values()) == _money(preview["chargesTotal"]) > 0
        assert _money(preview["blockAmount"]) == Decimal("9800.00") + _money(preview["chargesTotal"])
        assert _money(preview["available"]) == Decimal("100000.00")
        # Nothing was placed or blocked.
        assert await _funds(client, auth) == (Decimal("100000.00"), Decimal(0))
        assert (await client.get("/v1/orders", headers=auth)).json()["orders"] == []

        placed = await client.post(
            "/v1/orders", json=order, headers={**auth, "Idempotency-Key": str(uuid.uuid4())}
        )
        assert placed.status_code == 201, placed.text
        available, blocked = await _funds(client, auth)
        assert blocked == _money(preview["blockAmount"])
        assert available == Decimal("100000.00") - blocked
        await client.post(f"/v1/orders/{placed.json()['orderId']}:cancel", headers=auth)


@needs_all
async def test_a_preview_explains_a_refusal_and_changes_nothing(full_stack: Stack) -> None:
    username, password, _ = await open_account(full_stack, "1000.00")
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        broke = (
            await client.post("/v1/orders:preview", json={**ORDER, "quantity": 100}, headers=auth)
        ).json()
        assert broke["acceptable"] is False
        refusal = broke["refusal"]
        assert (refusal["status"], refusal["reason"]) == (422, "INSUFFICIENT_FUNDS")
        # The rule's figures, not only prose: what the order needs and what is free.
        assert _money(refusal["metadata"]["required"]) == _money(broke["blockAmount"])
        assert _money(refusal["metadata"]["available"]) == Decimal("1000.00")
        # A refusal placing would give: the same status and reason.
        placed = await client.post(
            "/v1/orders",
            json={**ORDER, "quantity": 100},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert_problem(placed, refusal["status"], refusal["reason"])

        no_shares = (
            await client.post("/v1/orders:preview", json={**ORDER, "side": "SELL"}, headers=auth)
        ).json()
        assert no_shares["refusal"]["reason"] == "INSUFFICIENT_HOLDINGS"
        assert no_shares["refusal"]["metadata"]["free"] == "0"
        assert _money(no_shares["available"]) == 0

        wild = (
            await client.post("/v1/orders:preview", json={**ORDER, "limitPrice": "9000.00"}, headers=auth)
        ).json()
        assert (wild["refusal"]["status"], wild["refusal"]["reason"]) == (400, "PRICE_OUTSIDE_COLLAR")
        assert wild["blockAmount"] is None

        # A malformed order is a 400 problem, as placing answers.
        assert_problem(
            await client.post("/v1/orders:preview", json={**ORDER, "limitPrice": "1400.03"}, headers=auth),
            400,
        )
        assert_problem(
            await client.post("/v1/orders:preview", json={**ORDER, "side": "HOLD"}, headers=auth), 400
        )
        assert (await client.post("/v1/orders:preview", json=ORDER)).status_code == 401

        assert (await client.get("/v1/orders", headers=auth)).json()["orders"] == []
        assert await _funds(client, auth) == (Decimal("1000.00"), Decimal(0))


@needs_all
async def test_tagged_orders_are_read_back_by_tag_in_orders_trades_ledger_and_pnl(full_stack: Stack) -> None:
    username, password, _ = await open_account(full_stack, "100000.00")
    tag = "mom-" + uuid.uuid4().hex[:8]
    market = {"symbol": "INFY", "side": "BUY", "type": "MARKET"}
    async with httpx.AsyncClient(base_url=full_stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        key = {"Idempotency-Key": str(uuid.uuid4())}
        tagged = await client.post(
            "/v1/orders", json={**market, "quantity": 3, "tag": tag}, headers={**auth, **key}
        )
        assert tagged.status_code == 201, tagged.text
        assert tagged.json()["tag"] == tag
        retagged = await client.post(
            "/v1/orders", json={**market, "quantity": 3, "tag": "other"}, headers={**auth, **key}
        )
        assert_problem(retagged, 409, "REQUEST_ID_REUSED")
        plain = await client.post("/v1/orders", json={**market, "quantity": 2}, headers=auth)
        assert plain.status_code == 201, plain.text
        assert plain.json()["tag"] is None
        ids = {tagged.json()["orderId"], plain.json()["orderId"]}

        async def all_filled() -> bool:
            orders = (await client.get("/v1/orders", headers=auth)).json()["orders"]
            return {o["orderId"] for o in orders if o["status"] == "FILLED"} >= ids

        await eventually(all_filled, timeout=60)
        by_tag = (await client.get("/v1/orders", params={"tag": tag}, headers=auth)).json()["orders"]
        assert [o["orderId"] for o in by_tag] == [tagged.json()["orderId"]]
        trades = (await client.get("/v1/trades", params={"tag": tag}, headers=auth)).json()["trades"]
        assert trades and {t["orderId"] for t in trades} == {tagged.json()["orderId"]}
        assert {t["tag"] for t in trades} == {tag} and sum(t["quantity"] for t in trades) == 3

        async def tagged_entries() -> list[dict]:
            entries = (await client.get("/v1/funds/ledger", params={"pageSize": 100}, headers=auth)).json()
            mine = [e for e in entries["entries"] if e["orderId"] == tagged.json()["orderId"]]
            return mine if any(e["kind"] == "FILL" for e in mine) else []

        entries = await eventually(tagged_entries, timeout=30)
        assert {e["tag"] for e in entries} == {tag}  # the block, the fills, the charges, the release
        untagged = (await client.get("/v1/funds/ledger", params={"pageSize": 100}, headers=auth)).json()[
            "entries"
        ]
        assert all(e["tag"] is None for e in untagged if e["orderId"] == plain.json()["orderId"])

        everything = (await client.get("/v1/portfolio", headers=auth)).json()
        assert sum(p["netQuantity"] for p in everything["positions"]) == 5
        only_tag = (await client.get("/v1/portfolio", params={"tag": tag}, headers=auth)).json()
        assert only_tag["holdings"] == []
        [position] = only_tag["positions"]
        assert (position["symbol"], position["netQuantity"]) == ("INFY", 3)
        assert Decimal(str(position["buyValue"])) == sum(
            (Decimal(str(t["price"])) * t["quantity"] for t in trades), Decimal(0)
        )
        assert (await client.get("/v1/portfolio", params={"tag": "nobody"}, headers=auth)).json()[
            "positions"
        ] == []
        bad = await client.post(
            "/v1/orders", json={**market, "quantity": 1, "tag": "no spaces!"}, headers=auth
        )
        assert_problem(bad, 400)
        assert_problem(await client.get("/v1/orders", params={"tag": "x" * 21}, headers=auth), 400)
    report = await audit.run(
        full_stack.plan.describe(), signer=full_stack.plan.operator_signer("auditor"), settle_seconds=30
    )
    assert report.ok, report.render()
