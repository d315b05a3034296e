"""A small FIX 4.4 market-data acceptor that stands in for the exchange in tests and benches.

It speaks the same session as the exchange simulator (`EXCHANGE` ← `BROKER_MD`): answers
SecurityListRequest (35=x) with a SecurityList (35=y), MarketDataRequest (35=V) with one
snapshot (35=W) per symbol, and sends incremental refreshes (35=X) when told to. It keeps a
little state per symbol (last, bid, ask, volume) so snapshots after a reconnect are right.

The acceptor runs in a child process, driven over a pipe by `ExchangeDouble`: quickfix
registers sessions process-wide (two acceptors of one session in a process steal each
other's logons) and can crash while stopping a session whose counterparty was just killed;
in a child neither reaches the test runner, and its FIX work does not compete with the
test's event loop for the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import quickfix as fix
import quickfix44 as fix44

from svc_runtime.fix import data_dictionary, header_text, set_text
from svc_runtime.infra.processes import die_with_parent_from_now, free_port

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
    position: int | None = None  # 290: depth level, 1 = best


def fix_time(at: datetime) -> tuple[str, str]:
    """(MDEntryDate, MDEntryTime) in UTC with milliseconds."""
    return at.strftime("%Y%m%d"), at.strftime("%H:%M:%S.") + f"{at.microsecond // 1000:03d}"


class _Acceptor(fix.Application):  # type: ignore[misc]
    """The quickfix side, in the child process."""

    def __init__(
        self,
        work_dir: Path,
        listing: Sequence[Listed] = DEFAULT_LISTING,
        port: int = 0,
        *,
        answer_security_list: bool = True,
        persist_messages: bool = True,
        snapshot_delay: float = 0.0,
    ) -> None:
        super().__init__()
        # Seconds between a subscription and its snapshots (0: at once).
        self.snapshot_delay = snapshot_delay
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

    def start(self) -> None:
        assert self.acceptor is not None
        self.acceptor.start()

    def stop(self) -> None:
        if self.acceptor is not None:
            self.acceptor.stop(True)  # no logout handshake: the broker may already be gone
            self.acceptor = None

    def logged_on(self) -> bool:
        return self._logged_on.is_set()

    def counters(self) -> dict[str, object]:
        return {
            "logons": self.logons,
            "security_list_requests": self.security_list_requests,
            "subscriptions": [list(s) for s in self.subscriptions],
        }

    def book_copy(self) -> dict[str, Book]:
        with self._lock:
            return {symbol: replace(book) for symbol, book in self.books.items()}

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
            request_id = message.getField(262)

            def snapshots() -> None:
                for symbol in symbols:
                    if symbol in self.books:
                        self._send_snapshot(symbol, request_id)

            if self.snapshot_delay:
                threading.Timer(self.snapshot_delay, snapshots).start()
            else:
                snapshots()

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
            if entry.position is not None:
                set_text(group, 290, entry.position)
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
        elif entry.entry_type == "0" and entry.position in (None, 1):
            book.bid = None if entry.action == "2" else (entry.price or "0", entry.size or 0)
        elif entry.entry_type == "1" and entry.position in (None, 1):
            book.ask = None if entry.action == "2" else (entry.price or "0", entry.size or 0)

    def set_last(self, symbol: str, price: str) -> None:
        """Change the book without a message: only the next snapshot will say so."""
        with self._lock:
            self.books[symbol].last = price

    # --- load generation ---------------------------------------------------------------------

    def prepare(self, batches: list[list[Entry]]) -> int:
        """Build incremental refreshes once, to be sent again and again by `send_prepared`
        (quickfix renumbers each send): the cost of a send is then quickfix's alone."""
        self._prepared = [self.incremental(entries) for entries in batches]
        self._next_prepared = 0
        return len(self._prepared)

    def send_prepared(self, count: int) -> int:
        for _ in range(count):
            self.send(self._prepared[self._next_prepared])
            self._next_prepared = (self._next_prepared + 1) % len(self._prepared)
        return count

    def start_feeder(self, symbols: list[str], ticks_per_symbol: float, slots: int = 10) -> None:
        """Trade every symbol `ticks_per_symbol` times a second, stamped with the current
        time: `slots` messages a round, each for a slice of the symbols."""
        self._feeding = threading.Event()
        groups = [symbols[i::slots] for i in range(slots)]
        period = 1.0 / ticks_per_symbol / slots
        stop = self._feeding

        def run() -> None:
            next_at = time.perf_counter()
            for n in itertools.count():
                if stop.is_set():
                    return
                price = str(Decimal(200) + Decimal("0.05") * (n % 100))
                group = groups[n % slots]
                if group:
                    self.send(self.incremental([Entry(s, "2", price, 1) for s in group]))
                next_at += period
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)

        self._feeder = threading.Thread(target=run, daemon=True)
        self._feeder.start()

    def stop_feeder(self) -> None:
        self._feeding.set()
        self._feeder.join(timeout=10)


# --- the child process and its proxy -----------------------------------------------------------


def _serve(
    conn: Connection, work_dir: Path, listing: list[Listed], port: int, options: dict[str, Any]
) -> None:
    """The child: run the acceptor and answer the parent's calls until told to stop."""
    die_with_parent_from_now(signal.SIGKILL)
    acceptor = _Acceptor(work_dir, listing, port, **options)
    acceptor.start()
    conn.send(("ok", None))
    while True:
        try:
            method, args, kwargs = conn.recv()
        except EOFError:
            break
        if method == "stop":
            conn.send(("ok", None))
            break
        try:
            conn.send(("ok", getattr(acceptor, method)(*args, **kwargs)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    # Leave without stopping quickfix: the process exit closes its sockets, and nothing can
    # crash on the way out.
    os._exit(0)


class ExchangeDouble:
    """Drives an exchange double in a child process; the methods mirror the acceptor's."""

    def __init__(
        self,
        work_dir: Path,
        listing: Sequence[Listed] = DEFAULT_LISTING,
        port: int = 0,
        *,
        answer_security_list: bool = True,
        persist_messages: bool = True,
        snapshot_delay: float = 0.0,
    ) -> None:
        self.work_dir = work_dir
        self.listing = list(listing)
        self.port = port or free_port()
        self._options = {
            "answer_security_list": answer_security_list,
            "persist_messages": persist_messages,
            "snapshot_delay": snapshot_delay,
        }
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> ExchangeDouble:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child, self.work_dir, self.listing, self.port, self._options),
            daemon=True,
            name="exchange-double",
        )
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(60) or parent.recv() != ("ok", None):
            self.stop()
            raise RuntimeError("the exchange double did not start")
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(Exception):
            self._call("stop")
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def freeze(self) -> None:
        """Stop the exchange dead (SIGSTOP): its connection stays open but nothing more
        comes out of it, not even heartbeats — a hung venue or a black-holed path."""
        assert self._process is not None and self._process.pid is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None and self._process.pid is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """kill -9: the connection drops at once."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the exchange double is not running")
            self._conn.send((method, args, kwargs))
            status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"exchange double: {value}")
        return value

    # What it received, for assertions.
    @property
    def logged_on(self) -> bool:
        return bool(self._call("logged_on"))

    @property
    def logons(self) -> int:
        return int(self._call("counters")["logons"])

    @property
    def security_list_requests(self) -> int:
        return int(self._call("counters")["security_list_requests"])

    @property
    def subscriptions(self) -> list[list[str]]:
        return list(self._call("counters")["subscriptions"])

    @property
    def books(self) -> dict[str, Book]:
        return dict(self._call("book_copy"))

    async def wait_subscribed(self, count: int = 1, timeout: float = 60.0) -> list[str]:
        """Wait until `count` subscriptions arrived in total; the symbols of the last one."""
        deadline = time.monotonic() + timeout
        while len(subscriptions := self.subscriptions) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no market-data subscription after {timeout}s")
            await asyncio.sleep(0.05)
        return subscriptions[-1]

    # What it sends.
    def send_updates(self, entries: Iterable[Entry], at: datetime | None = None) -> None:
        """One incremental refresh (35=X) with these entries; the books follow. Sent while
        the broker is away, it is stored and resent (PossDup) when the broker logs on again."""
        self._call("send_updates", list(entries), at)

    def trade(self, symbol: str, price: str | Decimal, size: int = 10, at: datetime | None = None) -> None:
        """A trade: last price and the day's cumulative volume."""
        self._call("trade", symbol, str(price), size, at)

    def quote(
        self, symbol: str, bid: tuple[str, int], ask: tuple[str, int], at: datetime | None = None
    ) -> None:
        self._call("quote", symbol, bid, ask, at)

    def set_last(self, symbol: str, price: str) -> None:
        """Change the book without a message: only the next snapshot will say so."""
        self._call("set_last", symbol, price)

    def prepare(self, batches: list[list[Entry]]) -> int:
        return int(self._call("prepare", batches))

    def send_prepared(self, count: int) -> int:
        return int(self._call("send_prepared", count))

    def start_feeder(self, symbols: list[str], ticks_per_symbol: float) -> None:
        self._call("start_feeder", symbols, ticks_per_symbol)

    def stop_feeder(self) -> None:
        self._call("stop_feeder")
