"""A follower replica of svc_marketdata (no infrastructure): it takes the holder's newer
quotes from followed ticks, the stored instrument master, and refuses depth retryably; once
it holds the feed it ignores followed ticks and serves depth."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

import pytest

from svc_marketdata.app.board import ChangeBoard
from svc_marketdata.app.market import MarketData
from svc_marketdata.app.streams import StreamHub
from svc_marketdata.domain.instruments import Instrument
from svc_marketdata.domain.quotes import Quote
from svc_marketdata.transport.wire import encode_feed_status, encode_quote
from svc_runtime.errors import Unavailable

MASTER = [Instrument("INFY", "Infosys", previous_close=Decimal("1500.00"))]


class StoredMaster:
    async def load(self) -> list[Instrument]:
        return MASTER


def follower() -> MarketData:
    unused = cast(Any, None)  # publishing, snapshots and candles are the holder's
    market = MarketData(
        repository=cast(Any, StoredMaster()),
        publisher=unused,
        snapshots=unused,
        encode=encode_quote,
        encode_status=encode_feed_status,
        shard_of=lambda symbol: "00",
        hub=StreamHub(max_streams=10),
        candle_store=unused,
        board=ChangeBoard(max_streams=10),
    )
    market.holding.clear()
    return market


def quote(sequence: int, last: str) -> tuple[Quote, bytes]:
    q = Quote("INFY", previous_close=Decimal("1500.00"), last_price=Decimal(last), sequence=sequence)
    return q, encode_quote(q)


async def test_a_follower_takes_newer_quotes_and_the_stored_master_and_refuses_depth() -> None:
    market = follower()
    await market.follow_master()
    assert market.is_known("INFY")

    newer = quote(10, "1510.00")
    market.follow_ticks([newer])
    market.follow_ticks([quote(9, "1490.00")])  # late, older: skipped
    assert market.book.quotes["INFY"].last_price == Decimal("1510.00")
    assert market.encoded_quotes(["INFY"]) == [newer[1]]

    with pytest.raises(Unavailable) as refused:
        market.market_depth("INFY")
    assert refused.value.reason == "STANDBY"


async def test_the_holder_ignores_followed_ticks_and_serves_depth() -> None:
    market = follower()
    await market.follow_master()
    market.take_feed(lambda quotes: None)
    market.follow_ticks([quote(10, "1510.00")])  # its own tick, back from NATS
    assert market.book.quotes["INFY"].last_price is None
    assert market.market_depth("INFY").symbol == "INFY"
