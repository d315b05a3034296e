"""A small FIX 4.4 market-data acceptor that stands in for the exchange in tests and benches.

It speaks the same session as the exchange simulator (`EXCHANGE` ← `BROKER_MD`): answers
SecurityListRequest (35=x) with a SecurityList (35=y), MarketDataRequest (35=V) with one
snapshot (35=W) per symbol, and sends incremental refreshes (35=X) when told to. It keeps a
little state per symbol (last, bid, ask, volume) so snapshots after a reconnect are right.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import quickfix as fix
import quickfix44 as fix44

from svc_runtime.fix import data_dictionary, header_text, set_text
from svc_runtime.infra.processes import free_port

ACCEPTOR_CFG = """\
[DEFAULT]
ConnectionType=acceptor
BeginString=FIX.4.4
SenderCompID=EXCHANGE
SocketAcceptHost=127.0.0.1
SocketAcceptPort={port}
StartTime=00:00:00
EndTime=00:00:00
UseDataDictionary=Y
DataDictionary={dictionary}
FileStorePath={store}
ResetOnLogon=N
ResetOnLogout=N
ResetOnDisconnect=N
PersistMessages={persist}

[SESSION]
TargetCompID=BROKER_MD
"""


@dataclass(frozen=True)
class Listed:
    symbol: str
    name: str
    sector: str
    previous_close: str
    lot_size: int = 1
    isin: str = ""
    tick_size: str = "0.05"


DEFAULT_LISTING = (
    Listed("INFY", "Infosys Limited", "IT", "1500.00", isin="INE009A01021"),
    Listed("TCS", "Tata Consultancy Services Limited", "IT", "3500.00", lot_size=5, tick_size="0.10"),
    Listed("TATAMOTORS", "Tata Motors Limited", "Automobile", "650.00"),
    Listed("TATASTEEL", "Tata Steel Limited", "Metals", "120.00"),
    Listed("RELIANCE", "Reliance Industries Limited", "Energy", "2400.00"),
    Listed("HDFCBANK", "HDFC Bank Limited", "Banking", "1600.00"),
    Listed("M&M", "Mahindra & Mahindra Limited", "Automobile", "1400.00"),
    Listed("BAJAJ-AUTO", "Bajaj Auto Limited", "Automobile", "5000.00"),
)


def synthetic_listing(count: int, *, prefix: str = "SYN") -> list[Listed]:
    """`count` made-up instruments (SYN0001 "Synthetic Industries 1" …) for volume tests."""
    return [
        Listed(f"{prefix}{n:04d}", f"Synthetic Industries {n}", "Test", f"{100 + n % 900}.00")
        for n in range(1, count + 1)
    ]


@dataclass
class Book:
    """What the double has told the broker about one symbol."""

    previous_close: str
    last: str | None = None
    last_size: int = 0
    bid: tuple[str, int] | None = None
    ask: tuple[str, int] | None = None
    volume: int = 0


@dataclass(frozen=True)
class Entry:
    """One MDEntry of an incremental refresh."""

    symbol: str
    entry_type: str  # 269: 0 bid, 1 offer, 2 trade, B volume, ...
    price: str | None = None
    size: int | None = None
    action: str = "1"  # 279: 0 new, 1 change, 2 delete


def fix_time(at: datetime) -> tuple[str, str]:
    """(MDEntryDate, MDEntryTime) in UTC with milliseconds."""
    return at.strftime("%Y%m%d"), at.strftime("%H:%M:%S.") + f"{at.microsecond // 1000:03d}"


class ExchangeDouble(fix.Application):  # type: ignore[misc]
    """Only one may run in a process at a time: quickfix registers sessions process-wide, and
    two acceptors of the same session (EXCHANGE ← BROKER_MD) would steal each other's logons."""

    _running: ExchangeDouble | None = None

    def __init__(
        self,
        work_dir: Path,
        listing: Sequence[Listed] = DEFAULT_LISTING,
        port: int = 0,
        *,
        answer_security_list: bool = True,
        persist_messages: bool = True,
    ) -> None:
        super().__init__()
        self.listing = list(listing)
        # False: requests for the instrument master go unanswered (a venue that is slow or
        # does not offer it).
        self.answer_security_list = answer_security_list
        self.port = port or free_port()
        self.books = {item.symbol: Book(item.previous_close) for item in self.listing}
        # What it received, for assertions.
        self.security_list_requests = 0
        self.subscriptions: list[list[str]] = []
        self.logons = 0
        self.session_id: fix.SessionID | None = None
        self._logged_on = threading.Event()
        self._lock = threading.Lock()
        store = work_dir / "exchange_store"
        store.mkdir(parents=True, exist_ok=True)
        cfg = work_dir / "acceptor.cfg"
        cfg.write_text(
            ACCEPTOR_CFG.format(
                port=self.port,
                dictionary=data_dictionary(),
                store=store,
                persist="Y" if persist_messages else "N",
            )
        )
        settings = fix.SessionSettings(str(cfg))
        self.acceptor: fix.SocketAcceptor | None = fix.SocketAcceptor(
            self, fix.FileStoreFactory(settings), settings
        )

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> ExchangeDouble:
        if ExchangeDouble._running is not None:
            raise RuntimeError("another ExchangeDouble is running in this process; stop it first")
        ExchangeDouble._running = self
        assert self.acceptor is not None, "a stopped double cannot be restarted"
        self.acceptor.start()
        return self

    def stop(self) -> None:
        if self.acceptor is not None:
            self.acceptor.stop(True)  # no logout handshake: the broker may already be gone
            # Destroying the acceptor unregisters its session from quickfix's process-wide
            # registry, so a later double can use the same session id.
            self.acceptor = None
        if ExchangeDouble._running is self:
            ExchangeDouble._running = None

    @property
    def logged_on(self) -> bool:
        return self._logged_on.is_set()

    async def wait_subscribed(self, count: int = 1, timeout: float = 60.0) -> list[str]:
        """Wait until `count` subscriptions arrived in total; the symbols of the last one."""
        deadline = time.monotonic() + timeout
        while len(self.subscriptions) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no market-data subscription after {timeout}s")
            await asyncio.sleep(0.05)
        return self.subscriptions[-1]

    # --- quickfix callbacks ----------------------------------------------------------------

    def onCreate(self, session_id: fix.SessionID) -> None:
        self.session_id = session_id

    def onLogon(self, session_id: fix.SessionID) -> None:
        self.logons += 1
        self._logged_on.set()

    def onLogout(self, session_id: fix.SessionID) -> None:
        self._logged_on.clear()

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        msg_type = header_text(message, 35)
        if msg_type == "x":
            self.security_list_requests += 1
            if self.answer_security_list:
                self._send_security_list(message.getField(320))
        elif msg_type == "V":
            group = fix.Group(146, 55)
            symbols = []
            for i in range(1, int(message.getField(146)) + 1):
                message.getGroup(i, group)
                symbols.append(group.getField(55))
            self.subscriptions.append(symbols)
            for symbol in symbols:
                if symbol in self.books:
                    self._send_snapshot(symbol, message.getField(262))

    # --- messages --------------------------------------------------------------------------

    def _send_security_list(self, request_id: str) -> None:
        """The master with exchange_sim's FIX 4.4 mapping: SecurityDesc, RoundLot, ISIN as
        SecurityID/22=4, Stipulations MININCR (tick size) and SECTOR, Text = sector, and the
        previous close as an instrument event (EventType 99, EventText PREVIOUS_CLOSE)."""
        message = fix.Message()
        message.getHeader().setField(fix.MsgType("y"))
        set_text(message, 320, request_id)
        set_text(message, 322, f"r{request_id}")
        set_text(message, 560, "0")
        related = fix44.SecurityList.NoRelatedSym()
        for item in self.listing:
            related.clear()
            set_text(related, 55, item.symbol)
            if item.isin:
                set_text(related, 48, item.isin)
                set_text(related, 22, "4")
            set_text(related, 107, item.name)
            event = fix44.SecurityList.NoRelatedSym.NoEvents()
            set_text(event, 865, "99")
            set_text(event, 867, item.previous_close)
            set_text(event, 868, "PREVIOUS_CLOSE")
            related.addGroup(event)
            for kind, value in (("SECTOR", item.sector), ("MININCR", item.tick_size)):
                stipulation = fix44.SecurityList.NoRelatedSym.NoStipulations()
                set_text(stipulation, 233, kind)
                set_text(stipulation, 234, value)
                related.addGroup(stipulation)
            set_text(related, 561, item.lot_size)
            set_text(related, 58, item.sector)
            message.addGroup(related)
        set_text(message, 393, len(self.listing))
        set_text(message, 893, "Y")
        self.send(message)

    def _send_snapshot(self, symbol: str, request_id: str) -> None:
        with self._lock:
            book = self.books[symbol]
            message = fix.Message()
            message.getHeader().setField(fix.MsgType("W"))
            set_text(message, 262, request_id)
            set_text(message, 55, symbol)
            date, at = fix_time(datetime.now(UTC))
            entries: list[tuple[str, str | None, int | None]] = [("5", book.previous_close, None)]
            if book.last is not None:
                entries.append(("2", book.last, book.last_size))
            if book.bid is not None:
                entries.append(("0", *book.bid))
            if book.ask is not None:
                entries.append(("1", *book.ask))
            entries.append(("B", None, book.volume))
            for entry_type, price, size in entries:
                group = fix.Group(268, 269)
                set_text(group, 269, entry_type)
                if price is not None:
                    set_text(group, 270, price)
                if size is not None:
                    set_text(group, 271, size)
                set_text(group, 272, date)
                set_text(group, 273, at)
                message.addGroup(group)
            self.send(message)

    def send_updates(self, entries: Iterable[Entry], at: datetime | None = None) -> None:
        """One incremental refresh (35=X) with these entries; the books follow. Sent while
        the broker is away, it is stored and resent (PossDup) when the broker logs on again."""
        entries = list(entries)
        with self._lock:
            for entry in entries:
                self._track(entry)
            self.send(self.incremental(entries, at))

    @staticmethod
    def incremental(entries: Iterable[Entry], at: datetime | None = None) -> fix.Message:
        """An incremental refresh (35=X), built but not sent: a load generator builds many up
        front and sends them again and again (quickfix renumbers each send)."""
        date, time_text = fix_time(at or datetime.now(UTC))
        message = fix.Message()
        message.getHeader().setField(fix.MsgType("X"))
        group = fix44.MarketDataIncrementalRefresh.NoMDEntries()
        for entry in entries:
            group.clear()
            set_text(group, 279, entry.action)
            set_text(group, 269, entry.entry_type)
            set_text(group, 55, entry.symbol)
            if entry.price is not None:
                set_text(group, 270, entry.price)
            if entry.size is not None:
                set_text(group, 271, entry.size)
            set_text(group, 272, date)
            set_text(group, 273, time_text)
            message.addGroup(group)
        return message

    def send(self, message: fix.Message) -> bool:
        """Send a built message; False if the session is not logged on (it is then stored for
        a resend if messages are persisted)."""
        assert self.session_id is not None
        return bool(fix.Session.sendToTarget(message, self.session_id))

    def trade(self, symbol: str, price: str | Decimal, size: int = 10, at: datetime | None = None) -> None:
        """A trade: last price and the day's cumulative volume."""
        volume = self.books[symbol].volume + size
        self.send_updates(
            [Entry(symbol, "2", str(price), size), Entry(symbol, "B", None, volume)],
            at=at,
        )

    def quote(
        self, symbol: str, bid: tuple[str, int], ask: tuple[str, int], at: datetime | None = None
    ) -> None:
        self.send_updates(
            [Entry(symbol, "0", bid[0], bid[1]), Entry(symbol, "1", ask[0], ask[1])],
            at=at,
        )

    def _track(self, entry: Entry) -> None:
        book = self.books.get(entry.symbol)
        if book is None:
            return
        if entry.entry_type == "2" and entry.price is not None:
            book.last, book.last_size = entry.price, entry.size or 0
        elif entry.entry_type == "B" and entry.size is not None:
            book.volume = entry.size
        elif entry.entry_type == "0":
            book.bid = None if entry.action == "2" else (entry.price or "0", entry.size or 0)
        elif entry.entry_type == "1":
            book.ask = None if entry.action == "2" else (entry.price or "0", entry.size or 0)
