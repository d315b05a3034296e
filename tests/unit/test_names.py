"""The identifiers every service accepts (svc_runtime.names): one grammar, refusals that name
the field the caller sent."""

from __future__ import annotations

import pytest

from svc_runtime import names
from svc_runtime.errors import InvalidArgument


def _refusal(call, *args: str) -> InvalidArgument:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as caught:
        call(*args)
    return caught.value


def test_a_resource_name_gives_its_variables_and_refuses_any_other_shape() -> None:
    orders = names.pattern("users/{user}/orders/{order}")
    assert orders.parse("users/u-1/orders/ord_01J") == ("u-1", "ord_01J")
    for bad in (
        "",
        "users/u-1",
        "users/u-1/orders/",
        "users/-/orders/o1",
        "users/u 1/orders/o1",
        "x/u/orders/o",
    ):
        error = _refusal(orders.parse, bad, "name")
        assert (error.reason, error.violations[0].field) == ("INVALID_NAME", "name"), bad
    assert orders.format("u-1", "o1") == "users/u-1/orders/o1"


def test_the_every_user_wildcard_is_only_where_a_listing_allows_it() -> None:
    assert names.user_or_every("users/-") is None
    assert names.user_or_every("users/alice") == "alice"
    assert _refusal(names.user_of, "users/-").reason == "INVALID_NAME"
    assert names.user_of("users/alice") == "alice"


def test_ids_request_ids_and_symbols() -> None:
    assert names.resource_id("a" * 64, "order_id") == "a" * 64
    assert _refusal(names.resource_id, "a" * 65, "order_id").violations[0].field == "order_id"
    assert _refusal(names.resource_id, "-x", "order_id").reason == "INVALID_NAME"
    assert names.request_id("k-1") == "k-1"
    assert _refusal(names.request_id, "").reason == "MISSING_REQUEST_ID"
    assert _refusal(names.request_id, "has space").reason == "INVALID_REQUEST_ID"
    assert _refusal(names.request_id, "x" * 129).reason == "INVALID_REQUEST_ID"
    assert names.symbol(" m&m ", "order.symbol") == "M&M"
    assert _refusal(names.symbol, "", "order.symbol").reason == "MISSING_SYMBOL"
    error = _refusal(names.symbol, "INFY;DROP", "order.symbol")
    assert (error.reason, error.violations[0].field) == ("INVALID_SYMBOL", "order.symbol")
    assert _refusal(names.symbol, "A" * 31).reason == "INVALID_SYMBOL"
