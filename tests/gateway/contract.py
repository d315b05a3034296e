"""The contract as tests read it: gateway/openapi.yaml's operations and the statuses each
declares, and which operation a request (method + path) is."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import yaml

from gateway.transport.app import SPEC

API_PREFIX = "/v1"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    template: str
    pattern: re.Pattern[str]
    statuses: frozenset[int]

    @property
    def literal_length(self) -> int:
        return len(re.sub(r"\{[^}]+\}", "", self.template))


@functools.cache
def operations() -> tuple[Operation, ...]:
    spec = yaml.safe_load(SPEC.read_text())
    found = []
    for template, item in spec["paths"].items():
        # A path parameter is one segment, as in the router.
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(API_PREFIX + template)) + "$")
        for method in METHODS:
            if method in item:
                op = item[method]
                statuses = frozenset(int(code) for code in op["responses"] if code.isdigit())
                found.append(Operation(op["operationId"], method.upper(), template, pattern, statuses))
    # The most literal template first: /orders/stream before /orders/{orderId}.
    return tuple(sorted(found, key=lambda o: -o.literal_length))


def declared_statuses(operation_id: str) -> frozenset[int]:
    for operation in operations():
        if operation.operation_id == operation_id:
            return operation.statuses
    raise KeyError(operation_id)


def operations_at(path: str) -> list[Operation]:
    """The operations of the first (most literal) template the path matches."""
    matching = [o for o in operations() if o.pattern.match(path)]
    if not matching:
        return []
    template = matching[0].template
    return [o for o in matching if o.template == template]


def operation_of(method: str, path: str) -> Operation | None:
    for operation in operations_at(path):
        if operation.method == method.upper():
            return operation
    return None
