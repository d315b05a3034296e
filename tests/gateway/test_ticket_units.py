"""Stream tickets without a process: issue, redeem once, and fail closed when the shared
record of spent tickets cannot be reached (a fake at the `SpentTickets` port)."""

from __future__ import annotations

import pytest

from gateway.app.tickets import StreamTickets
from gateway.domain.tickets import ticket_authority
from svc_runtime.errors import Unauthenticated, Unavailable
from svc_runtime.tokens import KeySet, Refused, RevokedSessions, UserTokens
from tests.gateway.fakes import MemorySpentTickets

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_ticket_is_redeemed_once_for_its_user_until_it_expires() -> None:
    clock, spent = Clock(), MemorySpentTickets()
    tickets = StreamTickets(ticket_authority(SECRET, ttl_seconds=30, clock=clock), spent)
    first, second = tickets.issue("u_asha", "s1"), tickets.issue("u_asha", "s1")
    late = tickets.issue("u_ravi", "s2")
    assert first.expires_in == 30 and first.token != second.token
    assert (await tickets.redeem(first.token)).user_id == "u_asha"
    with pytest.raises(Unauthenticated) as reused:
        await tickets.redeem(first.token)
    assert reused.value.reason == "TICKET_ALREADY_USED"
    assert (await tickets.redeem(second.token)).user_id == "u_asha"
    clock.now += 30 + 3  # past the lifetime and the 2 s leeway
    with pytest.raises(Unauthenticated) as expired:
        await tickets.redeem(late.token)
    assert (expired.value.reason, expired.value.message) == ("UNAUTHENTICATED", "authentication required")
    assert len(spent.spent) == 2  # an expired ticket is refused before anything is spent


async def test_an_unreachable_record_refuses_tickets_and_spends_nothing() -> None:
    spent = MemorySpentTickets()
    tickets = StreamTickets(ticket_authority(SECRET, ttl_seconds=30, clock=Clock()), spent)
    issued = tickets.issue("u_asha", "s1")
    spent.reachable = False
    with pytest.raises(Unavailable):
        await tickets.redeem(issued.token)
    spent.reachable = True
    assert (await tickets.redeem(issued.token)).user_id == "u_asha"


async def test_tickets_and_access_tokens_never_pass_for_each_other() -> None:
    clock = Clock()
    access = UserTokens(KeySet.single(SECRET), ttl_seconds=900, clock=clock)
    tickets = StreamTickets(ticket_authority(SECRET, ttl_seconds=30, clock=clock), MemorySpentTickets())
    with pytest.raises(Refused):
        access.verify(tickets.issue("u_asha", "s1").token)
    with pytest.raises(Unauthenticated):
        await tickets.redeem(access.issue("u_asha", "s1").token)
    for seconds in (0, 301):
        with pytest.raises(ValueError, match="stream ticket lives"):
            ticket_authority(SECRET, ttl_seconds=seconds, clock=clock)


async def test_a_ticket_of_a_revoked_session_is_refused() -> None:
    clock, revoked = Clock(), RevokedSessions(ready=True)
    tickets = StreamTickets(
        ticket_authority(SECRET, ttl_seconds=30, clock=clock, revoked=revoked), MemorySpentTickets()
    )
    kept, lost = tickets.issue("u_asha", "s-kept"), tickets.issue("u_asha", "s-lost")
    revoked.add("s-lost", clock.now + 3600)
    assert (await tickets.redeem(kept.token)).session == "s-kept"
    with pytest.raises(Unauthenticated) as refused:
        await tickets.redeem(lost.token)
    assert (refused.value.reason, refused.value.message) == ("UNAUTHENTICATED", "authentication required")
