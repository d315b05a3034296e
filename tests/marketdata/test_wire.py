"""The wire codec: quotes round-trip exactly, and concatenated encoded quotes are a valid
repeated field (what TickBatch and the stream responses are made of)."""

from __future__ import annotations

import random
from decimal import Decimal

from brokermesh.marketdata.v1 import marketdata_pb2, tick_pb2
from svc_marketdata.domain.quotes import Quote
from svc_marketdata.transport.wire import decode_quote, encode_quote, quote_message, repeated_field


def random_quote(rng: random.Random) -> Quote:
    def price() -> Decimal | None:
        return None if rng.random() < 0.2 else Decimal(rng.randint(1, 10_000_000)) / 100

    return Quote(
        symbol=rng.choice(["INFY", "M&M", "BAJAJ-AUTO", "X" * 30, ""]),
        previous_close=price(),
        last_price=price(),
        bid_price=price(),
        bid_quantity=rng.choice([0, 1, 127, 128, 300_000, 2**40]),
        ask_price=price(),
        ask_quantity=rng.choice([0, 5, 16_384]),
        volume=rng.choice([0, 1, 10**12]),
        open_price=price(),
        high_price=price(),
        low_price=price(),
        exchange_time_ns=rng.choice(
            [0, 1_000_000_000, 1_768_646_701_123_000_000, 5, 1_768_646_701_000_000_000]
        ),
        sequence=rng.choice([0, 1, 1_795_315_639_571_283]),
    )


def test_decoding_round_trips() -> None:
    rng = random.Random(11)
    for _ in range(200):
        quote = random_quote(rng)
        back = decode_quote(encode_quote(quote))
        assert back.state() == quote.state()
        assert (back.symbol, back.sequence, back.exchange_time_ns) == (
            quote.symbol,
            quote.sequence,
            quote.exchange_time_ns,
        )


def test_concatenated_quotes_are_a_tick_batch() -> None:
    rng = random.Random(3)
    quotes = [random_quote(rng) for _ in range(50)]
    batch = tick_pb2.TickBatch.FromString(repeated_field(1, [encode_quote(q) for q in quotes]))
    assert list(batch.quotes) == [quote_message(q) for q in quotes]
    response = marketdata_pb2.BatchGetQuotesResponse.FromString(
        repeated_field(1, [encode_quote(quotes[0])]) + repeated_field(2, [b"NOPE"])
    )
    assert list(response.unknown_symbols) == ["NOPE"]


def test_the_direct_encoding_is_protobufs_byte_for_byte() -> None:
    rng = random.Random(5)
    quotes = [random_quote(rng) for _ in range(300)]
    # Equal values written differently keep their own text; a zero close has no percentage.
    quotes += [
        Quote("INFY", previous_close=Decimal("100.0"), last_price=Decimal("99.5")),
        Quote("INFY", previous_close=Decimal("100.00"), last_price=Decimal("99.50")),
        Quote("INFY", previous_close=Decimal("0"), last_price=Decimal("1.00"), sequence=7),
        Quote("TCS", last_price=Decimal("3500.1234"), exchange_time_ns=999_999_999),
    ]
    for quote in quotes * 2:  # the second time from the caches
        assert encode_quote(quote) == quote_message(quote).SerializeToString()
