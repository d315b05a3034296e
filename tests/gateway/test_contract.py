"""openapi.yaml against what the edge does: the statuses every operation can return and
the limits it enforces are all in the contract, as numbers."""

from __future__ import annotations

import re

import pytest
import yaml

from gateway.app.limits import MAX_PAGE_SIZE
from gateway.domain.jsonmoney import LIMITS
from gateway.settings import AbuseSettings, OrderLimits, StreamSettings
from gateway.transport.app import SPEC
from tests.gateway.contract import declared_statuses, operations

SPEC_DOC = yaml.safe_load(SPEC.read_text())
DESCRIPTION = SPEC_DOC["info"]["description"]
# What the edge itself answers on any operation: validation and unknown parameters (400), a
# missing token (401; login: wrong credentials), another method on the path (405), a body of
# unknown length (411) or too large (413), and rate limits (429).
EVERY_OPERATION = {400, 401, 405, 411, 413, 429}
WITH_BODY = {
    o.operation_id for o in operations() if "requestBody" in SPEC_DOC["paths"][o.template][o.method.lower()]
}


@pytest.mark.parametrize("operation", sorted({o.operation_id for o in operations()}))
def test_every_operation_declares_what_the_edge_answers(operation: str) -> None:
    statuses = declared_statuses(operation)
    assert statuses >= EVERY_OPERATION, sorted(EVERY_OPERATION - statuses)
    assert (415 in statuses) == (operation in WITH_BODY)
    if operation != "get_limits":  # the only one that calls no service
        assert {503, 504} <= statuses


def test_every_error_is_a_problem() -> None:
    for path, item in SPEC_DOC["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    name = response["$ref"].rsplit("/", 1)[1]
                    content = SPEC_DOC["components"]["responses"][name]["content"]
                    schema = content["application/problem+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, (path, method, code)


def test_the_contract_states_every_limit_as_a_number() -> None:
    text = " ".join(DESCRIPTION.split())
    for phrase in (
        f"nesting at most {LIMITS.max_depth} levels deep",
        f"strings at most {LIMITS.max_string_chars} characters",
        f"arrays at most {LIMITS.max_array_items} items",
        f"objects at most {LIMITS.max_object_members} members",
        f"numbers at most {LIMITS.max_number_chars} characters",
        f"orders per user ({OrderLimits.orders_per_second}/s, bursts of {OrderLimits.order_burst}",
        f"concurrent streams per user ({StreamSettings.streams_per_user},",
        f"symbols per stream ({StreamSettings.symbols_per_stream})",
        f"page size ({MAX_PAGE_SIZE})",
        f"after {AbuseSettings.login_free_failures} failures",
        f"({AbuseSettings.login_address_failures} failures)",
        f"from many addresses ({AbuseSettings.login_user_failures})",
        f"(1/s, bursts of {AbuseSettings.auth_failure_burst}, AUTH_THROTTLED)",
        "requests per user (20/s, bursts of 40)",
    ):
        assert phrase in text, phrase
    stream = SPEC_DOC["paths"]["/marketdata/stream"]["get"]["parameters"]
    (symbols,) = (p for p in stream if p.get("name") == "symbols")
    assert symbols["schema"]["maxItems"] == StreamSettings.symbols_per_stream
    page_sizes = {
        p["schema"]["maximum"]
        for p in SPEC_DOC["components"]["parameters"].values()
        if p["name"] == "pageSize"
    }
    assert page_sizes == {MAX_PAGE_SIZE}


def test_rate_limits_are_429_and_shape_limits_400() -> None:
    """The one rule, as the contract words it."""
    text = " ".join(DESCRIPTION.split())
    assert re.search(r"a limit on \*\*rate or concurrency\*\* is `429`", text)
    assert re.search(r"a limit on the \*\*shape of one request\*\* is `400`", text)
    assert "Exceeding a limit is `429`" not in text


@pytest.mark.parametrize(
    "env",
    [
        {},
        {
            "BROKERMESH_ORDERS_RATE_PER_SECOND": "3.5",
            "BROKERMESH_ORDERS_RATE_BURST": "7",
            "BROKERMESH_ORDERS_MAX_QUANTITY": "500",
            "BROKERMESH_ORDERS_MAX_VALUE": "250000.00",
            "BROKERMESH_ORDERS_PRICE_COLLAR": "0.05",
        },
    ],
)
def test_published_order_limits_are_the_ones_svc_orders_enforces(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    from svc_orders.settings import OrdersSettings  # what svc_orders reads, defaults included

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    enforced = OrdersSettings.from_env().limits
    published = OrderLimits.from_env()
    assert (
        published.orders_per_second,
        published.order_burst,
        published.max_quantity,
        published.max_value,
        published.price_collar,
    ) == (
        enforced.orders_per_second,
        enforced.order_burst,
        enforced.max_order_quantity,
        enforced.max_order_value,
        enforced.price_collar,
    )
