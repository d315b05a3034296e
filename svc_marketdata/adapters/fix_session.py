"""The market-data FIX session: initiator `BROKER_MD` → `EXCHANGE`.

quickfix runs the session on its own thread. Callbacks parse the message's raw text (cheap
and exact, see `fix_codec`) and hand the result to the application on the asyncio loop
through `ThreadBridge`, never blocking the FIX thread. Requests go out with
`Session.sendToTarget`, which quickfix makes safe to call from the loop's thread.

On every logon the application asks for the instrument master (SecurityListRequest 35=x,
all securities) and then subscribes to snapshot + incremental updates for every symbol
(MarketDataRequest 35=V, top of book). Messages marked PossDup (43=Y) are resent history: a
newer snapshot follows every logon, so they are skipped rather than allowed to move a quote
backwards.

Liveness: every message from the exchange, heartbeats included, stamps `last_heard_ns` (a
plain attribute write on quickfix's thread, read by the loop). When the exchange has been
silent a while the application probes it with a TestRequest (35=1), which any FIX engine
answers at once with a Heartbeat: silence after that means the exchange (or the path to
it) is stuck, even while the TCP connection stays open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import quickfix as fix
from prometheus_client import Counter

from svc_marketdata.adapters import fix_codec
from svc_marketdata.domain.depth import DEPTH_LEVELS
from svc_marketdata.domain.instruments import Instrument
from svc_marketdata.domain.quotes import SymbolUpdate
from svc_runtime.fix import ReconnectPacer, get_text, header_text, load_settings, log_out, set_text
from svc_runtime.ids import new_id

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent.parent / "config" / "initiator.cfg"
# Entry types we subscribe to: bid, offer, trade, open, close (previous), high, low, volume.
SUBSCRIBED_ENTRY_TYPES = ("0", "1", "2", "4", "5", "7", "8", "B")

FIX_MESSAGES = Counter("marketdata_fix_messages_total", "FIX application messages received", ["msg_type"])
FIX_SKIPPED = Counter("marketdata_fix_skipped_total", "FIX messages not applied", ["reason"])


class FeedHandler(Protocol):
    """The application side of the session (called on the asyncio loop)."""

    def on_logon(self) -> None: ...

    def on_logout(self) -> None: ...

    def on_security_list(self, instruments: Sequence[Instrument], ok: bool) -> None: ...

    def on_market_data(self, updates: Sequence[SymbolUpdate]) -> None: ...


class Bridge(Protocol):
    def call(self, fn: object, *args: object) -> None: ...


class MarketDataApplication(fix.Application):  # type: ignore[misc]
    """quickfix callbacks. They run on quickfix's thread: parse, hand over, return."""

    def __init__(self, bridge: Bridge, handler: FeedHandler) -> None:
        super().__init__()
        self.bridge = bridge
        self.handler = handler
        self.session_id: fix.SessionID | None = None
        # Symbols subscribed on the current logon: the exchange forgets subscriptions when a
        # session ends, so each logon starts empty.
        self.subscribed: set[str] = set()
        self.pacer: ReconnectPacer | None = None
        self._security_list: dict[str, list[Instrument]] = {}
        # Market data parsed on quickfix's thread, waiting for the loop (see `_hand_over`).
        self._queued: list[SymbolUpdate] = []
        self._queue_lock = threading.Lock()
        self.last_heard_ns = 0

    def onCreate(self, session_id: fix.SessionID) -> None:
        self.session_id = session_id

    def onLogon(self, session_id: fix.SessionID) -> None:
        self.last_heard_ns = time.time_ns()
        log.info("fix logon", extra={"session": session_id.toString()})
        self.subscribed = set()
        if self.pacer is not None:
            self.bridge.call(self.pacer.logged_on)
        self.bridge.call(self.handler.on_logon)

    def onLogout(self, session_id: fix.SessionID) -> None:
        log.info("fix logout", extra={"session": session_id.toString()})
        if self.pacer is not None:
            self.bridge.call(self.pacer.logged_out)
        self.bridge.call(self.handler.on_logout)

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        self.last_heard_ns = time.time_ns()
        msg_type = header_text(message, 35)
        if msg_type in ("3", "5"):  # session-level reject, logout: worth an operator's eye
            log.warning(
                "fix session message",
                extra={
                    "msg_type": msg_type,
                    "text": get_text(message, 58, ""),
                    "ref_seq": get_text(message, 45),
                },
            )

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        self.last_heard_ns = time.time_ns()
        msg_type = header_text(message, 35) or ""
        FIX_MESSAGES.labels(msg_type).inc()
        try:
            self._dispatch(msg_type, message)
        except fix_codec.FixFormatError as exc:
            FIX_SKIPPED.labels("malformed").inc()
            log.warning("unusable market-data message", extra={"msg_type": msg_type, "error": str(exc)})
        except Exception:  # an exception escaping into quickfix would reject the message
            FIX_SKIPPED.labels("error").inc()
            log.exception("market-data message failed", extra={"msg_type": msg_type})

    def _dispatch(self, msg_type: str, message: fix.Message) -> None:
        if msg_type in ("X", "W"):
            if header_text(message, 43) == "Y":
                FIX_SKIPPED.labels("possdup").inc()
                return
            raw = message.toString()
            updates = fix_codec.parse_incremental(raw) if msg_type == "X" else [fix_codec.parse_snapshot(raw)]
            self._hand_over(updates)
        elif msg_type == "y":
            self._on_security_list(fix_codec.parse_security_list(message.toString()))
        elif msg_type == "Y":  # MarketDataRequestReject
            log.error(
                "exchange rejected the market-data subscription",
                extra={"reason": get_text(message, 281, ""), "text": get_text(message, 58, "")},
            )
        elif msg_type == "j":  # BusinessMessageReject
            ref_type = get_text(message, 372, "")
            log.error(
                "exchange rejected a request",
                extra={
                    "ref_msg_type": ref_type,
                    "reason": get_text(message, 380, ""),
                    "text": get_text(message, 58, ""),
                },
            )
            if ref_type == "x":
                self.bridge.call(self.handler.on_security_list, [], False)

    def _hand_over(self, updates: list[SymbolUpdate]) -> None:
        """Queue updates for the loop; only the first of a batch wakes it. Waking the loop once
        per message cost more than parsing the message, and under load the loop now takes
        every message that came while it was busy in one call, in order."""
        with self._queue_lock:
            first = not self._queued
            self._queued.extend(updates)
        if first:
            self.bridge.call(self._deliver)

    def _deliver(self) -> None:
        with self._queue_lock:
            updates, self._queued = self._queued, []
        if updates:
            self.handler.on_market_data(updates)

    def _on_security_list(self, part: fix_codec.SecurityListPart) -> None:
        if part.result != "0":
            log.warning("security list request refused", extra={"result": part.result})
            self._security_list.pop(part.request_id, None)
            self.bridge.call(self.handler.on_security_list, [], False)
            return
        # A large master may come in fragments (LastFragment 893=N until the last one).
        collected = self._security_list.setdefault(part.request_id, [])
        collected.extend(part.instruments)
        if part.last_fragment:
            del self._security_list[part.request_id]
            self.bridge.call(self.handler.on_security_list, collected, bool(collected))


class FixMarketFeed:
    """Owns the quickfix initiator; implements the application's `MarketFeed` port."""

    def __init__(
        self,
        application: MarketDataApplication,
        *,
        host: str,
        port: int,
        work_dir: Path,
        message_log: bool = False,
    ) -> None:
        self.application = application
        store_dir, log_dir = work_dir / "store", work_dir / "log"
        store_dir.mkdir(parents=True, exist_ok=True)
        settings = load_settings(
            TEMPLATE,
            work_dir / "initiator.cfg",
            host=host,
            port=port,
            store_dir=store_dir,
            log_dir=log_dir,
        )
        store = fix.FileStoreFactory(settings)
        if message_log:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.initiator = fix.SocketInitiator(application, store, settings, fix.FileLogFactory(settings))
        else:
            # Every tick through a file log costs more than the tick itself; session events
            # are logged by the application callbacks instead.
            self.initiator = fix.SocketInitiator(application, store, settings)
        assert application.session_id is not None  # set by onCreate while the initiator was made
        self.pacer = ReconnectPacer(
            fix.Session.lookupSession(application.session_id), settings, application.session_id
        )
        application.pacer = self.pacer

    def start(self) -> None:
        """Start connecting (call it on the event loop)."""
        self.initiator.start()
        self.pacer.start()

    async def stop(self) -> None:
        """Log out; quickfix itself is left running until the process leaves
        (`svc_runtime.fix.log_out`)."""
        await self.pacer.stop()
        if self.application.session_id is not None:
            await log_out([self.application.session_id])

    def _send(self, message: fix.Message) -> bool:
        session_id = self.application.session_id
        if session_id is None:
            return False
        try:
            return bool(fix.Session.sendToTarget(message, session_id))
        except fix.SessionNotFound:
            return False

    def last_heard_ns(self) -> int:
        return self.application.last_heard_ns

    def probe(self) -> None:
        message = fix.Message()
        message.getHeader().setField(fix.MsgType("1"))
        set_text(message, 112, new_id("tr"))  # TestReqID: the Heartbeat that answers echoes it
        self._send(message)

    def request_instruments(self) -> None:
        message = fix.Message()
        message.getHeader().setField(fix.MsgType("x"))
        set_text(message, 320, new_id("slr"))  # SecurityReqID
        set_text(message, 559, "4")  # SecurityListRequestType = all securities
        if not self._send(message):
            log.warning("could not send the security list request")

    def subscribe(self, symbols: Sequence[str]) -> None:
        """Subscribe to the symbols not yet subscribed on this logon (a master that arrives
        after a fallback subscription adds only what is new)."""
        new = [s for s in symbols if s not in self.application.subscribed]
        if not new:
            return
        if self._send(self._market_data_request(new_id("mdr"), new)):
            self.application.subscribed.update(new)
            log.info("subscribed to market data", extra={"symbols": len(new)})
        else:
            log.warning("could not send the market-data subscription")

    @staticmethod
    def _market_data_request(request_id: str, symbols: Sequence[str]) -> fix.Message:
        message = fix.Message()
        message.getHeader().setField(fix.MsgType("V"))
        set_text(message, 262, request_id)  # MDReqID
        set_text(message, 263, "1")  # SubscriptionRequestType: snapshot + updates
        # MarketDepth: the levels served as L2 depth; the quote reads position 1 of them.
        set_text(message, 264, str(DEPTH_LEVELS))
        set_text(message, 265, "1")  # MDUpdateType: incremental refresh
        for entry_type in SUBSCRIBED_ENTRY_TYPES:
            group = fix.Group(267, 269)
            set_text(group, 269, entry_type)
            message.addGroup(group)
        for symbol in symbols:
            group = fix.Group(146, 55)
            set_text(group, 55, symbol)
            message.addGroup(group)
        return message
