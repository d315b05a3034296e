"""Every kind of message the simulator sends, rendered by its FIX codec and checked against the
standard FIX 4.4 data dictionary shipped with quickfix, as a strict FIX 4.4 counterparty
would: unknown tags, tags a message does not define, empty fields and values a field does not
allow are all failures.

The exchange runs in process (engine, order entry, market data) with sinks that render each
message exactly as the acceptor does, so no scenario needs a network session."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import quickfix as fix

from exchange_sim.adapters.fix import codec
from exchange_sim.adapters.fix.acceptor import FixAcceptor
from exchange_sim.app import messages as m
from exchange_sim.app.market_data import MarketData
from exchange_sim.app.order_entry import ExchangeIds, OrderEntry
from exchange_sim.domain import market_data as md
from exchange_sim.domain import matching as me
from exchange_sim.domain.instruments import Instrument
from svc_exec.adapters import fix_messages
from svc_exec.domain.model import ExecKind
from svc_runtime.fix import data_dictionary

INFY = Instrument("INFY", "Infosys Ltd", "IT", Decimal("0.05"), 1, Decimal("1500.00"))
TCS = Instrument("TCS", "TCS Ltd", "IT", Decimal("0.05"), 1, Decimal("3900.00"))
NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
BROKER = "BROKER"


def strict_dictionary() -> fix.DataDictionary:
    dictionary = fix.DataDictionary(str(data_dictionary()))
    dictionary.checkFieldsHaveValues(True)
    dictionary.checkUserDefinedFields(True)
    dictionary.checkFieldsOutOfOrder(True)
    return dictionary


class StrictCounterparty:
    """Renders what the exchange sends with its codec, adds a header, and validates it the way
    a strict FIX 4.4 session does: parsed from the wire text against the dictionary, then
    every field and value checked."""

    def __init__(self) -> None:
        self.dictionary = strict_dictionary()
        self.seq = 0
        self.sent: list[fix.Message] = []
        self.invalid: list[str] = []

    def check(self, message: fix.Message) -> None:
        self.seq += 1
        header = message.getHeader()
        header.setField(fix.BeginString(codec.BEGIN_STRING))
        header.setField(fix.SenderCompID("EXCHANGE"))
        header.setField(fix.TargetCompID(BROKER))
        header.setField(fix.MsgSeqNum(self.seq))
        header.setField(fix.SendingTime())
        wire = message.toString()
        try:
            parsed = fix.Message(wire, self.dictionary, True)
            self.dictionary.validate(parsed)
        except Exception as error:  # quickfix raises several exception types
            self.invalid.append(f"{error}: {wire.replace(chr(1), '|')}")
        self.sent.append(message)

    def field(self, message: fix.Message, tag: int) -> str:
        return message.getField(tag) if message.isSetField(tag) else ""

    def kinds(self) -> Counter[str]:
        """What was sent: 8/<ExecType>, 9, W, X, Y, y, j."""
        counts: Counter[str] = Counter()
        for message in self.sent:
            msg_type = message.getHeader().getField(35)
            counts[f"8/{message.getField(150)}" if msg_type == "8" else msg_type] += 1
        return counts

    # order entry
    def send_execution_report(self, report: m.ExecutionReport) -> None:
        self.check(codec.execution_report(report))

    def send_cancel_reject(self, reject: m.CancelReject) -> None:
        self.check(codec.cancel_reject(reject))

    # market data
    def send_snapshot(self, session: str, md_req_id: str, symbol: str, entries: list[md.Entry]) -> None:
        self.check(codec.market_data_snapshot(md_req_id, symbol, entries))

    def send_incremental(self, session: str, md_req_id: str, entries: list[md.Entry]) -> None:
        self.check(codec.market_data_incremental(md_req_id, entries))

    def send_md_reject(self, session: str, md_req_id: str, reason: str, text: str) -> None:
        self.check(codec.market_data_reject(md_req_id, reason, text))

    def send_security_list(self, session: str, **kwargs: object) -> None:
        self.check(codec.security_list(**kwargs))  # type: ignore[arg-type]


def new(cl: str, side: str, qty: str, order_type: str = "2", **terms: str) -> m.NewOrderRequest:
    return m.NewOrderRequest(cl, terms.pop("symbol", "INFY"), side, qty, order_type, **terms)


def every_order_entry_message(counterparty: StrictCounterparty) -> None:
    engine = me.MatchingEngine([INFY, TCS])
    entry = OrderEntry(engine, counterparty, ExchangeIds("X1"), lambda: NOW, counterparties=[BROKER])
    send = entry.new_order

    # New, rest, fill by another participant (partial then full), and the average price.
    send(BROKER, new("b1", "1", "10", price="1500.00", account="C1"))
    entry.place("MM", symbol="INFY", side=me.SELL, quantity=4, price=INFY.to_ticks(Decimal("1500.00")),
                order_type=me.LIMIT, tif=me.DAY)  # fmt: skip
    entry.place("MM", symbol="INFY", side=me.SELL, quantity=6, price=INFY.to_ticks(Decimal("1499.95")),
                order_type=me.LIMIT, tif=me.DAY)  # fmt: skip
    # Market, IOC and FOK orders and what they could not fill.
    entry.place("MM", symbol="INFY", side=me.SELL, quantity=3, price=INFY.to_ticks(Decimal("1500.10")),
                order_type=me.LIMIT, tif=me.DAY)  # fmt: skip
    send(BROKER, new("mkt", "1", "5", "1", account="C1"))
    send(BROKER, new("ioc", "1", "5", price="1500.00", time_in_force="3", account="C1"))
    send(BROKER, new("fok", "1", "5", price="1500.00", time_in_force="4", account="C1"))
    # Stop (SL-M) and stop-limit (SL) orders: accepted waiting, then triggered by a trade.
    send(BROKER, new("stop", "2", "2", "3", stop_price="1499.00", account="C2"))
    send(BROKER, new("stoplimit", "2", "2", "4", price="1498.00", stop_price="1499.00", account="C2"))
    entry.place("MM", symbol="INFY", side=me.BUY, quantity=10, price=INFY.to_ticks(Decimal("1498.50")),
                order_type=me.LIMIT, tif=me.DAY)  # fmt: skip
    entry.place("MM", symbol="INFY", side=me.SELL, quantity=1, price=INFY.to_ticks(Decimal("1498.50")),
                order_type=me.LIMIT, tif=me.DAY)  # fmt: skip
    # Cancel, replace, and their rejects (unknown order, too late, mismatch, duplicate).
    send(BROKER, new("r1", "1", "10", price="1490.00", account="C1"))
    entry.replace(BROKER, m.ReplaceRequest("r2", "r1", "INFY", "1", "8", "2", price="1490.00"))
    entry.replace(BROKER, m.ReplaceRequest("r3", "r2", "INFY", "1", "8", "1"))
    entry.cancel(BROKER, m.CancelRequest("r4", "r2", "INFY", "2"))
    entry.cancel(BROKER, m.CancelRequest("r5", "r2", "INFY", "1"))
    entry.cancel(BROKER, m.CancelRequest("r6", "r2", "INFY", "1"))
    entry.cancel(BROKER, m.CancelRequest("r7", "nobody", "INFY", "1"))
    entry.cancel(BROKER, m.CancelRequest("r5", "b1", "INFY", "1"))
    # Rejects of every reason: unknown symbol, band, lot/quantity, tick, type, time in force,
    # missing price, scenario, duplicate ClOrdID (same content: status; other content: reject).
    send(BROKER, new("x1", "1", "1", price="1.00", symbol="NOPE"))
    send(BROKER, new("x2", "1", "1", price="9000.00"))
    send(BROKER, new("x3", "1", "0", price="1500.00"))
    send(BROKER, new("x4", "1", "1", price="1500.01"))
    send(BROKER, new("x5", "1", "1", "P", price="1500.00"))
    send(BROKER, new("x6", "1", "1", price="1500.00", time_in_force="2"))
    send(BROKER, new("x7", "1", "1"))
    entry.reject_next.remaining = 1
    send(BROKER, new("x8", "1", "1", price="1500.00"))
    send(BROKER, new("x8", "1", "1", price="1500.00"))
    send(BROKER, new("x8", "2", "1", price="1500.00"))
    # Self-trade prevention.
    send(BROKER, new("st1", "2", "5", price="1495.00", account="C3"))
    send(BROKER, new("st2", "1", "5", price="1495.00", account="C3"))
    # Halts: refused new orders and replaces, accepted cancels.
    send(BROKER, new("h1", "1", "3", price="1480.00", account="C4"))
    engine.halt(None, "market-wide circuit breaker level 1")
    send(BROKER, new("h2", "1", "3", price="1480.00"))
    entry.replace(BROKER, m.ReplaceRequest("h3", "h1", "INFY", "1", "2", "2", price="1480.00"))
    engine.resume(None)
    # Status and mass status: known, unknown, none at all (another session's view).
    entry.status(BROKER, m.StatusRequest("h1", "INFY", "1", status_request_id="s1"))
    entry.status(BROKER, m.StatusRequest("ghost", "INFY", "1", status_request_id="s2"))
    entry.mass_status(BROKER, m.MassStatusRequest("ms1", m.MASS_STATUS_ALL))
    entry.mass_status(BROKER, m.MassStatusRequest("ms2", m.MASS_STATUS_SECURITY, symbol="TCS"))
    # The close: every working order expires.
    send(BROKER, new("e1", "1", "2", "4", price="1490.00", stop_price="1510.00", symbol="TCS"))
    engine.session_open = False
    send(BROKER, new("closed", "1", "1", price="1500.00"))
    entry.publish(engine.expire_day_orders())


def every_market_data_message(counterparty: StrictCounterparty) -> None:
    engine = me.MatchingEngine([INFY, TCS])
    data = MarketData(engine, counterparty, interval_seconds=0.1, max_entries=3, clock_ns=lambda: 1)
    engine.submit("a", "INFY", me.BUY, 10, INFY.to_ticks(Decimal("1499.95")))
    engine.submit("b", "INFY", me.SELL, 7, INFY.to_ticks(Decimal("1500.05")))
    data.handle("MD", m.SecurityListRequest("sl1", "4"))
    data.handle("MD", m.SecurityListRequest("sl2", "0", "NOPE"))
    data.handle("MD", m.MarketDataRequest("md1", "1", 0, (), ("INFY", "TCS"), "1"))
    data.handle("MD", m.MarketDataRequest("md2", "0", 1, ("0", "1", "2"), ("INFY",), "0"))
    engine.drain_changed()
    engine.submit("c", "INFY", me.BUY, 3, INFY.to_ticks(Decimal("1500.05")))
    engine.submit("c", "TCS", me.SELL, 3, TCS.to_ticks(Decimal("3900.05")))
    engine.submit("a", "INFY", me.BUY, 10, INFY.to_ticks(Decimal("1499.90")))
    data.publish()
    engine.cancel(1)
    data.publish()
    # Rejects: unknown symbol, duplicate id, bad subscription type, unsupported entry type.
    data.handle("MD", m.MarketDataRequest("md3", "1", 1, (), ("NOPE",), "1"))
    data.handle("MD", m.MarketDataRequest("md1", "1", 1, (), ("INFY",), "1"))
    data.handle("MD", m.MarketDataRequest("md4", "9", 1, (), ("INFY",), "1"))
    data.handle("MD", m.MarketDataRequest("md5", "1", 1, ("Q",), ("INFY",), "1"))
    data.handle("MD", m.MarketDataRequest("md1", "2", 1, (), (), "1"))


def test_every_order_entry_message_is_valid_fix44() -> None:
    counterparty = StrictCounterparty()
    every_order_entry_message(counterparty)
    assert counterparty.invalid == []
    kinds = counterparty.kinds()
    # Every ExecType the exchange uses, and cancel rejects, were produced.
    for kind in ("8/0", "8/F", "8/4", "8/5", "8/8", "8/C", "8/I", "8/D", "9"):
        assert kinds[kind], f"no {kind} among {dict(kinds)}"


def test_a_stop_trigger_is_a_restatement_for_market_option() -> None:
    counterparty = StrictCounterparty()
    every_order_entry_message(counterparty)
    triggers = [msg for msg in counterparty.sent if counterparty.field(msg, 150) == m.EXEC_RESTATED]
    assert sorted(counterparty.field(msg, 11) for msg in triggers) == ["stop", "stoplimit"]
    for msg in triggers:
        assert counterparty.field(msg, 378) == str(m.RESTATED_MARKET_OPTION)
        assert counterparty.field(msg, 39) == m.STATUS_NEW
        assert counterparty.field(msg, 40) in ("3", "4")
    assert counterparty.invalid == []


def test_every_market_data_message_is_valid_fix44() -> None:
    counterparty = StrictCounterparty()
    every_market_data_message(counterparty)
    assert counterparty.invalid == []
    kinds = counterparty.kinds()
    for kind in ("W", "X", "Y", "y"):
        assert kinds[kind], f"no {kind} among {dict(kinds)}"


def test_the_business_reject_is_valid_fix44(tmp_path: Path) -> None:
    counterparty = StrictCounterparty()
    acceptor = FixAcceptor.__new__(FixAcceptor)
    acceptor.send = lambda _session, message: counterparty.check(message) or True  # type: ignore[method-assign]
    acceptor._business_reject(BROKER, "AE", "7", "unsupported message type")
    assert counterparty.kinds()["j"] == 1
    assert counterparty.invalid == []


@pytest.mark.parametrize("exec_type", ["L"])
def test_the_strict_dictionary_refuses_fix50_exec_types(exec_type: str) -> None:
    """The check itself: FIX 5.0's Triggered (150=L) is not FIX 4.4."""
    counterparty = StrictCounterparty()
    counterparty.check(
        codec.execution_report(
            m.ExecutionReport(
                BROKER, "X1-1", "c", "X1-E1", exec_type, "0", "INFY", "1", "3", "0", 1, 1, 0, Decimal(0), NOW
            )
        )
    )
    assert counterparty.invalid


def test_the_broker_reads_the_restatement_of_a_stop_as_its_trigger() -> None:
    counterparty = StrictCounterparty()
    every_order_entry_message(counterparty)
    read = [
        fix_messages.execution_report(fix_messages.fields_of(msg.toString()))
        for msg in counterparty.sent
        if msg.getHeader().getField(35) == "8"
    ]
    triggered = sorted(r.cl_ord_id for r in read if r is not None and r.kind is ExecKind.TRIGGERED)
    assert triggered == ["stop", "stoplimit"]
