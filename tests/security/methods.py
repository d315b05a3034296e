"""Every gRPC method the broker serves, read from the generated descriptors in gen/."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

import brokermesh
from svc_runtime.auth import AUDIENCE_BY_PACKAGE


@dataclass(frozen=True)
class Method:
    path: str  # /package.Service/Method
    service: str  # the process that serves it: svc_funds, …
    descriptor: MethodDescriptor

    @property
    def streams(self) -> bool:
        return self.descriptor.server_streaming

    def request(self, **fields: Any) -> Any:
        return message_factory.GetMessageClass(self.descriptor.input_type)(**fields)

    def response_class(self) -> Any:
        return message_factory.GetMessageClass(self.descriptor.output_type)


def served_methods() -> list[Method]:
    """Each method of each service defined under gen/brokermesh (every `_pb2` module)."""
    methods: dict[str, Method] = {}
    for info in pkgutil.walk_packages(brokermesh.__path__, "brokermesh."):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            process = AUDIENCE_BY_PACKAGE[service.file.package]
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                methods[path] = Method(path, process, method)
    return sorted(methods.values(), key=lambda m: m.path)


def missing_from(table: dict[str, Any], methods: list[Method]) -> list[str]:
    return [m.path for m in methods if m.path not in table]
