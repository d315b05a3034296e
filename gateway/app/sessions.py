"""Sessions: login (username + password → an access token and a refresh token), refresh
with rotation and reuse detection, and logout. Guessing passwords is throttled."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from gateway.app.ports import CredentialsVerifier, SessionRecords
from gateway.domain.limits import LoginGuard
from gateway.domain.sessions import Refresh, SessionRecord
from svc_runtime.errors import ResourceExhausted, Unauthenticated
from svc_runtime.tokens import REFUSED_MESSAGE, Issued, Refused, UserTokens

log = logging.getLogger(__name__)

LOGINS = Counter("gateway_logins_total", "Login attempts by outcome", ["outcome"])
REFRESHES = Counter("gateway_session_refreshes_total", "Refresh attempts by outcome", ["outcome"])
LOGOUTS = Counter("gateway_logouts_total", "Sessions ended by logout")

# One message for unknown users and wrong passwords: a login reveals nothing else.
BAD_CREDENTIALS = "invalid username or password"


def refused() -> Unauthenticated:
    """The one answer to a token that proves nothing, whatever is wrong with it."""
    return Unauthenticated(REFUSED_MESSAGE, reason="UNAUTHENTICATED")


@dataclass(frozen=True)
class TokenPair:
    access: Issued
    refresh: Issued


class Sessions:
    def __init__(
        self,
        accounts: CredentialsVerifier,
        access: UserTokens,
        refresh: UserTokens,
        records: SessionRecords,
        *,
        guard: LoginGuard,
        clock: Callable[[], float],
        session_seconds: int,
    ) -> None:
        self.accounts = accounts
        self.access = access
        self.refresh_tokens = refresh
        self.records = records
        self.guard = guard
        self.clock = clock
        self.session_seconds = session_seconds

    async def login(self, username: str, password: str, client_ip: str) -> TokenPair:
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
        session = secrets.token_hex(16)
        record = SessionRecord(user_id, 0, int(self.clock()) + self.session_seconds)
        await self.records.begin(session, record)
        LOGINS.labels("accepted").inc()
        log.info("login accepted", extra={"user_id": user_id, "client_ip": client_ip, "session": session})
        return self._pair(session, record)

    def _pair(self, session: str, record: SessionRecord) -> TokenPair:
        access = self.access.issue(record.user_id, session, not_after=record.ends_at)
        refresh = self.refresh_tokens.issue(
            record.user_id, session, not_after=record.ends_at, generation=record.generation
        )
        return TokenPair(access, refresh)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """A new pair for a refresh token, which is then spent. A spent one presented again
        ends its session: whoever holds a copy is locked out along with the user."""
        try:
            claims = self.refresh_tokens.verify(refresh_token)
        except Refused as error:
            REFRESHES.labels("refused").inc()
            log.info("refresh refused", extra={"reason": error.why})
            raise refused() from None
        held = await self.records.get(claims.session)
        if held is None:
            REFRESHES.labels("unknown").inc()
            raise refused()
        record, revision = held
        verdict = record.judge(claims.user_id, claims.generation)
        if verdict is Refresh.ROTATE:
            rotated = record.rotated()
            if await self.records.replace(claims.session, rotated, revision):
                REFRESHES.labels("rotated").inc()
                return self._pair(claims.session, rotated)
            # Another request spent the same token first: the token was used twice.
            verdict = Refresh.REUSED
        if verdict is Refresh.REUSED:
            REFRESHES.labels("reused").inc()
            log.warning(
                "a spent refresh token was presented again; the session is revoked",
                extra={"user_id": claims.user_id, "session": claims.session},
            )
            await self.records.revoke(claims.session, record.ends_at)
        else:
            REFRESHES.labels("foreign").inc()
        raise refused()

    async def logout(self, session: str, user_id: str) -> None:
        held = await self.records.get(session)
        ends_at = held[0].ends_at if held is not None else int(self.clock()) + self.session_seconds
        await self.records.revoke(session, ends_at)
        LOGOUTS.inc()
        log.info("logout", extra={"user_id": user_id, "session": session})
