"""Last prices from svc_marketdata, for marking the portfolio. Best effort by design: a slow
or absent price service leaves prices unknown instead of failing the portfolio."""

from __future__ import annotations

import logging
from decimal import Decimal

import grpc

from brokermesh.marketdata.v1 import marketdata_pb2, marketdata_pb2_grpc
from svc_runtime.decimals import parse_decimal
from svc_runtime.errors import InvalidArgument
from svc_runtime.grpc_client import channel

log = logging.getLogger(__name__)

_MAX_SYMBOLS = 500  # BatchGetQuotes' limit per request


class MarketDataQuotes:
    def __init__(self, target: str, *, timeout: float = 0.5) -> None:
        self.target = target
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> marketdata_pb2_grpc.MarketDataServiceStub:
        if self._channel is None:
            self._channel = channel(self.target)
        return marketdata_pb2_grpc.MarketDataServiceStub(self._channel)

    async def last_prices(self, symbols: list[str]) -> dict[str, Decimal]:
        if not self.target or not symbols:
            return {}
        prices: dict[str, Decimal] = {}
        try:
            for i in range(0, len(symbols), _MAX_SYMBOLS):
                reply = await self._stub().BatchGetQuotes(
                    marketdata_pb2.BatchGetQuotesRequest(symbols=symbols[i : i + _MAX_SYMBOLS]),
                    timeout=self.timeout,
                )
                for quote in reply.quotes:
                    if quote.last_price.value:
                        try:
                            prices[quote.symbol] = parse_decimal(
                                quote.last_price.value, field="last_price", max_places=4, positive=True
                            )
                        except InvalidArgument:
                            log.warning("ignoring a malformed last price", extra={"symbol": quote.symbol})
        except grpc.aio.AioRpcError as error:
            log.info("last prices unavailable", extra={"code": error.code().name})
            return prices
        return prices

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
