"""The error catalogue (svc_runtime/reasons.py) is the one list of `reason` values.

Read from the source, not from a run: every place that gives a client a reason (the
`svc_runtime.errors` exceptions, the REST edge's problem helpers, the SSE `error` event, the
state machine's refusals) must name a catalogued reason, with the status the catalogue gives
it; a reason passed on from a variable is allowed only at the pass-through sites listed
below. The `Reason` enum of gateway/openapi.yaml must be what `brokermesh gen` makes of the
catalogue.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from svc_runtime import errors, reasons

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (
    "svc_orders",
    "svc_funds",
    "svc_marketdata",
    "svc_exec",
    "gateway",
    "exchange_sim",
    "svc_runtime",
)


@dataclass(frozen=True)
class Sink:
    """A callable that hands a reason to a client: where its reason and status arguments are."""

    reason_index: int | None
    status_index: int | None = None
    code: grpc.StatusCode | None = None  # the gRPC status it always raises with
    http: int | None = None  # the HTTP status it always answers with


def _error_classes() -> dict[str, type[errors.ServiceError]]:
    found: dict[str, type[errors.ServiceError]] = {"ServiceError": errors.ServiceError}
    pending = [errors.ServiceError]
    while pending:
        for sub in pending.pop().__subclasses__():
            found[sub.__name__] = sub
            pending.append(sub)
    return found


ERROR_CLASSES = _error_classes()

# Sinks by name; a name in ONLY_IN is a sink only under that path (a private helper, or a
# name another package uses for something else: exchange_sim's InvalidRequest is a FIX reject).
SINKS: dict[str, Sink] = {
    **{name: Sink(reason_index=None, code=cls.code) for name, cls in ERROR_CLASSES.items()},
    "http_problem": Sink(reason_index=1, status_index=0),
    "InvalidRequest": Sink(reason_index=2, http=400),
    "_require": Sink(reason_index=None, code=grpc.StatusCode.FAILED_PRECONDITION),
    "_tell": Sink(reason_index=1),
    "_problem": Sink(reason_index=2, status_index=1),
    "_problem@cors": Sink(reason_index=3, status_index=2),
}
ONLY_IN = {
    "InvalidRequest": "gateway/",
    "_require": "svc_orders/domain/state_machine.py",
    "_tell": "gateway/transport/streams.py",
    "_problem": "gateway/transport/middleware.py",
    "_problem@cors": "gateway/transport/cors.py",
}

# Where a reason comes from a variable, and why that is not a new reason.
PASS_THROUGH = {
    ("svc_runtime/errors.py", "_service_error"): "a downstream service's reason, passed upstream intact",
    ("svc_orders/domain/state_machine.py", "_require"): "its callers name the reason (checked above)",
    ("gateway/transport/errors.py", "on_problem_exception"): "a problem's own reason, or _REASON_OF_STATUS",
    ("gateway/transport/errors.py", "on_http_exception"): "_REASON_OF_STATUS (checked below)",
    ("gateway/transport/middleware.py", "_problem"): "its callers name the reason (checked above)",
    ("gateway/transport/cors.py", "_problem"): "its callers name the reason (checked above)",
}


@dataclass(frozen=True)
class Given:
    path: str
    line: int
    function: str
    sink: str
    reason: str | None  # None: not a constant
    http: int | None  # the HTTP status given with it, when constant


def _sink_name(node: ast.Call, path: str) -> str | None:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name is None:
        return None
    if name == "_problem" and path == ONLY_IN["_problem@cors"]:
        return "_problem@cors"
    if name not in SINKS or not path.startswith(ONLY_IN.get(name, "")):
        return None
    return name


def _argument(node: ast.Call, index: int | None, keyword: str) -> ast.expr | None:
    for kw in node.keywords:
        if kw.arg == keyword:
            return kw.value
    if index is not None and len(node.args) > index:
        return node.args[index]
    return None


def _given_reasons(path: Path) -> Iterator[Given]:
    return _given_reasons_in(path.read_text(), path.relative_to(REPO).as_posix())


def _given_reasons_in(text: str, relative: str) -> Iterator[Given]:
    tree = ast.parse(text, filename=relative)
    functions: list[tuple[int, int, str]] = [
        (n.lineno, n.end_lineno or n.lineno, n.name)
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    ]

    def enclosing(line: int) -> str:
        inside = [(start, name) for start, end, name in functions if start <= line <= end]
        return max(inside)[1] if inside else "<module>"

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _sink_name(node, relative)
        if name is None:
            continue
        sink = SINKS[name]
        value = _argument(node, sink.reason_index, "reason")
        if value is None:
            if name in ERROR_CLASSES:  # the class's default reason
                yield Given(
                    relative,
                    node.lineno,
                    enclosing(node.lineno),
                    name,
                    ERROR_CLASSES[name].default_reason,
                    None,
                )
            continue
        status = _argument(node, sink.status_index, "status") if sink.status_index is not None else None
        http = status.value if isinstance(status, ast.Constant) and isinstance(status.value, int) else None
        reason = value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
        yield Given(relative, node.lineno, enclosing(node.lineno), name, reason, http)


def _all_given() -> list[Given]:
    return [
        given
        for root in SOURCE_ROOTS
        for path in sorted((REPO / root).rglob("*.py"))
        for given in _given_reasons(path)
    ]


def _compared_reasons() -> Iterator[tuple[str, int, str]]:
    """`x.reason == "…"` / `!=` / `in {…}` comparisons: the words code reacts to."""
    for root in SOURCE_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Compare):
                    continue
                sides = [node.left, *node.comparators]
                if not any(isinstance(s, ast.Attribute) and s.attr == "reason" for s in sides):
                    continue
                for side in sides:
                    if isinstance(side, ast.Constant) and isinstance(side.value, str):
                        yield path.relative_to(REPO).as_posix(), node.lineno, side.value


def _expected_http(given: Given) -> int | None:
    sink = SINKS[given.sink]
    if given.http is not None:
        return given.http
    if sink.http is not None:
        return sink.http
    if sink.code is not None:
        return reasons.HTTP_STATUS_OF_CODE[sink.code]
    return None


def test_every_reason_given_is_in_the_catalogue_with_its_status() -> None:
    given = _all_given()
    assert len(given) > 150, "the scan finds the places that raise errors"
    problems = []
    for g in given:
        where = f"{g.path}:{g.line} ({g.function})"
        if g.reason is None:
            if (g.path, g.function) not in PASS_THROUGH:
                problems.append(f"{where}: a reason from a variable; name a catalogued reason")
            continue
        entry = reasons.CATALOGUE.get(g.reason)
        if entry is None:
            hint = f" (merged into {reasons.MERGED[g.reason]})" if g.reason in reasons.MERGED else ""
            problems.append(f"{where}: {g.reason} is not in svc_runtime/reasons.py{hint}")
            continue
        code = SINKS[g.sink].code
        if code is not None and entry.code != code:
            problems.append(f"{where}: {g.reason} is raised as {code.name}, catalogued as {entry.code}")
        http = _expected_http(g)
        if http is not None and entry.http != http:
            problems.append(f"{where}: {g.reason} answers HTTP {http}, catalogued as {entry.http}")
    assert not problems, "\n".join(problems)


def test_the_reasons_code_reacts_to_are_catalogued() -> None:
    unknown = [
        f"{p}:{line}: {word}" for p, line, word in _compared_reasons() if word not in reasons.CATALOGUE
    ]
    assert not unknown, unknown


def test_the_rest_edge_reasons_are_catalogued_with_their_status() -> None:
    from gateway.domain.problems import _TOLD_REASONS, HTTP_STATUS
    from gateway.transport.errors import _REASON_OF_STATUS

    assert HTTP_STATUS is reasons.HTTP_STATUS_OF_CODE
    for status, reason in _REASON_OF_STATUS.items():
        assert reasons.of(reason).http == status, reason
    assert reasons.CATALOGUE.keys() >= _TOLD_REASONS
    # A backend status with no ErrorInfo reaches the client as the status's own name.
    for code in grpc.StatusCode:
        if code is not grpc.StatusCode.OK:
            assert reasons.of(code.name).code is code


def test_merged_reasons_are_gone_for_good() -> None:
    assert not set(reasons.MERGED) & reasons.CATALOGUE.keys()
    assert set(reasons.MERGED.values()) <= reasons.CATALOGUE.keys()


def test_every_catalogued_reason_has_a_sentence_and_statuses() -> None:
    for entry in reasons.CATALOGUE.values():
        assert entry.name.isupper() and entry.meaning.endswith("."), entry
        assert 400 <= entry.http <= 599, entry
        if entry.code is not None:
            assert entry.http == reasons.HTTP_STATUS_OF_CODE[entry.code], entry


def test_the_openapi_reason_enum_is_generated_from_the_catalogue() -> None:
    spec = (REPO / "gateway" / "openapi.yaml").read_text()
    assert reasons.with_openapi_schema(spec) == spec, (
        "gateway/openapi.yaml's Reason schema drifted from svc_runtime/reasons.py: run `brokermesh gen`"
    )


def test_the_scan_sees_through_the_sinks() -> None:
    """The scan itself: each kind of sink is read at the right argument."""
    probe = (
        "from svc_runtime.errors import InvalidArgument, NotFound\n"
        "def f(r):\n"
        "    InvalidArgument('x', reason='NO_SUCH_REASON', field='a')\n"
        "    NotFound('y')\n"
        "    http_problem(418, 'TEAPOT', 'short and stout')\n"
        "    InvalidArgument('z', reason=r)\n"
    )
    found = {(g.sink, g.reason, g.http) for g in _given_reasons_in(probe, "svc_x/app/probe.py")}
    assert found == {
        ("InvalidArgument", "NO_SUCH_REASON", None),
        ("NotFound", "NOT_FOUND", None),
        ("http_problem", "TEAPOT", 418),
        ("InvalidArgument", None, None),
    }
