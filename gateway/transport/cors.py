"""CORS for the configured origins, outermost so that every answer a page can get (the
edge's own 411/413/500 included) is readable by it.

An allowed origin is handled by starlette's CORSMiddleware (preflights answered, the
origin echoed, `Vary: Origin`). Any other origin gets no CORS header at all: its
preflight is refused with 403 problem+json, and its other requests are served as they
would be without CORS (the browser then hides the answer from the page), with
`Vary: Origin` so a cache never hands one origin's answer to another.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.domain.cors import ALLOWED_HEADERS, ALLOWED_METHODS, EXPOSED_HEADERS, PREFLIGHT_MAX_AGE_SECONDS
from gateway.domain.problems import PROBLEM_CONTENT_TYPE, http_problem
from gateway.transport.errors import render
from gateway.transport.state import RequestState, begin, end
from svc_runtime import context


class Cors:
    def __init__(self, app: ASGIApp, *, origins: tuple[str, ...]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.allowed = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE_SECONDS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if origin is not None and origin in self.origins and preflight:
            await self.allowed(scope, receive, self._refusals_as_problems(scope, send))
        elif origin is None or origin in self.origins:
            await self.allowed(scope, receive, send)
        elif preflight:
            await _problem(
                scope, send, 403, "CORS_ORIGIN_FORBIDDEN", "this origin may not call the API from a browser"
            )
        else:
            await self.app(scope, receive, self._vary_on_origin(send))

    @staticmethod
    def _vary_on_origin(send: Send) -> Send:
        async def send_varied(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("Vary", "Origin")
            await send(message)

        return send_varied

    @staticmethod
    def _refusals_as_problems(scope: Scope, send: Send) -> Send:
        """An allowed origin's preflight asking for a method or header the API does not take
        is refused by starlette in plain text: say it as a 400 problem, its CORS headers kept."""
        refused: list[Message] = []

        async def send_problem(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] != 200:
                refused.append(message)
            elif refused and message["type"] == "http.response.body":
                kept = [(k, v) for k, v in refused[0]["headers"] if k.lower().startswith(b"access-control-")]
                detail = message.get("body", b"").decode("latin-1") or "preflight refused"
                await _problem(scope, send, 400, "CORS_PREFLIGHT_REFUSED", detail, headers=kept)
            else:
                await send(message)

        return send_problem


async def _problem(
    scope: Scope,
    send: Send,
    status: int,
    reason: str,
    detail: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A problem+json answer from outside the edge middleware (which has not run yet)."""
    state = RequestState(
        request_id=context.new_request_id(), path=scope.get("path", ""), method=scope["method"]
    )
    token = begin(state)
    try:
        body, extra = render(http_problem(status, reason, detail))
    finally:
        end(token)
    raw = [
        *(headers or []),
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"vary", b"Origin"),
        (b"x-request-id", state.request_id.encode()),
        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
