"""A FIX acceptor brokermesh did not write: built on `simplefix` (parsing and encoding only)
over plain sockets and threads, with its own session layer, sharing no code with svc_exec,
svc_runtime.fix or quickfix.

Session: Logon, Heartbeat every HeartBtInt, TestRequest answered, sequence numbers kept
across reconnects (the initiator keeps its own), a ResendRequest answered with
SequenceReset-GapFill, a gap in the initiator's numbers answered with a ResendRequest,
Logout answered.

Trading, in one of several dialects (`Venue`): every LIMIT order fills at once at its
limit price, in one fill or two; cancels are accepted; status requests answered, refused
or denied; a report the broker cannot map on request. What it received is kept for the
test to inspect.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import simplefix

SOH = b"\x01"


@dataclass(frozen=True)
class Venue:
    """How this venue speaks."""

    name: str
    begin_string: str = "FIX.4.4"
    # "F": FIX 4.4 Trade; "12": FIX 4.2 style 150=1 (partial) / 150=2 (fill).
    fill_exec_types: str = "F"
    send_new: bool = True
    two_fills: bool = False
    custom_tags: bool = False  # tags 5000+ on every report, as many venues add
    omit_optional: bool = False  # no Text, TransactTime, OrderQty, Price on reports
    # Status requests: "answer", "refuse" (35=j, 380=5), "deny" (OrdStatus=8, OrdRejReason=5).
    status: str = "answer"
    # Status requests must name the venue's OrderID (37) once the venue has given it out, as
    # many venues require; refused (35=j, 380=5) otherwise.
    status_needs_order_id: bool = False
    # Hold orders instead of filling them (for status questions about working orders).
    rest: bool = False
    # Lose this many cancels: taken off the wire, never acted on (a venue that crashed
    # between counting a message and acting on it).
    lose_cancels: int = 0
    # After the New, a report the broker cannot map (ExecType D, restated).
    restate: bool = False
    # A News message (35=B) after each New: an application message the broker does not handle.
    news: bool = False
    # ExecIDs: "unique" for good; "per_order", counted per order (1, 2, …), as venues whose
    # ids are unique only within an order (the profile must say ExecIDScope=ORDER); "zero",
    # 0 on every report (ExecIDScope=NONE).
    exec_ids: str = "unique"
    sender: str = "EXCHANGE"
    target: str = "BROKER"

    @property
    def fix42(self) -> bool:
        return self.begin_string == "FIX.4.2"


@dataclass
class Order:
    cl_ord_id: str
    order_id: str
    symbol: str
    side: str
    quantity: int
    price: str
    cum_qty: int = 0
    status: str = "0"
    reports: int = 0


@dataclass
class Received:
    messages: list[simplefix.FixMessage] = field(default_factory=list)

    def of_type(self, msg_type: str) -> list[simplefix.FixMessage]:
        return [m for m in self.messages if m.get(35) == msg_type.encode()]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


class Acceptor:
    def __init__(self, venue: Venue, heartbeat: int = 30) -> None:
        self.venue = venue
        self.heartbeat = heartbeat
        self.received = Received()
        self.orders: dict[str, Order] = {}
        self.next_out = 1
        self.next_in = 1
        self.logons = 0
        self.lost_cancels = 0
        self._ids = itertools.count(1)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name=f"acceptor-{venue.name}", daemon=True)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> Acceptor:
        self._thread.start()
        return self

    def drop_connection(self) -> None:
        """Cut the session, as a venue restarting does; the broker reconnects."""
        conn = self._conn
        if conn is not None:
            conn.shutdown(socket.SHUT_RDWR)

    def forget(self) -> None:
        """Lose the book, as a venue restarting without its orders."""
        with self._lock:
            self.orders.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._conn = conn
                try:
                    self._session(conn)
                except OSError:
                    pass
                finally:
                    self._conn = None

    # --- session layer ----------------------------------------------------------------------
    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        parser = simplefix.FixParser()
        logged_on = False
        last_sent = last_heard = time.monotonic()
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
                if not data:
                    return
                parser.append_buffer(data)
            except TimeoutError:
                pass
            while (message := parser.get_message()) is not None:
                last_heard = time.monotonic()
                if not self._checksum_ok(message):
                    continue  # a garbled message is ignored, as FIX says
                msg_type = (message.get(35) or b"").decode()
                seq = int(message.get(34) or 0)
                if msg_type == "A":
                    self.heartbeat = int(message.get(108) or self.heartbeat)
                    if message.get(141) == b"Y":
                        self.next_in, self.next_out = 1, 1
                    self._send({35: "A", 98: "0", 108: str(self.heartbeat)})
                    self.logons += 1
                    logged_on = True
                    self._check_sequence(message, seq)
                    continue
                if not logged_on:
                    return  # anything before a Logon: drop the connection
                if msg_type == "4":  # SequenceReset (gap fill or reset)
                    self.next_in = int(message.get(36) or self.next_in)
                    continue
                if not self._check_sequence(message, seq):
                    continue
                if msg_type == "0":
                    continue
                if msg_type == "1":
                    self._send({35: "0", 112: (message.get(112) or b"").decode()})
                elif msg_type == "2":
                    self._gap_fill(message)
                elif msg_type == "5":
                    self._send({35: "5"})
                    return
                elif msg_type in ("3", "j"):  # the broker refused something: noted, never answered
                    with self._lock:
                        self.received.messages.append(message)
                else:
                    with self._lock:
                        self.received.messages.append(message)
                    self._application(message, msg_type)
            now = time.monotonic()
            if logged_on and now - last_sent >= self.heartbeat:
                self._send({35: "0"})
                last_sent = now
            if logged_on and now - last_heard > 2.5 * self.heartbeat:
                return  # the counterparty is gone

    @staticmethod
    def _checksum_ok(message: simplefix.FixMessage) -> bool:
        # simplefix does not verify the checksum; the venue does.
        raw = message.encode(raw=True)
        body, _, trailer = raw.rpartition(b"10=")
        expected = int(trailer.rstrip(SOH) or b"-1")
        return sum(body) % 256 == expected

    def _check_sequence(self, message: simplefix.FixMessage, seq: int) -> bool:
        """True if the message is the next expected one (a resent one is let through)."""
        if seq == self.next_in:
            self.next_in += 1
            return True
        if seq > self.next_in:
            self._send({35: "2", 7: str(self.next_in), 16: "0"})
            self.next_in = seq + 1  # the resend fills the gap; keep going (lenient venue)
            return True
        return False  # seen already (a resend): never acted on twice

    def _gap_fill(self, message: simplefix.FixMessage) -> None:
        """Nothing is resent: everything up to now is skipped with one GapFill."""
        begin = int(message.get(7) or 1)
        self._send({35: "4", 123: "Y", 36: str(self.next_out)}, seq=begin, poss_dup=True)

    def _send(self, fields: dict[int, str], *, seq: int | None = None, poss_dup: bool = False) -> None:
        conn = self._conn
        if conn is None:
            return
        with self._lock:
            message = simplefix.FixMessage()
            message.append_pair(8, self.venue.begin_string, header=True)
            message.append_pair(35, fields.pop(35), header=True)
            message.append_pair(49, self.venue.sender, header=True)
            message.append_pair(56, self.venue.target, header=True)
            number = seq if seq is not None else self.next_out
            message.append_pair(34, str(number), header=True)
            if poss_dup:
                message.append_pair(43, "Y", header=True)
                message.append_pair(122, _now(), header=True)
            message.append_pair(52, _now(), header=True)
            for tag, value in fields.items():
                if value is not None and value != "":
                    message.append_pair(tag, value)
            if seq is None:
                self.next_out += 1
            else:
                self.next_out = max(self.next_out, number + 1)
            with contextlib.suppress(OSError):
                conn.sendall(message.encode())

    # --- trading --------------------------------------------------------------------------
    def _application(self, message: simplefix.FixMessage, msg_type: str) -> None:
        if msg_type == "D":
            self._new_order(message)
        elif msg_type == "F":
            self._cancel(message)
        elif msg_type == "H":
            self._status(message)
        elif msg_type == "AF" and not self.venue.fix42:
            self._mass_status(message)
        else:
            self._send({35: "j", 45: (message.get(34) or b"").decode(), 372: msg_type, 380: "3"})

    def _text(self, message: simplefix.FixMessage, tag: int) -> str:
        return (message.get(tag) or b"").decode()

    def _new_order(self, message: simplefix.FixMessage) -> None:
        order = Order(
            cl_ord_id=self._text(message, 11),
            order_id=f"V{next(self._ids)}",
            symbol=self._text(message, 55),
            side=self._text(message, 54),
            quantity=int(self._text(message, 38)),
            price=self._text(message, 44),
        )
        self.orders[order.cl_ord_id] = order
        if self.venue.send_new:
            self._report(order, exec_type="0")
        if self.venue.news:
            self._send({35: "B", 148: f"order {order.cl_ord_id} seen", 33: "1", 58: "hello"})
        if self.venue.restate:
            self._report(order, exec_type="D")
            return
        if self.venue.rest:
            return
        if self.venue.two_fills and order.quantity > 1:
            self._fill(order, order.quantity // 2)
        self._fill(order, order.quantity - order.cum_qty)

    def _fill(self, order: Order, quantity: int) -> None:
        order.cum_qty += quantity
        done = order.cum_qty >= order.quantity
        order.status = "2" if done else "1"
        # FIX 4.4: Trade; FIX 4.2 style: partial fill (1) or fill (2).
        exec_type = "F" if self.venue.fill_exec_types == "F" else ("2" if done else "1")
        self._report(order, exec_type=exec_type, last_qty=quantity)

    def _cancel(self, message: simplefix.FixMessage) -> None:
        if self.lost_cancels < self.venue.lose_cancels:
            self.lost_cancels += 1
            return
        order = self.orders.get(self._text(message, 41))
        if order is None or order.status in ("2", "4"):
            self._send(
                {
                    35: "9",
                    11: self._text(message, 11),
                    41: self._text(message, 41),
                    37: "NONE",
                    39: "8",
                    434: "1",
                    102: "1",
                }
            )
            return
        order.status = "4"
        self.orders[self._text(message, 11)] = order
        self._report(order, exec_type="4", cl_ord_id=self._text(message, 11), orig=order.cl_ord_id)

    def _status(self, message: simplefix.FixMessage) -> None:
        missing = [tag for tag in (11, 55, 54) if not message.get(tag)]
        known = self.orders.get(self._text(message, 11))
        if (
            self.venue.status_needs_order_id
            and known is not None
            and message.get(37) != known.order_id.encode()
        ):
            missing.append(37)
        if self.venue.fix42 and message.get(790):
            # FIX 4.2 has no OrdStatusReqID: a strict 4.2 venue refuses the tag.
            self._send(
                {
                    35: "3",
                    45: self._text(message, 34),
                    371: "790",
                    372: "H",
                    373: "2",
                    58: "Tag not defined for this message type",
                }
            )
            return
        if missing or self.venue.status == "refuse":
            tag = str(missing[0]) if missing else "37"
            self._send(
                {35: "j", 45: self._text(message, 34), 372: "H", 380: "5", 58: f"Required tag missing: {tag}"}
            )
            return
        order = self.orders.get(self._text(message, 11))
        if order is None or self.venue.status == "deny":
            self._send(
                {
                    35: "8",
                    37: "NONE",
                    11: self._text(message, 11),
                    17: f"S{next(self._ids)}",
                    **(
                        {20: "3", 150: "8"} if self.venue.fix42 else {150: "I", 790: self._text(message, 790)}
                    ),
                    39: "8",
                    103: "5",
                    55: self._text(message, 55),
                    54: self._text(message, 54),
                    151: "0",
                    14: "0",
                    6: "0",
                    58: "Unknown order",
                }
            )
            return
        self._status_report(order, status_req_id=self._text(message, 790))

    def _mass_status(self, message: simplefix.FixMessage) -> None:
        request_id = self._text(message, 584)
        working = [o for o in {id(o): o for o in self.orders.values()}.values() if o.status in ("0", "1")]
        if not working:
            self._send(
                {
                    35: "8",
                    37: "NONE",
                    17: f"S{next(self._ids)}",
                    150: "I",
                    39: "0",
                    584: request_id,
                    912: "Y",
                    55: "NONE",
                    54: "1",
                    151: "0",
                    14: "0",
                    6: "0",
                }
            )
            return
        for number, order in enumerate(working, 1):
            self._status_report(order, mass_id=request_id, total=len(working), last=number == len(working))

    def _status_report(
        self, order: Order, *, status_req_id: str = "", mass_id: str = "", total: int = 0, last: bool = False
    ) -> None:
        fields: dict[int, str] = {35: "8", 37: order.order_id, 11: order.cl_ord_id, 17: f"S{next(self._ids)}"}
        if self.venue.fix42:
            fields.update({20: "3", 150: order.status})
        else:
            fields.update({150: "I", 790: status_req_id, 584: mass_id})
            if mass_id:
                fields.update({911: str(total), 912: "Y" if last else "N"})
        fields.update(self._figures(order))
        self._send(fields)

    def _figures(self, order: Order) -> dict[int, str]:
        return {
            39: order.status,
            55: order.symbol,
            54: order.side,
            38: order.quantity and str(order.quantity),
            44: order.price,
            14: str(order.cum_qty),
            151: str(0 if order.status in ("2", "4", "8") else order.quantity - order.cum_qty),
            6: order.price if order.cum_qty else "0",
        }

    def _report(
        self, order: Order, *, exec_type: str, last_qty: int = 0, cl_ord_id: str = "", orig: str = ""
    ) -> None:
        status = {"0": "0", "4": "4", "D": order.status}.get(exec_type, order.status)
        order.status = status
        order.reports += 1
        exec_id = {"per_order": str(order.reports), "zero": "0"}.get(
            self.venue.exec_ids, f"E{next(self._ids)}"
        )
        fields: dict[int, str] = {
            35: "8",
            37: order.order_id,
            11: cl_ord_id or order.cl_ord_id,
            41: orig,
            17: exec_id,
        }
        if self.venue.fix42:
            fields[20] = "0"
        fields[150] = exec_type
        fields.update(self._figures(order))
        if last_qty:
            fields.update({32: str(last_qty), 31: order.price})
        if not self.venue.omit_optional:
            fields.update(
                {
                    60: _now(),
                    58: {"0": "accepted", "4": "cancelled", "D": "restated by the venue"}.get(exec_type, ""),
                }
            )
        else:
            fields.pop(38, None)
            fields.pop(44, None)
            fields.pop(6, None)  # AvgPx: required by FIX 4.4, left out by some venues
        if self.venue.custom_tags:
            fields.update({5001: "desk-7", 9730: "P", 20001: "custom"})
        self._send(fields)


VENUES = {
    "fix42": Venue("fix42", begin_string="FIX.4.2", fill_exec_types="12"),
    "fix44": Venue("fix44"),
    "fix44-common": Venue(
        "fix44-common",
        fill_exec_types="12",
        send_new=False,
        two_fills=True,
        custom_tags=True,
        omit_optional=True,
        exec_ids="per_order",
    ),
}
