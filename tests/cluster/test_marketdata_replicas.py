"""svc_marketdata's two replicas under `up --cluster`: one holds the exchange's market-data
session (the lease), the other follows its ticks from NATS and serves quote streams too;
an alert created on the follower is fired by the holder.
kill -9 of the holder: the other takes the session, and a quote stream it serves goes on
with ticks of its own. Both times are printed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brokermesh.marketdata.v1 import alerts_pb2 as al
from brokermesh.marketdata.v1 import alerts_pb2_grpc, marketdata_pb2_grpc
from brokermesh.marketdata.v1 import marketdata_pb2 as pb
from brokermesh.type.v1 import decimal_pb2
from svc_runtime import grpc_client
from svc_runtime.ids import new_id
from svc_runtime.stack import StackPlan
from tests.conftest import new_stack
from tests.support.grpc import as_service
from tests.support.infra import SharedInfra
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SYMBOLS = ["INFY", "TCS", "RELIANCE", "HDFCBANK"]
# From kill -9 to ticks again: PostgreSQL frees the lease as the connection drops, the
# standby polls it every second, then logs on and subscribes.
TAKEOVER_BOUND_SECONDS = 20.0


async def _holds_feed(plan: StackPlan, name: str) -> bool:
    async with grpc_client.channel(plan.instance_target(name), signer=plan.operator_signer()) as ch:
        try:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=grpc_client.MARKETDATA_FEED), timeout=2
            )
        except grpc.aio.AioRpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def _holders(plan: StackPlan) -> list[str]:
    return [name for name in plan.instances("svc_marketdata") if await _holds_feed(plan, name)]


@pytest.mark.timeout(300)
async def test_the_standby_takes_the_feed_after_kill_9_and_its_quote_stream_goes_on(
    infra: SharedInfra, tmp_path: Path
) -> None:
    stack = await new_stack(infra, tmp_path / "stack", ["exchange_sim", "svc_marketdata"], replicas=2)
    try:
        plan = stack.plan
        assert len(plan.instances("svc_marketdata")) == 2
        (holder,) = await eventually(lambda: _holders(plan), timeout=30)
        (standby,) = [name for name in plan.instances("svc_marketdata") if name != holder]
        async with grpc_client.channel(plan.instance_target(standby), signer=as_service(plan)) as ch:
            market = marketdata_pb2_grpc.MarketDataServiceStub(ch)
            alerts = alerts_pb2_grpc.AlertServiceStub(ch)
            # Depth is not in the ticks: the standby refuses it, retryably.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await market.GetMarketDepth(
                    pb.GetMarketDepthRequest(name="instruments/INFY/depth"), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            # An alert created on the standby is fired by the holder (any price is above 0.01).
            user = new_id("u")
            await alerts.CreateAlert(
                al.CreateAlertRequest(
                    parent=f"users/{user}",
                    alert=al.Alert(
                        symbol="INFY",
                        condition=al.ALERT_CONDITION_PRICE_ABOVE,
                        threshold=decimal_pb2.Decimal(value="0.01"),
                    ),
                    request_id=new_id("k"),
                ),
                timeout=10,
            )

            async def fired() -> bool:
                reply = await alerts.ListAlerts(al.ListAlertsRequest(parent=f"users/{user}"), timeout=5)
                return [a.state for a in reply.alerts] == [al.ALERT_STATE_FIRED]

            await eventually(fired, timeout=60)

            arrivals: list[tuple[float, int]] = []  # (monotonic time, highest sequence in the message)

            async def read() -> None:
                stream = market.StreamQuotes(
                    pb.StreamQuotesRequest(symbols=SYMBOLS, max_updates_per_second=50)
                )
                async for response in stream:
                    if response.quotes:
                        arrivals.append((time.monotonic(), max(q.sequence for q in response.quotes)))

            reader = asyncio.create_task(read())
            try:
                # The standby's stream moves with the holder's ticks.
                def moving(count: int) -> bool:
                    if reader.done():
                        reader.result()  # the stream's error, if it ended
                        raise AssertionError("the quote stream ended")
                    return len(arrivals) >= count

                await eventually(lambda: moving(3), timeout=60)
                before = max(sequence for _, sequence in arrivals)

                await stack.kill(holder)
                killed = time.monotonic()
                await eventually(lambda: _holds_feed(plan, standby), timeout=TAKEOVER_BOUND_SECONDS)
                took_feed = time.monotonic() - killed
                await eventually(
                    lambda: any(at > killed and seq > before for at, seq in arrivals),
                    timeout=TAKEOVER_BOUND_SECONDS,
                )
                resumed = min(at for at, seq in arrivals if at > killed and seq > before) - killed
                assert not reader.done(), "the quote stream ended with the holder"
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await reader
            print(f"marketdata takeover: feed held after {took_feed:.2f}s, ticks again after {resumed:.2f}s")

            # The new holder serves depth itself.
            async def deep() -> bool:
                depth = await market.GetMarketDepth(
                    pb.GetMarketDepthRequest(name="instruments/INFY/depth"), timeout=5
                )
                return bool(depth.bids)

            assert await eventually(deep, timeout=30)
    finally:
        await stack.stop()
