"""Stream tickets: issued to a verified user, redeemed once by an event stream."""

from __future__ import annotations

import logging

from prometheus_client import Counter

from gateway.app.ports import SpentTickets
from gateway.app.sessions import refused
from svc_runtime.errors import ServiceError, Unauthenticated
from svc_runtime.tokens import Claims, Issued, Refused, UserTokens

log = logging.getLogger(__name__)

TICKETS = Counter(
    "gateway_stream_tickets_total", "Stream tickets issued and redeemed, by outcome", ["outcome"]
)


class StreamTickets:
    def __init__(self, authority: UserTokens, spent: SpentTickets) -> None:
        self.authority = authority
        self.spent = spent

    def issue(self, user_id: str, session: str) -> Issued:
        TICKETS.labels("issued").inc()
        return self.authority.issue(user_id, session)

    async def redeem(self, ticket: str) -> Claims:
        """The ticket's user and session, once; a second use, an expired, forged or unknown
        ticket, or one of a revoked session, is 401."""
        try:
            principal = self.authority.verify(ticket)
        except Refused as error:
            TICKETS.labels("expired" if error.why == "expired" else "invalid").inc()
            raise refused() from None
        if not principal.token_id:
            TICKETS.labels("invalid").inc()
            raise refused()
        try:
            first_use = await self.spent.spend(principal.token_id)
        except ServiceError:
            TICKETS.labels("unavailable").inc()
            raise
        if not first_use:
            TICKETS.labels("reused").inc()
            log.warning("a stream ticket was used again", extra={"user_id": principal.user_id})
            raise Unauthenticated(
                "this stream ticket was already used; get a new one", reason="TICKET_ALREADY_USED"
            )
        TICKETS.labels("redeemed").inc()
        return principal
