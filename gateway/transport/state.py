"""What the HTTP layer knows about the request being served (one per request, in a
contextvar so middleware, validators, handlers and error handlers share it)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestState:
    request_id: str = ""
    client_ip: str = ""
    path: str = ""
    method: str = ""
    operation: str = ""
    user_id: str = ""
    # The session of the token or ticket (its `sid`).
    session: str = ""
    # The JSON body parsed with exact decimals (set by the body validator).
    body: Any = None
    # Added to the response whoever writes it (a handler or an error handler).
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)


_current: contextvars.ContextVar[RequestState] = contextvars.ContextVar(
    "gateway_request_state", default=RequestState()
)


def current() -> RequestState:
    return _current.get()


def begin(state: RequestState) -> contextvars.Token[RequestState]:
    return _current.set(state)


def end(token: contextvars.Token[RequestState]) -> None:
    _current.reset(token)
