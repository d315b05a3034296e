"""Stream tickets: issued to a verified user, redeemed once by an event stream."""

from __future__ import annotations

import logging

from prometheus_client import Counter

from gateway.app.ports import SpentTickets
from gateway.domain.tokens import IssuedToken, Principal, TokenAuthority
from svc_runtime.errors import ServiceError, Unauthenticated

log = logging.getLogger(__name__)

TICKETS = Counter(
    "gateway_stream_tickets_total", "Stream tickets issued and redeemed, by outcome", ["outcome"]
)


class StreamTickets:
    def __init__(self, authority: TokenAuthority, spent: SpentTickets) -> None:
        self.authority = authority
        self.spent = spent

    def issue(self, user_id: str) -> IssuedToken:
        TICKETS.labels("issued").inc()
        return self.authority.issue(user_id)

    async def redeem(self, ticket: str) -> Principal:
        """The ticket's user, once; a second use, an expired, forged or unknown ticket is 401."""
        try:
            principal = self.authority.verify(ticket)
        except Unauthenticated as error:
            TICKETS.labels("expired" if error.reason == "TOKEN_EXPIRED" else "invalid").inc()
            raise
        if not principal.token_id:
            TICKETS.labels("invalid").inc()
            raise Unauthenticated("invalid stream ticket", reason="INVALID_TOKEN")
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
