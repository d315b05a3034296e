"""Property-based fuzzing of every operation against the served contract (schemathesis):
valid and invalid requests generated from /v1/openapi.json, sent authenticated to a
gateway in front of every real service. No answer may be a server error, and every answer
must have a declared status, content type and (for JSON) schema.

The event-stream operations are fuzzed for status and headers: a 200 must be
`text/event-stream`, anything else a declared problem; their bodies never end, so they
are read no further than the first bytes.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from svc_runtime import admin
from svc_runtime.stack import Stack
from tests.conftest import new_stack
from tests.gateway.conftest import StatusRecorder
from tests.gateway.contract import declared_statuses, operations
from tests.support.infra import SharedInfra, unique_name

pytestmark = pytest.mark.e2e

STREAMS = {"stream_orders", "stream_market_data", "stream_candles", "stream_market_depth"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Small enough that the whole file stays well under two minutes on a busy machine.
FUZZ = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
async def fuzzed(
    infra: SharedInfra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, str]]:
    # The request rate is lifted so that the fuzzer meets the operations, not the limiter
    # (429 would be a declared and therefore passing answer, but tells nothing).
    env = {
        "BROKERMESH_GATEWAY_RATE_PER_SECOND": "100000",
        "BROKERMESH_GATEWAY_RATE_BURST": "100000",
        "BROKERMESH_GATEWAY_AUTH_FAILURE_BURST": "100000",
    }
    stack = await new_stack(infra, tmp_path_factory.mktemp("fuzz"), extra_env=env)
    username, password = unique_name("fz"), "pw-" + unique_name("")
    await admin.create_user(
        stack.plan.target("svc_funds"),
        username,
        password,
        username,
        "1000000.00",
        signer=stack.plan.operator_signer(),
    )
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        session = await client.post("/v1/sessions", json={"username": username, "password": password})
        assert session.status_code == 200, session.text
    yield stack, session.json()["accessToken"]
    with contextlib.suppress(Exception):
        await stack.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[Stack, str]) -> schemathesis.BaseSchema:
    stack, _ = fuzzed
    return schemathesis.openapi.from_url(f"{stack.plan.gateway_url}/v1/openapi.json")


def cases_of(api_schema: schemathesis.BaseSchema, operation_id: str) -> st.SearchStrategy[schemathesis.Case]:
    """Valid and invalid requests of one operation of the served contract."""
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") == operation_id:
            return st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
            )
    raise AssertionError(f"{operation_id} is not in the served contract")


OPERATIONS = sorted({o.operation_id for o in operations()})


@pytest.mark.parametrize("operation_id", [o for o in OPERATIONS if o not in STREAMS])
def test_every_operation_answers_within_its_contract(
    api_schema: schemathesis.BaseSchema,
    fuzzed: tuple[Stack, str],
    status_recorder: StatusRecorder,
    operation_id: str,
) -> None:
    auth = {"Authorization": f"Bearer {fuzzed[1]}"}
    answered: list[int] = []

    @given(case=cases_of(api_schema, operation_id))
    @FUZZ
    def answers_within_contract(case: schemathesis.Case) -> None:
        response = case.call_and_validate(headers=auth, checks=CHECKS, timeout=30)
        sent = response.request
        status_recorder.record(str(sent.method), urllib.parse.urlsplit(str(sent.url)).path, response)
        answered.append(response.status_code)

    answers_within_contract()
    assert answered, "no request was sent"


@pytest.mark.parametrize("operation_id", sorted(STREAMS))
def test_event_streams_answer_with_a_declared_status_and_media_type(
    api_schema: schemathesis.BaseSchema, fuzzed: tuple[Stack, str], operation_id: str
) -> None:
    auth = {"Authorization": f"Bearer {fuzzed[1]}"}
    declared = declared_statuses(operation_id)
    answered: list[int] = []

    @given(case=cases_of(api_schema, operation_id))
    @FUZZ
    def answers_within_contract(case: schemathesis.Case) -> None:
        request = case.as_transport_kwargs(headers=auth)
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                request["method"], request["url"], headers=request["headers"], params=request.get("params")
            ) as response,
        ):
            status = response.status_code
            answered.append(status)
            assert status < 500 or status == 503, status
            assert status in declared, status
            content_type = response.headers.get("content-type", "")
            if status == 200:
                assert content_type.startswith("text/event-stream")
                assert response.headers["cache-control"].startswith("no-cache")
            else:
                assert content_type.startswith("application/problem+json")
                assert response.read()

    answers_within_contract()
    assert answered, "no request was sent"


async def test_a_login_name_no_account_can_have_is_401_not_500(fuzzed: tuple[Stack, str]) -> None:
    """Found by the fuzzer: a NUL byte in the name reached PostgreSQL, which refuses it in
    text, and the answer was 500 INTERNAL."""
    stack, _ = fuzzed
    async with httpx.AsyncClient(base_url=stack.plan.gateway_url, timeout=30) as client:
        for name in ("\u00000$R", "demo\u0000", "x" * 64):
            response = await client.post("/v1/sessions", json={"username": name, "password": "whatever-1"})
            assert response.status_code == 401, response.text
            assert response.json()["reason"] == "INVALID_CREDENTIALS"
