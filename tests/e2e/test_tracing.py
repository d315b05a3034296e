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
        # Spans reach the file in batches, each process on its own schedule: wait for the
        # settlement, and for every parent named to be there too.
        reports = f"{namespace}.exec.report."
        published = [s for s in trace if s["name"].startswith(f"publish {reports}")]
        for service in ("svc_orders", "svc_funds"):
            consumed = [
                s for s in trace if _service(s) == service and s["name"].startswith(f"process {reports}")
            ]
            assert published and len(consumed) == len(published), _summary(trace)
        settled = [s for s in trace if s["name"] == "settle execution report"]
        assert len(settled) == len(published), _summary(trace)
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
    blocks = [
        s
        for s in trace
        if _service(s) == "svc_funds" and s["kind"] == "SpanKind.SERVER" and s["parent_id"] is not None
    ]
    assert blocks, f"svc_funds served no call of the order; spans: {_summary(trace)}"
    for block in blocks:
        _child_of(block, place)

    enqueued = _one(trace, "svc_orders", f"publish {command_subject}", "SpanKind.PRODUCER")
    _child_of(enqueued, place)
    consumed = _one(trace, "svc_exec", f"process {command_subject}", "SpanKind.CONSUMER")
    _child_of(consumed, enqueued)
    sent = _one(trace, "svc_exec", "FIX send NewOrderSingle", "SpanKind.PRODUCER")
    _child_of(sent, consumed)
    assert sent["attributes"]["brokermesh.order_id"] == order_id

    fill = _one(trace, "svc_exec", "FIX execution report TRADE", "SpanKind.CONSUMER")
    _child_of(fill, sent)
    fill_published = [
        s
        for s in trace
        if _service(s) == "svc_exec"
        and s["kind"] == "SpanKind.PRODUCER"
        and s["parent_id"] == fill["context"]["span_id"]
    ]
    assert len(fill_published) == 1, _summary(trace)
    report_subject = fill_published[0]["name"].removeprefix("publish ")
    assert report_subject.startswith(f"{namespace}.exec.report.")

    settling = [
        s
        for s in trace
        if _service(s) == "svc_funds"
        and s["name"] == f"process {report_subject}"
        and s["parent_id"] == fill_published[0]["context"]["span_id"]
    ]
    assert len(settling) == 1, _summary(trace)
    settlement = [
        s
        for s in trace
        if s["name"] == "settle execution report" and s["parent_id"] == settling[0]["context"]["span_id"]
    ]
    assert len(settlement) == 1, _summary(trace)
    assert settlement[0]["attributes"]["fix.exec_id"] == fill["attributes"]["fix.exec_id"]
    assert settlement[0]["attributes"]["brokermesh.settled"] is True

    applied = [
        s
        for s in trace
        if _service(s) == "svc_orders"
        and s["name"] == f"process {report_subject}"
        and s["parent_id"] == fill_published[0]["context"]["span_id"]
    ]
    assert len(applied) == 1, _summary(trace)
    roots = [s for s in trace if s["parent_id"] is None]
    assert roots == [edge], f"the request is the one root: {_summary(roots)}"
