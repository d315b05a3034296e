"""When a started stack is ready: a first order could succeed end to end.

Every service answering its health check is not enough: svc_exec logs on to the venue after
it starts serving, svc_marketdata learns the instrument master from the venue's feed after it
starts serving, and an order needs both (and its symbol's reference price, for a MARKET
order). Ready means, in this order:

0. every gRPC service of the stack answers its health check with SERVING;
1. the gateway serves and its internal health says it is not draining, the spent-ticket store
   is reachable and the tick feed subscribed;
2. the JetStream streams of the stack's namespace exist (orders, commands, reports);
3. svc_exec holds the FIX order-entry session and it is logged on;
4. svc_marketdata knows instruments and quotes one of them with a reference price (a last
   price or a previous close).

No order is placed to find out: a probe order would be a real order in some account's books
and in the venue's. Each condition is what the order path itself needs, asked of the service
that needs it, so none of them can be true while the path is not.
"""

from __future__ import annotations

import asyncio
import json
import string
import time
import urllib.request
from typing import TYPE_CHECKING

import grpc
import nats
import nats.js.errors
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brokermesh.exec.v1 import exec_pb2, exec_pb2_grpc
from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from svc_runtime import messaging
from svc_runtime.grpc_client import EXEC_SERVICE, channel, raw_channel

if TYPE_CHECKING:
    from svc_runtime.stack import StackPlan

CALL_TIMEOUT = 3.0


class NotReady(TimeoutError):
    """The stack did not become ready in time; the message says what was still missing."""


async def missing(plan: StackPlan) -> str:
    """What a first order still lacks on the stack of `plan`, or "" when it could succeed."""
    for check in (_services, _gateway, _streams, _fix_session, _prices):
        try:
            problem = await check(plan)
        except (OSError, grpc.aio.AioRpcError, nats.errors.Error, ValueError) as error:
            problem = f"{check.__name__.strip('_')}: {type(error).__name__} {error}"
        if problem:
            return problem
    return ""


async def wait(plan: StackPlan, *, timeout: float = 120.0, interval: float = 0.25) -> None:
    """Until `missing(plan)` is empty; NotReady naming what is missing after `timeout`."""
    deadline = time.monotonic() + timeout
    while problem := await missing(plan):
        if time.monotonic() > deadline:
            raise NotReady(f"not ready after {timeout:g}s: {problem}")
        await asyncio.sleep(interval)


async def _services(plan: StackPlan) -> str:
    for name, ports in plan.ports.items():
        if "grpc" not in ports:
            continue
        async with raw_channel(plan.instance_target(name)) as ch:
            try:
                reply = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                return f"{name}: {error.code().name}"
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return f"{name}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return ""


async def _gateway(plan: StackPlan) -> str:
    url = f"http://127.0.0.1:{plan.ports['gateway']['metrics']}/healthz"

    def fetch() -> dict[str, object]:
        with urllib.request.urlopen(url, timeout=CALL_TIMEOUT) as response:
            return dict(json.loads(response.read()))

    try:
        details = await asyncio.to_thread(fetch)
    except OSError as error:  # a 503 (draining) is an HTTPError, an OSError
        return f"gateway: {error}"
    if details.get("streamTickets") != "ready":
        return "gateway: the stream-ticket store is not reachable yet"
    if details.get("tickFeed") != "subscribed":
        return "gateway: not subscribed to ticks yet"
    return ""


async def _streams(plan: StackPlan) -> str:
    client = await nats.connect(
        messaging.servers(plan.nats_url),
        name="readiness",
        connect_timeout=CALL_TIMEOUT,
        max_reconnect_attempts=0,
    )
    try:
        js = client.jetstream(timeout=CALL_TIMEOUT)
        for config in messaging.Topology(plan.namespace).streams():
            try:
                await js.stream_info(str(config.name))
            except nats.js.errors.NotFoundError:
                return f"streams: {config.name} does not exist yet"
    finally:
        await client.close()
    return ""


async def _fix_session(plan: StackPlan) -> str:
    target = plan.target("svc_exec")
    # Of several replicas, ask the one that says it holds the session (a standby never does).
    health_service = EXEC_SERVICE if "," in target else ""
    async with channel(target, signer=plan.operator_signer(), health_service=health_service) as ch:
        status = await exec_pb2_grpc.ExecutionServiceStub(ch).GetSessionStatus(
            exec_pb2.GetSessionStatusRequest(), timeout=CALL_TIMEOUT
        )
    if not status.active:
        return "svc_exec: does not hold the FIX session yet"
    if not status.logged_on:
        return f"svc_exec: the FIX session is not logged on to {':'.join(plan.fix_address)} yet"
    return ""


async def _prices(plan: StackPlan) -> str:
    async with channel(plan.target("svc_marketdata"), signer=plan.operator_signer()) as ch:
        market = marketdata_pb2_grpc.MarketDataServiceStub(ch)
        symbols: list[str] = []
        # Any instrument will do; a search needs some text, and every symbol starts with a letter.
        for letter in string.ascii_uppercase:
            found = await market.SearchInstruments(
                marketdata_pb2.SearchInstrumentsRequest(query=letter, page_size=20), timeout=CALL_TIMEOUT
            )
            symbols = [i.symbol for i in found.instruments]
            if symbols:
                break
        if not symbols:
            return "svc_marketdata: no instruments known yet"
        quotes = await market.BatchGetQuotes(
            marketdata_pb2.BatchGetQuotesRequest(symbols=symbols), timeout=CALL_TIMEOUT
        )
    if not any(q.last_price.value or q.previous_close.value for q in quotes.quotes):
        return "svc_marketdata: no instrument has a price yet"
    return ""
