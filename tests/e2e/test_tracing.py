"""Tracing through every hop: one order placed over REST on a stack that writes its spans to a
file makes one trace, from the gateway to the settlement, with every parent link in place."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from svc_runtime.stack import Stack
from tests.e2e.conftest import exact_json, login, open_account
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

StackFactory = Callable[..., Awaitable[Stack]]


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _service(span: dict[str, Any]) -> str:
    return span["resource"]["attributes"]["service.name"]


def _one(spans: list[dict[str, Any]], service: str, name: str, kind: str) -> dict[str, Any]:
    found = [s for s in spans if _service(s) == service and s["name"] == name and s["kind"] == kind]
    assert found, f"no {kind} span {name!r} from {service}; spans: {_summary(spans)}"
    return found[0]


def _summary(spans: list[dict[str, Any]]) -> str:
    """The spans as a tree (children indented under their parent), for failure messages."""
    ids = {s["context"]["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        children.setdefault(s["parent_id"] if s["parent_id"] in ids else None, []).append(s)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda s: s["start_time"]):
            lines.append(f"{'  ' * depth}{_service(s)}: {s['name']} ({s['kind']})")
            walk(s["context"]["span_id"], depth + 1)

    walk(None, 0)
    return "\n" + "\n".join(lines)


def _named(spans: list[dict[str, Any]], service: str, prefix: str) -> list[dict[str, Any]]:
    return [s for s in spans if _service(s) == service and s["name"].startswith(prefix)]


def _children(
    spans: list[dict[str, Any]], parent: dict[str, Any], service: str, prefix: str
) -> list[dict[str, Any]]:
    """The spans of `service` named `prefix…` whose parent is `parent`."""
    return [s for s in _named(spans, service, prefix) if s["parent_id"] == parent["context"]["span_id"]]


def _child_of(child: dict[str, Any], parent: dict[str, Any]) -> None:
    assert child["parent_id"] == parent["context"]["span_id"], (
        f"{_service(child)}:{child['name']} should be a child of {_service(parent)}:{parent['name']}"
    )


async def test_one_order_is_one_trace_from_the_request_to_the_settlement(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    stack = await make_stack(extra_env={"BROKERMESH_TRACING": f"file:{spans_file}"})
    username, password, _ = await open_account(stack, "100000.00")
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        auth = await login(client, username, password)
        placed = await client.post(
            "/v1/orders",
            json={"symbol": "INFY", "side": "BUY", "type": "MARKET", "quantity": 5},
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["orderId"]
        request_id = placed.headers["x-request-id"]

        async def filled() -> bool:
            order = exact_json(await client.get(f"/v1/orders/{order_id}", headers=auth))
            return order["status"] == "FILLED"

        async def settled() -> bool:
            funds = exact_json(await client.get("/v1/funds", headers=auth))
            return funds["blocked"] == 0

        await eventually(filled)
        await eventually(settled)

    namespace = stack.plan.namespace
    command_subject = f"{namespace}.orders.command.new"

    def whole_trace() -> list[dict[str, Any]] | None:
        spans = _spans(spans_file)
        edge = [s for s in spans if s["attributes"].get("brokermesh.request_id") == request_id]
        edge = [s for s in edge if _service(s) == "gateway"]
        if not edge:
            return None
        trace_id = edge[0]["context"]["trace_id"]
        trace = [s for s in spans if s["context"]["trace_id"] == trace_id]
        # Spans reach the file in batches, each process on its own schedule: wait until every
        # report published was consumed by svc_orders and svc_funds and settled, and every
        # parent named is there too. (A report published again, or redelivered, adds spans.)
        reports = f"process {namespace}.exec.report."
        for report in _named(trace, "svc_exec", "FIX execution report"):
            published = _children(trace, report, "svc_exec", f"publish {namespace}.exec.report.")
            if not published:  # nothing new to tell the broker (a fill seen before)
                continue
            for service in ("svc_orders", "svc_funds"):
                assert [c for p in published for c in _children(trace, p, service, reports)], _summary(trace)
        for consumed in _named(trace, "svc_funds", reports):
            assert _children(trace, consumed, "svc_funds", "settle execution report"), _summary(trace)
        assert _named(trace, "svc_funds", "settle execution report"), _summary(trace)
        ids = {s["context"]["span_id"] for s in trace}
        orphans = [s for s in trace if s["parent_id"] is not None and s["parent_id"] not in ids]
        assert not orphans, f"spans whose parent is not in the trace: {_summary(orphans)}"
        return trace

    trace = await eventually(whole_trace, timeout=30)

    edge = _one(trace, "gateway", "POST place_order", "SpanKind.SERVER")
    assert edge["parent_id"] is None
    assert edge["attributes"]["http.response.status_code"] == 201
    place = _one(trace, "svc_orders", "brokermesh.orders.v1.OrdersService/PlaceOrder", "SpanKind.SERVER")
    _child_of(place, edge)
    blocks = _children(trace, place, "svc_funds", "brokermesh.funds.v1.")
    assert blocks, f"svc_funds served no call of PlaceOrder: {_summary(trace)}"

    enqueued = _one(trace, "svc_orders", f"publish {command_subject}", "SpanKind.PRODUCER")
    _child_of(enqueued, place)
    consumed = _one(trace, "svc_exec", f"process {command_subject}", "SpanKind.CONSUMER")
    _child_of(consumed, enqueued)
    sent = _one(trace, "svc_exec", "FIX send NewOrderSingle", "SpanKind.PRODUCER")
    _child_of(sent, consumed)
    assert sent["attributes"]["brokermesh.order_id"] == order_id

    fills = [s for s in _children(trace, sent, "svc_exec", "FIX execution report TRADE")]
    assert fills, f"no fill continues the NewOrderSingle's span: {_summary(trace)}"
    for fill in fills:
        assert fill["kind"] == "SpanKind.CONSUMER"
        published = _children(trace, fill, "svc_exec", f"publish {namespace}.exec.report.")
        assert published, _summary(trace)
        settling = [c for p in published for c in _children(trace, p, "svc_funds", "process ")]
        applied = [c for p in published for c in _children(trace, p, "svc_orders", "process ")]
        assert settling and applied, _summary(trace)
        settlement = [
            c for s in settling for c in _children(trace, s, "svc_funds", "settle execution report")
        ]
        assert settlement, _summary(trace)
        assert {s["attributes"]["fix.exec_id"] for s in settlement} == {fill["attributes"]["fix.exec_id"]}
        assert any(s["attributes"]["brokermesh.settled"] for s in settlement)

    roots = [s for s in trace if s["parent_id"] is None]
    assert roots == [edge], f"the request is the one root: {_summary(roots)}"
