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
        if origin is None or origin in self.origins:
            await self.allowed(scope, receive, send)
        elif scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._refuse_preflight(scope, send)
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
    async def _refuse_preflight(scope: Scope, send: Send) -> None:
        state = RequestState(
            request_id=context.new_request_id(), path=scope.get("path", ""), method="OPTIONS"
        )
        token = begin(state)
        try:
            problem = http_problem(
                403, "CORS_ORIGIN_FORBIDDEN", "this origin may not call the API from a browser"
            )
            body, extra = render(problem)
        finally:
            end(token)
        raw = [
            (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"vary", b"Origin"),
            (b"x-request-id", state.request_id.encode()),
            *((k.lower().encode(), v.encode()) for k, v in extra.items()),
        ]
        await send({"type": "http.response.start", "status": 403, "headers": raw})
        await send({"type": "http.response.body", "body": body})
