"""The symbols of a user's portfolio, from svc_funds (the portfolio's owner) over gRPC."""

from __future__ import annotations

import grpc

from brokermesh.funds.v1 import portfolio_pb2, portfolio_pb2_grpc
from svc_runtime.errors import reraise_remote


class GrpcPortfolioSymbols:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 5.0) -> None:
        self.stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
        self.timeout = timeout

    async def __call__(self, name: str) -> list[str]:
        """Symbols held or with a position in `users/{user}/portfolio`. The call relays the
        caller (the request context's actor), so svc_funds holds it to its own portfolio."""
        try:
            portfolio = await self.stub.GetPortfolio(
                portfolio_pb2.GetPortfolioRequest(name=name), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise reraise_remote(error) from error
        symbols = [h.symbol for h in portfolio.holdings] + [p.symbol for p in portfolio.positions]
        return list(dict.fromkeys(symbols))
