"""Price alerts over gRPC on the real svc_marketdata process (an exchange double sets the
prices): an alert fires once when its price is reached, its event is replayed from the
stream's history, and a kill -9 and restart neither loses an active alert nor fires a fired
one again."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from brokermesh.marketdata.v1 import alerts_pb2 as al
from brokermesh.marketdata.v1 import alerts_pb2_grpc
from brokermesh.type.v1 import decimal_pb2
from svc_runtime.errors import details_of
from svc_runtime.ids import new_id
from tests.marketdata.conftest import MarketDataProcess
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e


def stub(md: MarketDataProcess) -> alerts_pb2_grpc.AlertServiceStub:
    return alerts_pb2_grpc.AlertServiceStub(md.channel)


def new_user() -> str:
    return new_id("u")


async def create(
    md: MarketDataProcess, user: str, symbol: str, condition: int, threshold: str, key: str = ""
) -> al.Alert:
    return await stub(md).CreateAlert(
        al.CreateAlertRequest(
            parent=f"users/{user}",
            alert=al.Alert(
                symbol=symbol, condition=condition, threshold=decimal_pb2.Decimal(value=threshold), note="n"
            ),
            request_id=key or new_id("k"),
        ),
        timeout=10,
    )


async def replay(
    md: MarketDataProcess, user: str, after: str = "0", settle: float = 1.5
) -> list[al.AlertEvent]:
    """Every event the stream sends within `settle` seconds."""
    events: list[al.AlertEvent] = []
    call = stub(md).StreamAlertEvents(
        al.StreamAlertEventsRequest(parent=f"users/{user}", after_event_id=after)
    )

    async def read() -> None:
        async for event in call:
            events.append(event)

    reader = asyncio.create_task(read())
    await asyncio.sleep(settle)
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        await reader
    return events


async def test_an_alert_fires_once_on_the_stream_when_its_price_is_reached(md: MarketDataProcess) -> None:
    user = new_user()
    alert = await create(md, user, "INFY", al.ALERT_CONDITION_PRICE_ABOVE, "1600.00")
    assert alert.state == al.ALERT_STATE_ACTIVE and alert.name == f"users/{user}/alerts/{alert.alert_id}"
    live: list[al.AlertEvent] = []
    # From event 0: should the stream start following only after the fire (a loaded
    # machine), the fire is replayed rather than missed.
    call = stub(md).StreamAlertEvents(al.StreamAlertEventsRequest(parent=f"users/{user}", after_event_id="0"))

    async def read() -> None:
        async for event in call:
            live.append(event)

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(0.5)  # the stream is following
        md.exchange.trade("INFY", "1590.00", 1)  # not yet
        md.exchange.trade("INFY", "1605.00", 1)
        await eventually(lambda: live or None, timeout=15)
        md.exchange.trade("INFY", "1615.00", 1)  # already fired: nothing more
        await asyncio.sleep(1.5)
    finally:
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await reader
    assert len(live) == 1
    fired = live[0].alert
    assert (fired.alert_id, fired.state, fired.fired_price.value) == (
        alert.alert_id,
        al.ALERT_STATE_FIRED,
        "1605.00",
    )
    listed = (await stub(md).ListAlerts(al.ListAlertsRequest(parent=f"users/{user}"))).alerts
    assert [(a.alert_id, a.state) for a in listed] == [(alert.alert_id, al.ALERT_STATE_FIRED)]
    # A client reconnecting from the start gets it once; after its id, nothing.
    assert [e.event_id for e in await replay(md, user)] == [live[0].event_id]
    assert await replay(md, user, after=live[0].event_id) == []


async def test_percent_change_alerts_creation_is_idempotent_and_deleted_alerts_stay_silent(
    md: MarketDataProcess,
) -> None:
    user = new_user()
    first = await create(md, user, "RELIANCE", al.ALERT_CONDITION_CHANGE_PERCENT_BELOW, "-5", key="same")
    again = await create(md, user, "RELIANCE", al.ALERT_CONDITION_CHANGE_PERCENT_BELOW, "-5", key="same")
    assert again.alert_id == first.alert_id
    doomed = await create(md, user, "RELIANCE", al.ALERT_CONDITION_PRICE_BELOW, "2300.00")
    await stub(md).DeleteAlert(al.DeleteAlertRequest(name=doomed.name))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(md).DeleteAlert(al.DeleteAlertRequest(name=doomed.name))
    assert details_of(err.value).reason == "ALERT_NOT_FOUND"

    md.exchange.trade("RELIANCE", "2270.00", 1)  # −5.42 % from the 2400.00 close
    events = await eventually(lambda: _nonempty(replay(md, user)), timeout=15)
    assert [e.alert.alert_id for e in events] == [first.alert_id]

    for bad, field in (
        (
            al.Alert(
                symbol="NOPE",
                condition=al.ALERT_CONDITION_PRICE_ABOVE,
                threshold=decimal_pb2.Decimal(value="1"),
            ),
            "alert.symbol",
        ),
        (al.Alert(symbol="INFY", threshold=decimal_pb2.Decimal(value="1")), "alert.condition"),
        (al.Alert(symbol="INFY", condition=al.ALERT_CONDITION_PRICE_ABOVE), "alert.threshold"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(md).CreateAlert(
                al.CreateAlertRequest(parent=f"users/{user}", alert=bad, request_id=new_id("k"))
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in details_of(err.value).violations] == [field]


async def _nonempty(events: object) -> list[al.AlertEvent] | None:
    got = await events  # type: ignore[misc]
    return got or None


@pytest.mark.slow
async def test_after_kill_9_an_active_alert_still_fires_and_a_fired_one_never_again(
    md: MarketDataProcess,
) -> None:
    user = new_user()
    fired_before = await create(md, user, "HDFCBANK", al.ALERT_CONDITION_PRICE_ABOVE, "1650.00")
    md.exchange.trade("HDFCBANK", "1660.00", 1)
    first = await eventually(lambda: _nonempty(replay(md, user, settle=0.5)), timeout=15)
    waiting = await create(md, user, "TATASTEEL", al.ALERT_CONDITION_PRICE_BELOW, "110.00")

    subscriptions = len(md.exchange.subscriptions)
    await md.stack.kill("svc_marketdata")
    await md.restart_after_kill()
    await md.exchange.wait_subscribed(subscriptions + 1)

    md.exchange.trade("HDFCBANK", "1670.00", 1)  # fired before the crash: stays fired
    md.exchange.trade("TATASTEEL", "109.00", 1)

    async def both() -> list[al.AlertEvent] | None:
        events = await replay(md, user, settle=0.5)
        return events if len(events) >= 2 else None

    await eventually(both, timeout=30)
    await asyncio.sleep(1.0)
    events = await replay(md, user)
    assert [e.alert.alert_id for e in events] == [fired_before.alert_id, waiting.alert_id]
    assert events[0].event_id == first[0].event_id
    assert events[1].alert.fired_price.value == "109.00"
