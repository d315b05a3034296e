"""A backend's field violation reaches a REST client under the name the client sent."""

from __future__ import annotations

import grpc
import pytest

from gateway.domain.problems import problem_from_details
from gateway.transport.mapping import rest_details, rest_field
from svc_runtime.errors import ErrorDetails, FieldViolation


@pytest.mark.parametrize(
    ("proto_field", "sent_as"),
    [
        ("order.limit_price", "limitPrice"),
        ("order.stop_price", "stopPrice"),
        ("order.symbol", "symbol"),
        ("order.time_in_force", "timeInForce"),
        ("quantity", "quantity"),
        ("limit_price", "limitPrice"),
        ("request_id", "Idempotency-Key"),
        ("watchlist.display_name", "name"),
        ("watchlist.symbols", "symbols"),
        ("page_token", "pageToken"),
        ("requests[2].order_id", "requests[2].orderId"),
    ],
)
def test_proto_fields_become_the_names_rest_clients_send(proto_field: str, sent_as: str) -> None:
    assert rest_field(proto_field) == sent_as


def test_a_backend_problem_names_the_json_field() -> None:
    details = ErrorDetails(
        code=grpc.StatusCode.INVALID_ARGUMENT,
        message="order.limit_price must be a multiple of the tick size 0.05",
        reason="PRICE_NOT_ON_TICK",
        violations=[FieldViolation("order.limit_price", "must be a multiple of the tick size 0.05")],
    )
    problem = problem_from_details(rest_details(details))
    assert problem.body(request_id="r", instance="/v1/orders")["fieldViolations"] == [
        {"field": "limitPrice", "description": "must be a multiple of the tick size 0.05"}
    ]
    assert details.violations[0].field == "order.limit_price"  # the backend's details are not changed
