"""Hostile input at the edge: whatever the body, header, query or path, the answer is a
declared 4xx problem (or a success, or 503 because no service stands behind `local_edge`),
never a 500. Bodies are the shapes that break naive JSON decoders: deep nesting, huge
numbers, NaN/Infinity, duplicate keys, lone surrogates, other encodings, random bytes."""

from __future__ import annotations

import json
import string
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.domain.jsonmoney import LIMITS, JsonLimitExceeded, MalformedJson, loads
from tests.gateway.conftest import MAX_BODY_BYTES, Edge, LocalEdge
from tests.gateway.contract import declared_statuses
from tests.gateway.test_http_edge import PROBLEM, assert_problem

BODY_OPERATIONS = {
    "create_session": "/v1/sessions",
    "refresh_session": "/v1/sessions:refresh",
    "place_order": "/v1/orders",
    "modify_order": "/v1/orders/ord_1:modify",
    "create_watchlist": "/v1/watchlists",
    "add_watchlist_symbols": "/v1/watchlists/wl_1/symbol:add",
}
HOSTILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --- strategies ----------------------------------------------------------------------------
def nested(depth: int, opener: str) -> str:
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


too_deep = st.builds(nested, st.integers(LIMITS.max_depth + 1, 8000), st.sampled_from("[{"))
huge_number = st.builds(
    lambda digits, kind: {"int": "", "frac": "0.", "neg": "-"}[kind] + "9" * digits,
    st.integers(LIMITS.max_number_chars + 1, 100_000),
    st.sampled_from(["int", "frac", "neg"]),
) | st.just("1" + "0" * 400 + "e-400")
# Short, but no price: refused by the price check rather than the decoder.
extreme_exponent = st.sampled_from(["1e999999999", "-1E+99999", "1e-999999999", "0e999999999"])
not_a_number = st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf"])
lone_surrogate = st.integers(0xD800, 0xDFFF).map(lambda code: f'"\\u{code:04x}"')


def in_order(value: str) -> bytes:
    """A hostile value placed where an order field goes."""
    return ('{"symbol":"INFY","side":"BUY","type":"LIMIT","quantity":1,"limitPrice":' + value + "}").encode()


duplicate_keys = st.sampled_from(["symbol", "quantity", "side"]).map(
    lambda key: b'{"symbol":"INFY","side":"BUY","type":"MARKET","quantity":1,"' + key.encode() + b'":"again"}'
)
long_string = st.integers(LIMITS.max_string_chars + 1, 15_000).map(lambda n: json.dumps("x" * n).encode())
long_array = st.integers(LIMITS.max_array_items + 1, 5000).map(
    lambda n: ("[" + "0," * (n - 1) + "0]").encode()
)
other_encoding = st.sampled_from(["utf-16", "utf-16-be", "utf-32", "latin-1", "utf-8-sig"]).map(
    '{"username":"é-user","password":"pässword"}'.encode
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.decimals(allow_nan=False, places=3),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
undecodable = st.one_of(
    too_deep.map(str.encode),
    huge_number.map(str.encode),
    huge_number.map(in_order),
    not_a_number.map(in_order),
    lone_surrogate.map(str.encode),
    lone_surrogate.map(lambda s: ('{"username":' + s + ',"password":"p"}').encode()),
    duplicate_keys,
    long_string,
    long_array,
    other_encoding,
)
always_invalid = undecodable | extreme_exponent.map(in_order)
anything = st.one_of(
    always_invalid,
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v, default=str).encode()),
)


def assert_declared_problem(operation: str, response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text
    assert response.status_code in declared_statuses(operation), (operation, response.status_code)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith(PROBLEM)
        assert "Traceback" not in response.text


# --- the decoder alone ---------------------------------------------------------------------
@given(body=undecodable)
@settings(max_examples=200, deadline=None)
def test_the_decoder_refuses_every_hostile_shape_with_its_own_error(body: bytes) -> None:
    with pytest.raises(MalformedJson):
        loads(body)


@given(value=json_values)
@settings(max_examples=200, deadline=None)
def test_the_decoder_takes_ordinary_json_within_the_limits(value: object) -> None:
    text = json.dumps(value, default=str)
    try:
        loads(text.encode())
    except JsonLimitExceeded as exc:
        # Only a true excess is refused: this strategy makes no deep or long values, but
        # hypothesis may make a lone surrogate in text() or duplicate dict keys never.
        assert "surrogate" in str(exc), exc


# --- through the HTTP application ----------------------------------------------------------
@given(operation=st.sampled_from(sorted(BODY_OPERATIONS)), body=always_invalid)
@HOSTILE
async def test_hostile_bodies_are_400_problems(local_edge: LocalEdge, operation: str, body: bytes) -> None:
    response = await local_edge.client.post(
        BODY_OPERATIONS[operation],
        content=body,
        headers={**local_edge.auth(), "Content-Type": "application/json"},
    )
    if len(body) > MAX_BODY_BYTES:
        assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
        return
    assert_problem(response, 400)


@given(operation=st.sampled_from(sorted(BODY_OPERATIONS)), body=anything, authenticated=st.booleans())
@HOSTILE
async def test_any_body_ends_in_a_declared_status(
    local_edge: LocalEdge, operation: str, body: bytes, authenticated: bool
) -> None:
    headers = {"Content-Type": "application/json", **(local_edge.auth() if authenticated else {})}
    response = await local_edge.client.post(BODY_OPERATIONS[operation], content=body, headers=headers)
    assert_declared_problem(operation, response)


latin1_header = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300)


ORDER_BODY = b'{"symbol":"INFY","side":"BUY","type":"MARKET","quantity":1}'
HEADER_TARGETS = [
    ("place_order", "POST", "/v1/orders", ORDER_BODY),
    ("create_session", "POST", "/v1/sessions", b'{"username":"asha","password":"pw"}'),
    ("list_orders", "GET", "/v1/orders", b""),
    ("stream_orders", "GET", "/v1/orders/stream", b""),
]


@given(
    target=st.sampled_from(HEADER_TARGETS),
    name=st.sampled_from(
        ["Idempotency-Key", "X-Request-Id", "Content-Type", "Accept", "Authorization", "Last-Event-ID"]
    ),
    value=latin1_header,
)
# connexion decodes Content-Type as UTF-8 even where no body is read.
@example(target=HEADER_TARGETS[2], name="Content-Type", value="application/json\x80")
@HOSTILE
async def test_any_header_value_ends_in_a_declared_status(
    local_edge: LocalEdge, target: tuple[str, str, str, bytes], name: str, value: str
) -> None:
    operation, method, path, body = target
    headers = {**local_edge.auth(), "Content-Type": "application/json"}
    headers[name] = value
    raw_headers = {k.encode(): v.encode("latin-1") for k, v in headers.items()}
    async with local_edge.client.stream(method, path, content=body, headers=raw_headers) as response:
        # No service stands behind local_edge, so no stream opens; never wait on one anyway.
        assert not response.headers.get("content-type", "").startswith("text/event-stream")
        await response.aread()
    assert_declared_problem(operation, response)


query_text = st.text(alphabet=string.printable + "é€\u2028\x00", max_size=200)


@given(
    operation_path=st.sampled_from(
        [
            ("list_orders", "/v1/orders"),
            ("list_trades", "/v1/trades"),
            ("get_quotes", "/v1/quotes"),
            ("search_instruments", "/v1/instruments:search"),
            ("list_ledger_entries", "/v1/funds/ledger"),
            ("get_limits", "/v1/limits"),
            ("stream_market_data", "/v1/marketdata/stream"),
            ("stream_orders", "/v1/orders/stream"),
        ]
    ),
    params=st.lists(
        st.tuples(
            st.sampled_from(
                ["pageSize", "pageToken", "orderId", "symbols", "q", "status", "watchlistId", "lastEventId"]
            )
            | query_text,
            query_text | st.integers(1, 6000).map(lambda n: "9" * n),
        ),
        max_size=4,
    ),
)
@HOSTILE
async def test_any_query_ends_in_a_declared_status(
    local_edge: LocalEdge, operation_path: tuple[str, str], params: list[tuple[str, str]]
) -> None:
    operation, path = operation_path
    async with local_edge.client.stream("GET", path, params=params, headers=local_edge.auth()) as response:
        assert not response.headers.get("content-type", "").startswith("text/event-stream")
        await response.aread()
    assert_declared_problem(operation, response)


@given(segment=st.text(min_size=1, max_size=300), suffix=st.sampled_from(["", ":cancel"]))
@example(segment="/", suffix="")  # `/v1/orders//`: the router's answer was a 307 to `/v1/orders`
@HOSTILE
async def test_any_path_id_ends_in_a_declared_status(
    local_edge: LocalEdge, segment: str, suffix: str
) -> None:
    operation = "cancel_order" if suffix else "get_order"
    method = "POST" if suffix else "GET"
    url = "/v1/orders/" + urllib.parse.quote(segment, safe="") + suffix
    response = await local_edge.client.request(method, url, headers=local_edge.auth())
    if response.status_code == 404 and response.json()["reason"] == "NOT_FOUND":
        return  # not this operation's path at all (an encoded "/" splits the segment)
    assert_declared_problem(operation, response)


# --- the reported cases, against the real process -----------------------------------------
@pytest.mark.e2e
async def test_deeply_nested_bodies_are_400_not_500(edge: Edge) -> None:
    async with httpx.AsyncClient(base_url=edge.url, timeout=30) as client:
        deep = await client.post(
            "/v1/orders",
            content=b"[" * 8000 + b"]" * 8000,
            headers={**edge.auth(), "Content-Type": "application/json"},
        )
        assert_problem(deep, 400, "JSON_LIMIT_EXCEEDED")
        anonymous = await client.post(
            "/v1/sessions", content=b"[" * 1000 + b"]" * 1000, headers={"Content-Type": "application/json"}
        )
        assert_problem(anonymous, 400, "JSON_LIMIT_EXCEEDED")
        digits = await client.post(
            "/v1/orders",
            content=in_order("9" * 10_000),
            headers={**edge.auth(), "Content-Type": "application/json"},
        )
        assert_problem(digits, 400, "JSON_LIMIT_EXCEEDED")
