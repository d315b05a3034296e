"""svc_exec against a FIX acceptor it shares no code with (`acceptor.py`, on simplefix), in
the dialects venues speak: orders fill, and whatever svc_exec cannot take is never silent —
the order is flagged as needing attention, the incident counted and stored."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest

from brokermesh.exec.v1 import exec_pb2
from brokermesh.exec.v1 import execution_report_pb2 as er
from svc_exec.adapters import venue
from svc_exec.settings import FORGOTTEN_AFTER
from svc_runtime.stack import Stack
from tests.exec.support import Oms, eventually_async, exec_stub, session_status
from tests.venue.acceptor import VENUES, Acceptor, Venue

pytestmark = pytest.mark.slow

ATTENTION = er.EXEC_TYPE_NEEDS_ATTENTION


async def wait_for(probe, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)
    return value


async def incidents(stack: Stack) -> exec_pb2.ListVenueIncidentsResponse:
    return await exec_stub(stack).ListVenueIncidents(exec_pb2.ListVenueIncidentsRequest(), timeout=5)


def incident_metric(stack: Stack, kind: str) -> float:
    port = stack.plan.ports["svc_exec"]["metrics"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("exec_venue_incidents_total{") and f'kind="{kind}"' in line
    )


@pytest.mark.parametrize(
    ("venue", "profile"),
    [
        (VENUES["fix42"], "fix42"),
        (VENUES["fix44"], "fix44"),
        (VENUES["fix44-common"], "fix44-tolerant"),
    ],
    ids=["fix42", "fix44-strict", "fix44-150=1/2-no-New-custom-tags-ExecIDs-per-order"],
)
async def test_orders_fill_through_svc_exec_in_each_dialect(
    start_venue, exec_against, venue: Venue, profile: str
) -> None:  # type: ignore[no-untyped-def]
    acceptor: Acceptor = start_venue(venue)
    stack, oms = await exec_against(acceptor, profile)
    orders = [await oms.new_order(quantity=10) for _ in range(3)]
    for order_id in orders:
        await eventually_async(lambda o=order_id: _filled(oms, o), equals=10)
    for order_id in orders:
        fills = oms.of(order_id, er.EXEC_TYPE_TRADE)
        assert fills[-1].ord_status == er.ORD_STATUS_FILLED
        assert fills[-1].cumulative_quantity == 10
        assert all(f.last_price.value == "1500.05" for f in fills)
        if venue.two_fills:
            assert [f.ord_status for f in fills] == [er.ORD_STATUS_PARTIALLY_FILLED, er.ORD_STATUS_FILLED]
        assert not oms.of(order_id, ATTENTION)
    # The session carried on cleanly: nothing refused either way.
    assert not acceptor.received.of_type("3")
    assert (await session_status(stack)).venue_incidents == 0
    # The status path speaks the venue's version: an answer, not a refusal.
    answer = await exec_stub(stack).GetExchangeOrderStatus(
        exec_pb2.GetExchangeOrderStatusRequest(order_id=orders[0], timeout_ms=5000), timeout=10
    )
    assert answer.ord_status == er.ORD_STATUS_FILLED and answer.cumulative_quantity == 10
    (request,) = acceptor.received.of_type("H")
    assert request.get(11) == orders[0].encode() and request.get(55) == b"INFY" and request.get(54) == b"1"
    assert request.get(37), "the venue's OrderID goes with the status request"
    assert (request.get(790) is None) == venue.fix42


async def _filled(oms: Oms, order_id: str) -> int:
    return oms.filled(order_id)


@pytest.mark.parametrize(
    ("venue", "profile"), [(VENUES["fix44"], "fix44"), (VENUES["fix42"], "fix42")], ids=["fix44", "fix42"]
)
async def test_an_iceberg_order_reaches_the_venue_with_its_display_quantity_as_max_floor(
    start_venue, exec_against, venue: Venue, profile: str
) -> None:  # type: ignore[no-untyped-def]
    acceptor: Acceptor = start_venue(venue)
    _, oms = await exec_against(acceptor, profile)
    iceberg = await oms.new_order(quantity=100, display_quantity=10)
    plain = await oms.new_order(quantity=10)
    for order_id, quantity in ((iceberg, 100), (plain, 10)):
        await eventually_async(lambda o=order_id: _filled(oms, o), equals=quantity)
    sent = {m.get(11): m for m in acceptor.received.of_type("D")}
    assert sent[iceberg.encode()].get(111) == b"10"  # MaxFloor: the most shown at a time
    assert sent[iceberg.encode()].get(38) == b"100"
    assert sent[plain.encode()].get(111) is None
    assert not acceptor.received.of_type("3"), "the venue refused nothing"


async def test_a_strict_profile_against_a_venue_sending_4_2_fills_flags_the_order(
    start_venue, exec_against
) -> None:  # type: ignore[no-untyped-def]
    """The fault found in the field: 150=2 in a FIX 4.4 session, refused by the strict data
    dictionary. The order must not stay quietly pending: it is flagged, the reject counted
    and stored with the venue's raw message."""
    acceptor: Acceptor = start_venue(Venue("fix44-sends-4.2-fills", fill_exec_types="12"))
    stack, oms = await exec_against(acceptor, "fix44")
    order_id = await oms.new_order(quantity=10)
    flagged = await wait_for(lambda: oms.of(order_id, ATTENTION))
    assert "session_reject_sent" in flagged[0].text
    stored = await wait_for_incidents(stack, 1)
    incident = stored.incidents[0]
    assert incident.kind == "session_reject_sent" and incident.order_id == order_id
    assert "150=2" in incident.raw and "35=8" in incident.raw
    assert incident_metric(stack, "session_reject_sent") >= 1
    assert (await session_status(stack)).venue_incidents >= 1
    assert not oms.of(order_id, er.EXEC_TYPE_TRADE)


async def wait_for_incidents(
    stack: Stack, count: int, timeout: float = 30.0
) -> exec_pb2.ListVenueIncidentsResponse:
    deadline = time.monotonic() + timeout
    while (found := await incidents(stack)).total < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{found.total} incidents stored, expected {count}")
        await asyncio.sleep(0.2)
    return found


async def test_a_report_svc_exec_cannot_map_flags_the_order(start_venue, exec_against) -> None:  # type: ignore[no-untyped-def]
    acceptor: Acceptor = start_venue(Venue("restates", restate=True, custom_tags=True))
    stack, oms = await exec_against(acceptor, "fix44-tolerant")
    order_id = await oms.new_order(quantity=10)
    flagged = await wait_for(lambda: oms.of(order_id, ATTENTION))
    assert "unmappable" in flagged[0].text and "restated" in flagged[0].text
    incident = (await wait_for_incidents(stack, 1)).incidents[0]
    assert (incident.kind, incident.reason, incident.order_id) == ("unmappable", "restated", order_id)
    assert "150=D" in incident.raw
    assert incident_metric(stack, "unmappable") >= 1
    assert oms.of(order_id, er.EXEC_TYPE_NEW), "what it could map went through"


async def test_a_venue_refusing_status_requests_is_not_asked_again_and_the_order_is_flagged(
    start_venue, exec_against
) -> None:  # type: ignore[no-untyped-def]
    acceptor: Acceptor = start_venue(Venue("refuses-status", rest=True, status="refuse"))
    stack, oms = await exec_against(acceptor, "fix44")
    order_id = await oms.new_order(quantity=10)
    await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    stub = exec_stub(stack)
    request = exec_pb2.GetExchangeOrderStatusRequest(order_id=order_id, timeout_ms=5000)
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetExchangeOrderStatus(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(acceptor.received.of_type("H")) == 1, "a refused request is not repeated at once"
    flagged = await wait_for(lambda: oms.of(order_id, ATTENTION))
    assert "status_refused" in flagged[0].text
    kinds = {i.kind for i in (await wait_for_incidents(stack, 2)).incidents}
    assert kinds == {"business_reject", "status_refused"}
    assert incident_metric(stack, "business_reject") >= 1


async def test_a_venue_denying_a_working_order_flags_it_and_ends_it_when_it_denies_again(  # type: ignore[no-untyped-def]
    start_venue, exec_against
) -> None:
    acceptor: Acceptor = start_venue(Venue("forgets", rest=True, status="deny"))
    stack, oms = await exec_against(acceptor, "fix44", **{FORGOTTEN_AFTER: "3"})
    order_id = await oms.new_order(quantity=10)
    await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    answer = await exec_stub(stack).GetExchangeOrderStatus(
        exec_pb2.GetExchangeOrderStatusRequest(order_id=order_id, timeout_ms=5000), timeout=10
    )
    denied_at = time.monotonic()
    assert answer.ord_status == er.ORD_STATUS_REJECTED
    flagged = await wait_for(lambda: oms.of(order_id, ATTENTION))
    assert "unknown_order" in flagged[0].text
    incident = (await wait_for_incidents(stack, 1)).incidents[0]
    assert incident.kind == "unknown_order" and "103=5" in incident.raw
    # Flagged, not finished: one denial could be a question that overtook the order.
    assert not oms.of(order_id, er.EXEC_TYPE_CANCELED) and not oms.of(order_id, er.EXEC_TYPE_REJECTED)

    # svc_exec asks again by itself; a second denial, late enough, ends the order once.
    ended = await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_CANCELED), timeout=20)
    assert time.monotonic() - denied_at >= 3
    assert len(acceptor.received.of_type("H")) == 2
    assert ended[0].ord_status == er.ORD_STATUS_CANCELED
    assert "the venue does not hold the order" in ended[0].text
    kinds = [i.kind for i in (await wait_for_incidents(stack, 2)).incidents]
    assert "order_forgotten" in kinds
    assert incident_metric(stack, "order_forgotten") == 1
    await asyncio.sleep(4)
    assert len(oms.of(order_id, er.EXEC_TYPE_CANCELED)) == 1, "ended once; not asked again"
    assert len(acceptor.received.of_type("H")) == 2


async def test_a_cancel_refused_as_unknown_order_has_the_venue_asked_and_the_order_ended(  # type: ignore[no-untyped-def]
    start_venue, exec_against
) -> None:
    """A venue that lost its book refuses a cancel as "unknown order" (102=1): that alone
    ends nothing (the cancel is refused, the order stays), but svc_exec asks the venue about
    the order, and two denials seconds apart end it."""
    acceptor: Acceptor = start_venue(Venue("loses-its-book", rest=True))
    stack, oms = await exec_against(acceptor, "fix44", **{FORGOTTEN_AFTER: "2"})
    order_id = await oms.new_order(quantity=10)
    await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    acceptor.forget()
    await oms.cancel(order_id)
    await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_CANCEL_REJECTED))
    assert not oms.of(order_id, er.EXEC_TYPE_CANCELED)
    ended = await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_CANCELED), timeout=20)
    assert "the venue does not hold the order" in ended[0].text
    assert len(acceptor.received.of_type("H")) == 2
    kinds = sorted(i.kind for i in (await wait_for_incidents(stack, 2)).incidents)
    assert kinds == ["order_forgotten", "unknown_order"]


async def test_an_application_message_svc_exec_does_not_handle_is_refused_and_recorded(  # type: ignore[no-untyped-def]
    start_venue, exec_against
) -> None:
    acceptor: Acceptor = start_venue(Venue("talks-news", news=True))
    stack, oms = await exec_against(acceptor, "fix44")
    order_id = await oms.new_order(quantity=10)
    await eventually_async(lambda: _filled(oms, order_id), equals=10)
    refusal = await wait_for(lambda: acceptor.received.of_type("j"))
    assert refusal[0].get(372) == b"B" and refusal[0].get(380) == b"3"
    incident = (await wait_for_incidents(stack, 1)).incidents[0]
    assert incident.kind == "business_reject_sent" and "35=B" in incident.raw
    assert incident_metric(stack, "business_reject_sent") >= 1


async def test_a_venue_sending_execid_0_on_every_report_fills_once_per_fill_with_its_own_profile_file(  # type: ignore[no-untyped-def]
    start_venue, exec_against, tmp_path
) -> None:
    """A venue's own profile, as an operator writes it: a copy of a shipped one, one setting
    changed, passed by path. Every fill of every order arrives exactly once."""
    profile = tmp_path / "zero-execids.cfg"
    profile.write_text(
        venue.profile_path("fix44-tolerant").read_text().replace("ExecIDScope=ORDER", "ExecIDScope=NONE")
    )
    acceptor: Acceptor = start_venue(Venue("execid-0", fill_exec_types="12", two_fills=True, exec_ids="zero"))
    stack, oms = await exec_against(acceptor, str(profile))
    orders = [await oms.new_order(quantity=10) for _ in range(2)]
    for order_id in orders:
        await eventually_async(lambda o=order_id: _filled(oms, o), equals=10)
        assert [f.last_quantity for f in oms.of(order_id, er.EXEC_TYPE_TRADE)] == [5, 5]
    await asyncio.sleep(1)
    assert not oms.duplicate_exec_ids()
    assert (await session_status(stack)).venue_incidents == 0


async def test_reconciling_with_a_fix42_venue_asks_order_by_order(start_venue, exec_against) -> None:  # type: ignore[no-untyped-def]
    """FIX 4.2 has no OrderMassStatusRequest: svc_exec asks about each working order."""
    acceptor: Acceptor = start_venue(
        Venue("fix42-resting", begin_string="FIX.4.2", fill_exec_types="12", rest=True)
    )
    stack, oms = await exec_against(acceptor, "fix42")
    orders = [await oms.new_order(quantity=10) for _ in range(2)]
    for order_id in orders:
        await wait_for(lambda o=order_id: oms.of(o, er.EXEC_TYPE_NEW))
    reply = await exec_stub(stack).ReconcileOrders(exec_pb2.ReconcileOrdersRequest(), timeout=30)
    assert reply.orders_reported == 2
    assert not acceptor.received.of_type("AF")
    assert sorted(m.get(11) for m in acceptor.received.of_type("H")) == sorted(o.encode() for o in orders)
    assert (await session_status(stack)).venue_incidents == 0


async def test_a_cancel_the_venue_lost_is_sent_again_after_the_reconnect(start_venue, exec_against) -> None:  # type: ignore[no-untyped-def]
    """A venue that took a cancel off the wire and lost it (it crashed before acting on it)
    still holds the order, working, and asks for no resend. After the reconnect the
    reconciliation shows the cancel never arrived: svc_exec sends it again, naming the
    order as the venue knows it, and the order is cancelled once."""
    acceptor: Acceptor = start_venue(Venue("loses-a-cancel", rest=True, lose_cancels=1))
    _, oms = await exec_against(acceptor, "fix44")
    order_id = await oms.new_order(quantity=10)
    await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    await oms.cancel(order_id)
    await wait_for(lambda: acceptor.received.of_type("F"))
    await asyncio.sleep(1)
    assert not oms.of(order_id, er.EXEC_TYPE_CANCELED) and acceptor.lost_cancels == 1
    logons = acceptor.logons
    acceptor.drop_connection()
    await wait_for(lambda: acceptor.logons > logons)
    cancelled = await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_CANCELED))
    cancels = acceptor.received.of_type("F")
    assert len(cancels) == 2 and cancels[1].get(41) == order_id.encode(), (
        "names the order as the venue knows it"
    )
    assert cancelled[0].ord_status == er.ORD_STATUS_CANCELED
    await asyncio.sleep(1)
    assert len(oms.of(order_id, er.EXEC_TYPE_CANCELED)) == 1
    assert not oms.of(order_id, er.EXEC_TYPE_CANCEL_REJECTED)


async def _admin_end_order(stack: Stack, order_id: str, *flags: str) -> tuple[int, str]:
    """`brokermesh admin end-order` against the stack, as an operator runs it (the stack's
    data directory holds the operators' credentials; the description is what `up` writes)."""
    stack.write_description(stack.plan.data_dir / "stack.json")
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "brokermesh"),
        "--data-dir",
        str(stack.plan.data_dir),
        "admin",
        *flags,
        "end-order",
        order_id,
        "--reason",
        "the venue's desk confirms it holds no such order",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_an_operator_ends_a_flagged_order_the_venue_will_not_speak_of_and_not_one_it_holds(  # type: ignore[no-untyped-def]
    start_venue, exec_against
) -> None:
    """What svc_exec cannot settle by itself (a venue refusing every status request) an
    operator settles: `admin end-order` asks the venue, then ends the order on the
    operator's word, recorded with their name. An order the venue says it holds is refused
    (cancel it instead); a read-only operator may not end anything."""
    refusing: Acceptor = start_venue(Venue("refuses-status", rest=True, status="refuse"))
    stack, oms = await exec_against(refusing, "fix44")
    order_id = await oms.new_order(quantity=10)
    await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    with pytest.raises(grpc.aio.AioRpcError):
        await exec_stub(stack).GetExchangeOrderStatus(
            exec_pb2.GetExchangeOrderStatusRequest(order_id=order_id, timeout_ms=5000), timeout=10
        )
    await wait_for(lambda: oms.of(order_id, ATTENTION))

    code, output = await _admin_end_order(stack, order_id, "--operator", "auditor")
    assert code != 0 and "PERMISSION_DENIED" in output, output
    assert not oms.of(order_id, er.EXEC_TYPE_CANCELED)

    code, output = await _admin_end_order(stack, order_id)
    assert code == 0, output
    ended = await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_CANCELED))
    assert ended[0].ord_status == er.ORD_STATUS_CANCELED
    assert "the venue does not hold the order (ended by operator:admin" in ended[0].text
    assert "confirms it holds no such order" in ended[0].text
    incident = next(i for i in (await incidents(stack)).incidents if i.kind == "operator_ended")
    assert incident.order_id == order_id and "operator:admin" in incident.text
    code, output = await _admin_end_order(stack, order_id)
    assert code != 0 and "already over" in output, output
    assert len(oms.of(order_id, er.EXEC_TYPE_CANCELED)) == 1

    holding: Acceptor = start_venue(Venue("holds", rest=True))
    stack, oms = await exec_against(holding, "fix44")
    order_id = await oms.new_order(quantity=10)
    await wait_for(lambda: oms.of(order_id, er.EXEC_TYPE_NEW))
    code, output = await _admin_end_order(stack, order_id)
    assert code != 0 and "the venue holds order" in output and "cancel it instead" in output, output
    await asyncio.sleep(1)
    assert not oms.of(order_id, er.EXEC_TYPE_CANCELED)
