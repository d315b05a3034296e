"""Market data crosses from quickfix's thread to the event loop in batches: the loop is woken
once for everything that arrived while it was busy, and gets it all, in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import quickfix as fix

from svc_marketdata.adapters.fix_session import MarketDataApplication
from svc_marketdata.domain.instruments import Instrument
from svc_marketdata.domain.quotes import SymbolUpdate
from svc_runtime.fix import data_dictionary

DICTIONARY = fix.DataDictionary(str(data_dictionary()))
SESSION = fix.SessionID("FIX.4.4", "BROKER_MD", "EXCHANGE")


class HeldBridge:
    """A loop that is busy: calls wait until `run` is called."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.calls.append((fn, args))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for fn, args in calls:
            fn(*args)


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[SymbolUpdate]] = []

    def on_logon(self) -> None: ...

    def on_logout(self) -> None: ...

    def on_security_list(self, instruments: Sequence[Instrument], ok: bool) -> None: ...

    def on_market_data(self, updates: Sequence[SymbolUpdate]) -> None:
        self.batches.append(list(updates))


def incremental(seq: int, *entries: tuple[str, str, str]) -> fix.Message:
    body = "".join(
        f"279=1\x01269={kind}\x0155={symbol}\x01270={price}\x01" for symbol, kind, price in entries
    )
    text = (
        f"8=FIX.4.4\x019=0\x0135=X\x0134={seq}\x0149=EXCHANGE\x0152=20260117-10:45:01.250\x01"
        f"56=BROKER_MD\x01268={len(entries)}\x01{body}10=000\x01"
    )
    return fix.Message(text, DICTIONARY, False)


def test_messages_that_arrive_while_the_loop_is_busy_reach_it_in_one_call_in_order() -> None:
    bridge, handler = HeldBridge(), Recorder()
    application = MarketDataApplication(bridge, handler)
    application.fromApp(incremental(1, ("INFY", "2", "1500.00"), ("TCS", "2", "3500.00")), SESSION)
    application.fromApp(incremental(2, ("INFY", "2", "1500.05")), SESSION)
    application.fromApp(incremental(3, ("TCS", "0", "3499.90")), SESSION)
    assert len(bridge.calls) == 1  # one wake-up for the three messages
    bridge.run()
    assert [[(u.symbol, u.entries[0].price) for u in batch] for batch in handler.batches] == [
        [
            ("INFY", Decimal("1500.00")),
            ("TCS", Decimal("3500.00")),
            ("INFY", Decimal("1500.05")),
            ("TCS", Decimal("3499.90")),
        ]
    ]
    # The next message after the batch was taken wakes the loop again.
    application.fromApp(incremental(4, ("INFY", "2", "1500.10")), SESSION)
    assert len(bridge.calls) == 1
    bridge.run()
    assert [u.symbol for u in handler.batches[-1]] == ["INFY"]
