"""A small, standards-following FIX 4.4 acceptor that stands in for the stock exchange.

By default it behaves like QuickFIX's example "executor": every NewOrderSingle is accepted
and filled at once, in full, at its limit price. Tests switch it to other behaviours — let
orders rest and fill them by hand, reject symbols, halt trading, lose a report on the wire,
drop the session — to exercise svc_exec's recovery. It answers OrderCancelRequest,
OrderCancelReplaceRequest, OrderStatusRequest and OrderMassStatusRequest the way FIX 4.4
describes, and validates everything against the standard FIX44.xml.

It runs as its own process, like a real venue, and
takes test instructions over a local control socket (`ExchangeProcess` is the test side).
Its session settings come from `acceptor.cfg` beside this file, so the executor's FIX is
exercised against a counterparty configured by file, not code.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import quickfix as fix

from svc_runtime.fix import get_text, header_text, load_settings, set_text
from svc_runtime.infra.processes import die_with_parent, free_port

CONFIG = Path(__file__).with_name("acceptor.cfg")
TERMINAL = {"2", "4", "8", "C"}


def _now() -> str:
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime()) + ".000"


@dataclass
class VenueOrder:
    exchange_order_id: str
    cl_ord_id: str  # the current one: a replace moves it along the chain
    symbol: str
    side: str
    quantity: int
    price: Decimal | None
    cl_ord_ids: list[str] = field(default_factory=list)
    cum_qty: int = 0
    notional: Decimal = Decimal(0)
    status: str = "0"

    @property
    def leaves(self) -> int:
        return 0 if self.status in TERMINAL else self.quantity - self.cum_qty

    @property
    def avg_px(self) -> Decimal:
        return (self.notional / self.cum_qty).quantize(Decimal("0.0001")) if self.cum_qty else Decimal(0)


class TestExchange(fix.Application):
    """The acceptor application. `policy` is "fill" (acknowledge, then fill at once at the
    limit price), "executor" (exactly QuickFIX's example executor: one fill report per order,
    counters for ids, every other message type refused as unsupported) or "rest"
    (acknowledge only; fill with `fill`)."""

    def __init__(self, policy: str = "fill") -> None:
        super().__init__()
        self.policy = policy
        self.lock = threading.RLock()
        self.orders: dict[str, VenueOrder] = {}  # every ClOrdID of the chain -> order
        self.new_orders: Counter[str] = Counter()  # ClOrdID -> NewOrderSingles seen
        self.rejects: list[tuple[str, str]] = []  # session-level Rejects from the broker: (tag, text)
        self.unknown_symbols: set[str] = set()
        self.halted = False
        self.losing_next_fill = False
        self.logged_on = threading.Event()
        self.session_id: fix.SessionID | None = None
        self._ids = f"{secrets.token_hex(3)}"
        self._next = 0

    # --- quickfix callbacks (FIX thread) ------------------------------------------------
    def onCreate(self, session_id: fix.SessionID) -> None:
        self.session_id = session_id

    def onLogon(self, session_id: fix.SessionID) -> None:
        self.logged_on.set()

    def onLogout(self, session_id: fix.SessionID) -> None:
        self.logged_on.clear()

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        if header_text(message, 35) == "3":
            with self.lock:
                self.rejects.append((get_text(message, 371) or "", get_text(message, 58) or ""))

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        msg_type = header_text(message, 35)
        with self.lock:
            handler = {
                "D": self._on_new_order,
                "F": self._on_cancel,
                "G": self._on_replace,
                "H": self._on_status,
                "AF": self._on_mass_status,
            }.get(msg_type or "")
            if handler is None or (self.policy == "executor" and msg_type != "D"):
                # quickfix answers with a BusinessMessageReject (380=3, unsupported type).
                raise fix.UnsupportedMessageType()
            handler(message)

    # --- order handling -----------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        self._next += 1
        if self.policy == "executor":
            return str(self._next)  # plain counters, like the example executor's
        return f"{prefix}{self._ids}-{self._next}"

    def _on_new_order(self, message: fix.Message) -> None:
        cl_ord_id = get_text(message, 11) or ""
        self.new_orders[cl_ord_id] += 1
        symbol = get_text(message, 55) or ""
        price_text = get_text(message, 44)
        order = VenueOrder(
            exchange_order_id=self._id("X"),
            cl_ord_id=cl_ord_id,
            symbol=symbol,
            side=get_text(message, 54) or "1",
            quantity=int(Decimal(get_text(message, 38) or "0")),
            price=Decimal(price_text) if price_text else None,
            cl_ord_ids=[cl_ord_id],
        )
        if self.new_orders[cl_ord_id] > 1:
            order.exchange_order_id = "NONE"
            self._report(order, "8", "8", text="duplicate ClOrdID")
            return
        if symbol in self.unknown_symbols:
            order.status = "8"
            self._report(order, "8", "8", text=f"unknown symbol {symbol}")
            return
        if self.halted:
            order.status = "8"
            self._report(order, "8", "8", text="trading halted")
            return
        self.orders[cl_ord_id] = order
        if self.policy == "executor":
            # QuickFIX's example executor: one report, the whole order filled at its price.
            self._fill(order, order.quantity, order.price or Decimal(0))
            return
        self._report(order, "0", "0")
        if self.policy == "fill" and order.price is not None:
            self._fill(order, order.quantity, order.price)

    def _fill(self, order: VenueOrder, quantity: int, price: Decimal) -> None:
        quantity = min(quantity, order.leaves)
        if quantity <= 0:
            return
        order.cum_qty += quantity
        order.notional += price * quantity
        order.status = "2" if order.cum_qty == order.quantity else "1"
        if self.losing_next_fill:
            self.losing_next_fill = False
            self._lose()
            return
        self._report(order, "F", order.status, last_qty=quantity, last_px=price)

    def _on_cancel(self, message: fix.Message) -> None:
        cl_ord_id = get_text(message, 11) or ""
        orig = get_text(message, 41) or ""
        order = self.orders.get(orig)
        if order is None or order.status in TERMINAL or order.cl_ord_id != orig:
            self._cancel_reject(
                cl_ord_id, orig, order, "1", "too late to cancel" if order else "unknown order"
            )
            return
        order.status = "4"
        order.cl_ord_ids.append(cl_ord_id)
        order.cl_ord_id = cl_ord_id
        self.orders[cl_ord_id] = order
        self._report(order, "4", "4", orig_cl_ord_id=orig)

    def _on_replace(self, message: fix.Message) -> None:
        cl_ord_id = get_text(message, 11) or ""
        orig = get_text(message, 41) or ""
        order = self.orders.get(orig)
        quantity = int(Decimal(get_text(message, 38) or "0"))
        if order is None or order.status in TERMINAL or order.cl_ord_id != orig or quantity < order.cum_qty:
            self._cancel_reject(cl_ord_id, orig, order, "2", "cannot replace" if order else "unknown order")
            return
        price_text = get_text(message, 44)
        order.quantity = quantity
        order.price = Decimal(price_text) if price_text else order.price
        order.cl_ord_ids.append(cl_ord_id)
        order.cl_ord_id = cl_ord_id
        self.orders[cl_ord_id] = order
        if order.cum_qty == order.quantity:
            order.status = "2"
        self._report(order, "5", order.status, orig_cl_ord_id=orig)

    def _on_status(self, message: fix.Message) -> None:
        cl_ord_id = get_text(message, 11) or ""
        request_id = get_text(message, 790)
        order = self.orders.get(cl_ord_id)
        if order is None:
            unknown = VenueOrder(
                "NONE", cl_ord_id, get_text(message, 55) or "", get_text(message, 54) or "1", 0, None
            )
            extra = {103: "5"}
            if request_id:
                extra[790] = request_id
            self._report(unknown, "I", "8", text="unknown order", extra=extra)
            return
        self._report(order, "I", order.status, extra={790: request_id} if request_id else None)

    def _on_mass_status(self, message: fix.Message) -> None:
        request_id = get_text(message, 584) or ""
        seen: set[str] = set()
        open_orders = []
        for order in self.orders.values():
            if order.exchange_order_id in seen or order.status in TERMINAL:
                continue
            seen.add(order.exchange_order_id)
            open_orders.append(order)
        if not open_orders:
            # FIX 4.4: with nothing to report, one report with OrdStatus=Rejected says so.
            none = VenueOrder("NONE", "NONE", "NA", "1", 0, None)
            self._report(none, "I", "8", text="no orders", extra={584: request_id, 911: "0", 912: "Y"})
            return
        for index, order in enumerate(open_orders, start=1):
            extra = {584: request_id, 911: str(len(open_orders))}
            if index == len(open_orders):
                extra[912] = "Y"
            self._report(order, "I", order.status, extra=extra)

    # --- messages out ---------------------------------------------------------------------
    def _execution_report(
        self,
        order: VenueOrder,
        exec_type: str,
        status: str,
        *,
        last_qty: int = 0,
        last_px: Decimal | None = None,
        text: str | None = None,
        orig_cl_ord_id: str | None = None,
        extra: dict[int, str] | None = None,
    ) -> fix.Message:
        message = fix.Message()
        set_text(message.getHeader(), 35, "8")
        set_text(message, 37, order.exchange_order_id)
        set_text(message, 11, order.cl_ord_id)
        if orig_cl_ord_id:
            set_text(message, 41, orig_cl_ord_id)
        set_text(message, 17, self._id("E"))
        set_text(message, 150, exec_type)
        set_text(message, 39, status)
        set_text(message, 55, order.symbol)
        set_text(message, 54, order.side)
        set_text(message, 38, order.quantity)
        if order.price is not None:
            set_text(message, 44, order.price)
            set_text(message, 40, "2")
        set_text(message, 151, order.leaves if status not in TERMINAL else 0)
        set_text(message, 14, order.cum_qty)
        set_text(message, 6, order.avg_px)
        if exec_type == "F":
            set_text(message, 32, last_qty)
            set_text(message, 31, last_px or Decimal(0))
        if text:
            set_text(message, 58, text)
        set_text(message, 60, _now())
        for tag, value in (extra or {}).items():
            set_text(message, tag, value)
        return message

    def _report(self, order: VenueOrder, exec_type: str, status: str, **kwargs: object) -> None:
        message = self._execution_report(order, exec_type, status, **kwargs)  # type: ignore[arg-type]
        fix.Session.sendToTarget(message, self.session_id)

    def _cancel_reject(
        self, cl_ord_id: str, orig: str, order: VenueOrder | None, response_to: str, text: str
    ) -> None:
        message = fix.Message()
        set_text(message.getHeader(), 35, "9")
        set_text(message, 37, order.exchange_order_id if order else "NONE")
        set_text(message, 11, cl_ord_id)
        set_text(message, 41, orig)
        set_text(message, 39, order.status if order else "8")
        set_text(message, 434, response_to)
        set_text(message, 102, "0" if order else "1")
        set_text(message, 58, text)
        fix.Session.sendToTarget(message, self.session_id)

    def _lose(self) -> None:
        """Consume the next outgoing sequence number without sending or storing anything: the
        report is lost for good, and a resend request for it gets a SequenceReset-GapFill
        (what venues that do not replay execution reports do)."""
        session = fix.Session.lookupSession(self.session_id)
        session.setNextSenderMsgSeqNum(session.getExpectedSenderNum() + 1)

    # --- test control (any thread) --------------------------------------------------------
    def fill(self, cl_ord_id: str, quantity: int, price: Decimal | str) -> None:
        with self.lock:
            self._fill(self.orders[cl_ord_id], quantity, Decimal(price))

    def fill_all(self, quantity: int, price: Decimal | str | None = None) -> int:
        """Fill `quantity` more of every working order (at its limit unless `price`)."""
        with self.lock:
            working = {o.exchange_order_id: o for o in self.orders.values() if o.status not in TERMINAL}
            for order in working.values():
                self._fill(
                    order, quantity, Decimal(price) if price is not None else order.price or Decimal(1)
                )
            return len(working)

    def drop_session(self) -> None:
        """Cut the TCP connection without a Logout, as a network failure would."""
        fix.Session.lookupSession(self.session_id).disconnect()

    def order(self, cl_ord_id: str) -> VenueOrder:
        with self.lock:
            return self.orders[cl_ord_id]

    def snapshot(self) -> dict[str, tuple[str, int]]:
        """Original ClOrdID -> (OrdStatus, filled quantity) of every order."""
        with self.lock:
            return {o.cl_ord_ids[0]: (o.status, o.cum_qty) for o in self.orders.values()}

    def next_sender_seq(self) -> int:
        return int(fix.Session.lookupSession(self.session_id).getExpectedSenderNum())

    def new_orders_received(self) -> dict[str, int]:
        with self.lock:
            return dict(self.new_orders)

    def is_logged_on(self) -> bool:
        return self.logged_on.is_set()

    def set_policy(self, policy: str) -> None:
        self.policy = policy

    def halt(self, halted: bool = True) -> None:
        self.halted = halted

    def add_unknown_symbol(self, symbol: str) -> None:
        self.unknown_symbols.add(symbol)

    def lose_next_fill(self) -> None:
        self.losing_next_fill = True

    def session_rejects(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.rejects)

    def send_report(self, cl_ord_id: str, overrides: dict[int, str]) -> None:
        """An extra ExecutionReport for an order with some fields replaced (malformed ones too)."""
        with self.lock:
            order = self.orders[cl_ord_id]
            message = self._execution_report(order, "F", "1", last_qty=1, last_px=order.price)
            for tag, value in overrides.items():
                set_text(message, tag, value)
            fix.Session.sendToTarget(message, self.session_id)


class ExchangeServer:
    """The acceptor process: quickfix on its threads, instructions on the main thread."""

    def __init__(self, workdir: Path, port: int, policy: str) -> None:
        self.app = TestExchange(policy)
        self.settings = load_settings(
            CONFIG,
            workdir / "acceptor.rendered.cfg",
            port=port,
            store_dir=workdir / "store",
            log_dir=workdir / "log",
        )
        self.store_factory = fix.FileStoreFactory(self.settings)
        self.log_factory = fix.FileLogFactory(self.settings)
        self.acceptor = fix.SocketAcceptor(self.app, self.store_factory, self.settings, self.log_factory)

    def serve(self, control: str) -> None:
        self.acceptor.start()
        with Listener(control, authkey=AUTHKEY) as listener:
            while True:
                with listener.accept() as conn:
                    while True:
                        try:
                            name, args = conn.recv()
                        except EOFError:
                            break
                        try:
                            conn.send((True, getattr(self.app, name)(*args)))
                        except Exception as error:
                            conn.send((False, repr(error)))


AUTHKEY = b"brokermesh-test-exchange"


class ExchangeProcess:
    """Test side of the acceptor process: `exchange.fill(...)` runs `TestExchange.fill` there."""

    def __init__(self, workdir: Path, *, policy: str = "fill", port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.policy = policy
        self.control = str(workdir / "control.sock")
        self.process: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None

    def start(self) -> ExchangeProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "acceptor.out").open("ab")
        self.process = subprocess.Popen(
            # Imported by name (not run as __main__) so that its classes pickle by name.
            die_with_parent(
                [sys.executable, "-c", "from tests.exec.acceptor import main; main()", *self._args()],
                signal.SIGKILL,
            ),
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.conn = Client(self.control, authkey=AUTHKEY)
                return self
            except (FileNotFoundError, ConnectionRefusedError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the test exchange did not start: {(self.workdir / 'acceptor.out').read_text()}"
                    ) from None
                time.sleep(0.02)

    def _args(self) -> list[str]:
        return [str(self.workdir), str(self.port), self.policy]

    def call(self, name: str, *args: object) -> Any:
        assert self.conn is not None
        self.conn.send((name, args))
        ok, result = self.conn.recv()
        if not ok:
            raise RuntimeError(f"test exchange: {name} failed: {result}")
        return result

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.call(name, *args)

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, policy: str | None = None) -> ExchangeProcess:
        """A new exchange process on the same port and store: sessions continue, the day's
        orders and the id counters start again."""
        self.stop()
        self.policy = policy or self.policy
        (self.workdir / "control.sock").unlink(missing_ok=True)
        return self.start()


def main() -> None:
    workdir, port, policy = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ExchangeServer(workdir, port, policy).serve(str(workdir / "control.sock"))
