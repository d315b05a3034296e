"""`POST /v1/stream-tickets` and the `streamTicket` security scheme of the event streams."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any

from connexion.security import ApiKeySecurityHandler
from starlette.responses import Response

from gateway.app.sessions import refused
from gateway.app.tickets import StreamTickets
from gateway.domain.jsonmoney import dumps
from gateway.transport.state import current
from svc_runtime.tokens import Claims


def token_info(claims: Claims) -> dict[str, Any]:
    """What connexion keeps of a checked token or ticket (`PrincipalMiddleware` reads it)."""
    return {"sub": claims.user_id, "sid": claims.session, "jti": claims.token_id, "exp": claims.expires_at}


def ticket_security_handler(tickets: StreamTickets) -> type[ApiKeySecurityHandler]:
    """connexion's apiKey scheme (`?ticket=`), redeeming the ticket: the same token info as a
    bearer token, so everything after authentication treats both alike."""

    async def redeem(ticket: str) -> dict[str, Any]:
        claims = await tickets.redeem(ticket)  # raises Unauthenticated → 401 problem
        return token_info(claims)

    class Ticket(ApiKeySecurityHandler):
        def _resolve_func(
            self, security_scheme: dict[str, Any]
        ) -> Callable[[str], Awaitable[dict[str, Any]]]:
            return redeem

    return Ticket


class TicketHandlers:
    def __init__(self, tickets: StreamTickets) -> None:
        self.tickets = tickets

    async def create_stream_ticket(self) -> Response:
        state = current()
        if not state.user_id:
            raise refused()
        issued = self.tickets.issue(state.user_id, state.session)
        expires_at = datetime.datetime.fromtimestamp(issued.expires_at, tz=datetime.UTC)
        body = {
            "ticket": issued.token,
            "expiresIn": issued.expires_in,
            "expiresAt": expires_at.isoformat().replace("+00:00", "Z"),
        }
        return Response(
            dumps(body), status_code=201, media_type="application/json", headers={"Cache-Control": "no-store"}
        )
