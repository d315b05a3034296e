"""The ASGI application: connexion over openapi.yaml, wrapped by the edge middleware."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from connexion import AsyncApp
from connexion.middleware import MiddlewarePosition
from connexion.resolver import Resolver
from connexion.security import BearerSecurityHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from gateway.domain.jsonmoney import dumps
from gateway.domain.limits import RateLimiter
from gateway.domain.tokens import TokenAuthority
from gateway.transport.errors import ERROR_HANDLERS
from gateway.transport.handlers import Handlers
from gateway.transport.middleware import EdgeMiddleware, PrincipalMiddleware
from gateway.transport.validation import VALIDATORS
from gateway.transport.web import WebFiles, load_files

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"


def _bearer_handler(tokens: TokenAuthority) -> type[BearerSecurityHandler]:
    """connexion's bearer scheme, verifying with our token authority."""

    def verify(token: str) -> dict[str, Any]:
        principal = tokens.verify(token)  # raises Unauthenticated → 401 problem
        return {"sub": principal.user_id, "jti": principal.token_id, "exp": principal.expires_at}

    class Bearer(BearerSecurityHandler):
        def _resolve_func(self, security_scheme: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
            return verify

    return Bearer


def build_app(
    *,
    handlers: Handlers,
    tokens: TokenAuthority,
    limiter: RateLimiter,
    clock: Callable[[], float],
    max_body_bytes: int,
    health: Callable[[], tuple[bool, dict[str, Any]]],
) -> ASGIApp:
    app = AsyncApp(__name__, security_map={"bearer": _bearer_handler(tokens)})
    app.add_middleware(
        PrincipalMiddleware, position=MiddlewarePosition.BEFORE_VALIDATION, limiter=limiter, clock=clock
    )
    app.add_api(
        SPEC,
        resolver=Resolver(function_resolver=lambda operation_id: getattr(handlers, operation_id)),
        pythonic_params=True,
        strict_validation=True,
        validator_map=VALIDATORS,
    )
    for exception_type, handler in ERROR_HANDLERS:
        app.add_error_handler(exception_type, handler)

    async def healthz(_request: Request) -> Response:
        ok, details = health()
        return Response(dumps(details), status_code=200 if ok else 503, media_type="application/json")

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    # The web trader (gateway/web/) is served beside the API, from the same origin.
    return EdgeMiddleware(WebFiles(app, load_files()), max_body_bytes=max_body_bytes)
