"""A trading desktop over gRPC, in one file.

It signs in at the gateway (`POST /v1/sessions`), then calls the services directly with the
access token it got, as `authorization: Bearer <token>` metadata on every call: it streams
quotes and its own order updates, and places one order. The services take the user from
the token; a token naming somebody else's orders gets NOT_FOUND. Access tokens live
minutes: the client trades its refresh token for a new pair a minute before expiry
(`POST /v1/sessions:refresh`; open streams carry on), and logs out when it is done
(`DELETE /v1/sessions/current`), which would also end its streams.

    python examples/desktop_client.py --username asha --password asha-demo-pass --buy 1

Endpoints come from the running stack's description (`.brokermesh/stack.json`) unless given.
Every connection is TLS, trusting the stack's CA (`--ca`, by default BROKERMESH_TLS_CA as
`source .brokermesh/env` sets it, else the one the description names); `--plaintext` only
for a stack started with `up --plaintext`. Only the generated stubs in gen/ and grpcio are
needed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from brokermesh.orders.v1 import orders_pb2, orders_pb2_grpc
from brokermesh.type.v1 import trading_pb2

Metadata = tuple[tuple[str, str], ...]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def https(ca: str) -> ssl.SSLContext:
    """TLS 1.2+ trusting `ca` (the system's roots without one)."""
    context = ssl.create_default_context(cafile=ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def gateway_call(url: str, method: str, body: Any = None, token: str = "", ca: str = "") -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    context = None if url.startswith("http://") else https(ca)
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        text = response.read()
    return json.loads(text) if text else None


class Session:
    """The desktop's tokens: the access token for each call, renewed a minute before it
    expires with the refresh token (which works once; each renewal brings the next)."""

    def __init__(self, gateway_url: str, username: str, password: str, ca: str) -> None:
        self.gateway_url = gateway_url
        self.ca = ca
        self.body = gateway_call(
            f"{gateway_url}/v1/sessions", "POST", {"username": username, "password": password}, ca=ca
        )
        self.renews_at = self._renewal_time()

    def _renewal_time(self) -> float:
        lifetime = float(self.body["expiresIn"])
        return time.monotonic() + max(1.0, min(lifetime - 60, lifetime / 2))

    @property
    def user_id(self) -> str:
        return str(self.body["userId"])

    def metadata(self) -> Metadata:
        return (("authorization", f"Bearer {self.body['accessToken']}"),)

    async def keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self.renews_at - time.monotonic()))
            self.body = await asyncio.to_thread(
                gateway_call,
                f"{self.gateway_url}/v1/sessions:refresh",
                "POST",
                {"refreshToken": self.body["refreshToken"]},
                ca=self.ca,
            )
            self.renews_at = self._renewal_time()
            say(f"tokens renewed; access token valid {self.body['expiresIn']}s")

    def log_out(self) -> None:
        gateway_call(
            f"{self.gateway_url}/v1/sessions/current", "DELETE", token=self.body["accessToken"], ca=self.ca
        )


async def read_until(call: grpc.aio.UnaryStreamCall, until: float) -> AsyncIterator[Any]:
    """The stream's messages until `until` (a monotonic time), then the call is cancelled."""
    try:
        while (left := until - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(call.read(), left)
            except TimeoutError:
                return
            if message is grpc.aio.EOF:
                return
            yield message
    finally:
        call.cancel()


async def stream_quotes(
    channel: grpc.aio.Channel, metadata: Metadata, symbols: list[str], until: float
) -> int:
    pushes = 0
    call = marketdata_pb2_grpc.MarketDataServiceStub(channel).StreamQuotes(
        marketdata_pb2.StreamQuotesRequest(symbols=symbols, max_updates_per_second=4), metadata=metadata
    )
    async for push in read_until(call, until):
        pushes += 1
        for quote in push.quotes:
            say(f"quote  {quote.symbol:<6} last {quote.last_price.value or '-'}")
    return pushes


async def stream_orders(channel: grpc.aio.Channel, metadata: Metadata, user_id: str, until: float) -> int:
    updates = 0
    call = orders_pb2_grpc.OrdersServiceStub(channel).StreamOrderUpdates(
        orders_pb2.StreamOrderUpdatesRequest(parent=f"users/{user_id}"), metadata=metadata
    )
    async for response in read_until(call, until):
        event = response.event
        updates += 1
        say(
            f"order  {event.order.order_id} {orders_pb2.OrderEventType.Name(event.type)} "
            f"{orders_pb2.OrderStatus.Name(event.order.status)} filled {event.order.filled_quantity}"
        )
    return updates


def open_channel(target: str, args: argparse.Namespace) -> grpc.aio.Channel:
    """TLS to `target`, trusting `--ca` (grpcio's own roots without one)."""
    if args.plaintext:
        return grpc.aio.insecure_channel(target)
    roots = Path(args.ca).read_bytes() if args.ca else None
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots))


async def run(args: argparse.Namespace) -> int:
    session = await asyncio.to_thread(Session, args.gateway, args.username, args.password, args.ca)
    user_id = session.user_id
    say(f"signed in as {user_id}; access token valid {session.body['expiresIn']}s")
    renewing = asyncio.create_task(session.keep_fresh())
    # A stream is admitted with the token of the moment and stays open past its expiry.
    metadata = session.metadata()
    until = time.monotonic() + args.seconds
    async with (
        open_channel(args.marketdata, args) as marketdata,
        open_channel(args.orders, args) as orders,
    ):
        quotes = asyncio.create_task(stream_quotes(marketdata, metadata, args.symbols, until))
        updates = asyncio.create_task(stream_orders(orders, metadata, user_id, until))
        if args.buy:
            await asyncio.sleep(0.5)  # let the order stream open first
            placed = await orders_pb2_grpc.OrdersServiceStub(orders).PlaceOrder(
                orders_pb2.PlaceOrderRequest(
                    parent=f"users/{user_id}",
                    order=orders_pb2.Order(
                        symbol=args.symbols[0],
                        side=trading_pb2.SIDE_BUY,
                        type=trading_pb2.ORDER_TYPE_MARKET,
                        quantity=args.buy,
                    ),
                    request_id=f"desktop-{uuid.uuid4()}",
                ),
                metadata=session.metadata(),
                timeout=10,
            )
            say(f"placed {placed.order_id}: {orders_pb2.OrderStatus.Name(placed.status)}")
        pushes, events = await asyncio.gather(quotes, updates)
    renewing.cancel()
    await asyncio.to_thread(session.log_out)
    say("logged out")
    say(f"done: {pushes} quote pushes, {events} order updates")
    return 0 if pushes and (events or not args.buy) else 1


def main() -> None:
    stack = Path(".brokermesh/stack.json")
    described = json.loads(stack.read_text()) if stack.exists() else {"grpc": {}}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", default=described.get("gateway_url", "https://127.0.0.1:8080"))
    parser.add_argument("--orders", default=described["grpc"].get("svc_orders", "127.0.0.1:50051"))
    parser.add_argument("--marketdata", default=described["grpc"].get("svc_marketdata", "127.0.0.1:50053"))
    parser.add_argument(
        "--ca",
        default=os.environ.get("BROKERMESH_TLS_CA") or described.get("tls_ca") or "",
        help="the CA certificate to trust (PEM)",
    )
    parser.add_argument(
        "--plaintext",
        action="store_true",
        default="tls_ca" in described and described["tls_ca"] is None,
        help="no TLS: only for a stack started with `up --plaintext`",
    )
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--symbols", nargs="+", default=["INFY", "TCS"])
    parser.add_argument("--buy", type=int, default=0, help="place a market buy of this many shares")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to stream")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
