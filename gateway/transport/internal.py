"""The internal listener: Prometheus metrics and detailed health, for operators only.

It binds to 127.0.0.1 by default (the port is `BROKERMESH_METRICS_PORT`, as for every
service), so what the gateway is connected to, how many streams are open and the state of
each backend channel are not told to the internet; the public port keeps only a bare
`/healthz` for load balancers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.domain.jsonmoney import dumps


def build_internal_app(health: Callable[[], tuple[bool, dict[str, Any]]]) -> Starlette:
    async def healthz(_request: Request) -> Response:
        ok, details = health()
        return Response(dumps(details), status_code=200 if ok else 503, media_type="application/json")

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz)])
