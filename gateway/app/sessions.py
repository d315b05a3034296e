"""Login: username + password → a signed access token, with guessing throttled."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import Counter

from gateway.app.ports import CredentialsVerifier
from gateway.domain.limits import LoginGuard
from gateway.domain.tokens import IssuedToken, TokenAuthority
from svc_runtime.errors import ResourceExhausted, Unauthenticated

log = logging.getLogger(__name__)

LOGINS = Counter("gateway_logins_total", "Login attempts by outcome", ["outcome"])

# One message for unknown users and wrong passwords: a login reveals nothing else.
BAD_CREDENTIALS = "invalid username or password"


class Login:
    def __init__(
        self,
        accounts: CredentialsVerifier,
        tokens: TokenAuthority,
        guard: LoginGuard,
        clock: Callable[[], float],
    ) -> None:
        self.accounts = accounts
        self.tokens = tokens
        self.guard = guard
        self.clock = clock

    async def __call__(self, username: str, password: str, client_ip: str) -> IssuedToken:
        address = client_ip or "-"
        now = self.clock()
        wait = self.guard.retry_after(username, address, now)
        if wait > 0:
            LOGINS.labels("throttled").inc()
            raise ResourceExhausted(
                "too many failed logins; try again later",
                reason="LOGIN_THROTTLED",
                retry_after_seconds=wait,
            )
        try:
            user_id = await self.accounts.verify_credentials(username, password)
        except Unauthenticated:
            self.guard.failed(username, address, self.clock())
            LOGINS.labels("rejected").inc()
            log.info("login rejected", extra={"client_ip": client_ip})
            raise Unauthenticated(BAD_CREDENTIALS, reason="INVALID_CREDENTIALS") from None
        self.guard.succeeded(username, address, self.clock())
        LOGINS.labels("accepted").inc()
        log.info("login accepted", extra={"user_id": user_id, "client_ip": client_ip})
        return self.tokens.issue(user_id)
