"""The ASGI application: connexion over openapi.yaml, wrapped by the edge middleware."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from connexion import AsyncApp
from connexion.middleware import MiddlewarePosition
from connexion.resolver import Resolver
from connexion.security import BearerSecurityHandler
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.app.limits import EdgeLimits
from gateway.app.sessions import refused
from gateway.app.tickets import StreamTickets
from gateway.domain.jsonmoney import dumps
from gateway.transport.cors import Cors
from gateway.transport.errors import ProblemResponses
from gateway.transport.handlers import Handlers
from gateway.transport.middleware import EdgeMiddleware, PrincipalMiddleware
from gateway.transport.streams import DirectBody
from gateway.transport.tickets import TicketHandlers, ticket_security_handler, token_info
from gateway.transport.validation import VALIDATORS
from gateway.transport.web import WebFiles, load_files
from svc_runtime.tokens import Refused, UserTokens

log = logging.getLogger(__name__)

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"


def _bearer_handler(tokens: UserTokens) -> type[BearerSecurityHandler]:
    """connexion's bearer scheme, checking access tokens with `svc_runtime.tokens` (as every
    gRPC server does)."""

    def verify(token: str) -> dict[str, Any]:
        try:
            return token_info(tokens.verify(token))
        except Refused as error:
            log.info("access token refused", extra={"reason": error.why})
            raise refused() from None  # → 401 problem

    class Bearer(BearerSecurityHandler):
        def _resolve_func(self, security_scheme: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
            return verify

    return Bearer


def served_spec(limits: EdgeLimits) -> dict[str, Any]:
    """openapi.yaml with the limits this process was configured with (its defaults are the
    file's), so that the contract a client reads is the one it is held to."""
    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    for parameter in spec["paths"]["/marketdata/stream"]["get"]["parameters"]:
        if parameter.get("name") == "symbols":  # others may be $refs
            parameter["schema"]["maxItems"] = limits.streams.symbols_per_stream
    return spec


def build_app(
    *,
    handlers: Handlers,
    tokens: UserTokens,
    limits: EdgeLimits,
    clock: Callable[[], float],
    health: Callable[[], tuple[bool, dict[str, Any]]],
    tickets: StreamTickets,
    cors_origins: tuple[str, ...] = (),
) -> ASGIApp:
    app = AsyncApp(
        __name__,
        security_map={"bearer": _bearer_handler(tokens), "apiKey": ticket_security_handler(tickets)},
    )
    ticket_handlers = TicketHandlers(tickets)

    def operation(operation_id: str) -> Callable[..., Any]:
        return getattr(handlers, operation_id, None) or getattr(ticket_handlers, operation_id)

    app.add_middleware(
        PrincipalMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION, limits=limits, clock=clock
    )
    app.add_api(
        served_spec(limits),
        resolver=Resolver(function_resolver=operation),
        pythonic_params=True,
        strict_validation=True,
        validator_map=VALIDATORS,
    )
    for exception_type, handler in ProblemResponses(limits, clock).handlers():
        app.add_error_handler(exception_type, handler)

    async def healthz(_request: Request) -> Response:
        ok, details = health()
        return Response(dumps(details), status_code=200 if ok else 503, media_type="application/json")

    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    # The web trader (gateway/web/) is served beside the API, from the same origin.
    return DirectBody(
        Cors(
            EdgeMiddleware(WebFiles(app, load_files()), max_body_bytes=limits.max_body_bytes),
            origins=cors_origins,
        )
    )
