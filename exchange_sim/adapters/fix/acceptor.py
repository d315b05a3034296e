"""The FIX acceptor: quickfix sessions in, app requests out, reports back.

quickfix calls back on its own thread. Callbacks only read the message into a plain request
(the message object is not valid after the callback returns) and hand it to the asyncio
loop through `ThreadBridge`; all exchange state is touched on the loop alone. Sending goes
the other way: the loop calls `Session.sendToTarget`, which is thread-safe and releases the
GIL while quickfix works.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path

import quickfix as fix

from exchange_sim.adapters.fix import codec
from exchange_sim.app import messages as m
from exchange_sim.app.exchange import SessionState
from exchange_sim.app.metrics import MD_MESSAGES, SESSIONS_LOGGED_ON
from exchange_sim.domain import market_data as md
from exchange_sim.domain.instruments import Instrument
from svc_runtime.fix import ThreadBridge, header_text, load_settings, log_out

log = logging.getLogger(__name__)

ORDER_ENTRY = "ORDER_ENTRY"
MARKET_DATA = "MARKET_DATA"
# A custom key in each [SESSION] of the .cfg; quickfix keeps keys it does not know.
ROLE_KEY = "SessionRole"

Dispatch = Callable[[str, object], None]
SessionEvent = Callable[[str, bool], None]


class FixAcceptor(fix.Application):  # type: ignore[misc]
    def __init__(
        self,
        *,
        template: Path,
        work_dir: Path,
        port: int,
        bridge: ThreadBridge,
        dispatch: Dispatch,
        on_session: SessionEvent,
        message_log: bool = False,
    ) -> None:
        super().__init__()
        self.template = template
        self.work_dir = work_dir
        self.port = port
        self.bridge = bridge
        self.dispatch = dispatch
        self.on_session = on_session
        self.message_log = message_log
        self.sessions: dict[str, fix.SessionID] = {}
        self.roles: dict[str, str] = {}
        self.logged_on: dict[str, bool] = {}
        self._acceptor: fix.SocketAcceptor | None = None
        self._settings = load_settings(
            template,
            work_dir / "acceptor.cfg",
            fix_port=port,
            store_dir=work_dir / "store",
            log_dir=work_dir / "log",
        )
        for session_id in self._settings.getSessions():
            counterparty = session_id.getTargetCompID().getValue()
            dictionary = self._settings.get(session_id)
            role = dictionary.getString(ROLE_KEY) if dictionary.has(ROLE_KEY) else ORDER_ENTRY
            if role not in (ORDER_ENTRY, MARKET_DATA):
                raise ValueError(f"{ROLE_KEY} of {counterparty} must be {ORDER_ENTRY} or {MARKET_DATA}")
            self.sessions[counterparty] = session_id
            self.roles[counterparty] = role
            self.logged_on[counterparty] = False

    def counterparties(self, role: str) -> list[str]:
        return [c for c, r in self.roles.items() if r == role]

    def counterparty_names(self) -> list[str]:
        return list(self.sessions)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        (self.work_dir / "store").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "log").mkdir(parents=True, exist_ok=True)
        store = fix.FileStoreFactory(self._settings)
        if self.message_log:
            logs = fix.FileLogFactory(self._settings)
            self._acceptor = fix.SocketAcceptor(self, store, self._settings, logs)
        else:
            # A file log of every market-data message costs more disk and CPU than the
            # message; session events are logged by the callbacks, sent messages are in the
            # FileStore.
            self._acceptor = fix.SocketAcceptor(self, store, self._settings)
        try:
            self._acceptor.start()
        except fix.RuntimeError as error:
            if "bind" not in str(error).lower():
                raise
            # As an OSError, so the process exits saying its port is taken (see svc_runtime.service).
            raise OSError(errno.EADDRINUSE, f"the FIX port {self.port} is taken: {error}") from error
        log.info("fix acceptor listening", extra={"port": self.port, "sessions": sorted(self.sessions)})

    async def stop(self, timeout: float = 3.0) -> bool:
        """Log the sessions out; False if some did not answer in time (see `svc_runtime.fix.log_out`:
        quickfix itself is left running until the process leaves)."""
        if self._acceptor is None:
            return True
        return await log_out(list(self.sessions.values()), timeout=timeout)

    # ---- quickfix callbacks (quickfix thread) ---------------------------------------------

    def onCreate(self, session_id: fix.SessionID) -> None:
        pass

    def onLogon(self, session_id: fix.SessionID) -> None:
        counterparty = session_id.getTargetCompID().getValue()
        self.bridge.call(self._session_changed, counterparty, True)

    def onLogout(self, session_id: fix.SessionID) -> None:
        counterparty = session_id.getTargetCompID().getValue()
        self.bridge.call(self._session_changed, counterparty, False)

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        counterparty = session_id.getTargetCompID().getValue()
        msg_type = header_text(message, 35) or ""
        parsers = (
            codec.MARKET_DATA_PARSERS
            if self.roles.get(counterparty) == MARKET_DATA
            else codec.ORDER_ENTRY_PARSERS
        )
        parser = parsers.get(msg_type)
        if parser is None:
            # quickfix answers with a BusinessMessageReject (35=j, 380=3).
            raise fix.UnsupportedMessageType()
        try:
            request = parser(message)
        except Exception:
            log.exception("unreadable message", extra={"counterparty": counterparty, "msg_type": msg_type})
            seq = header_text(message, 34) or "0"
            self.bridge.call(self._business_reject, counterparty, msg_type, seq, "message could not be read")
            return
        self.bridge.call(self.dispatch, counterparty, request)

    # ---- loop side ------------------------------------------------------------------------

    def _session_changed(self, counterparty: str, logged_on: bool) -> None:
        self.logged_on[counterparty] = logged_on
        SESSIONS_LOGGED_ON.labels(counterparty).set(1 if logged_on else 0)
        log.info(
            "fix session " + ("logged on" if logged_on else "logged out"),
            extra={"counterparty": counterparty},
        )
        self.on_session(counterparty, logged_on)

    def _business_reject(self, counterparty: str, msg_type: str, seq: str, text: str) -> None:
        message = fix.Message()
        message.getHeader().setField(fix.MsgType("j"))
        message.setField(fix.StringField(45, seq))
        message.setField(fix.StringField(372, msg_type))
        message.setField(fix.StringField(380, "0"))
        message.setField(fix.StringField(58, text))
        self.send(counterparty, message)

    def send(self, counterparty: str, message: fix.Message) -> bool:
        session_id = self.sessions.get(counterparty)
        if session_id is None:
            return False
        try:
            return bool(fix.Session.sendToTarget(message, session_id))
        except fix.SessionNotFound:
            log.warning("no such fix session", extra={"counterparty": counterparty})
            return False

    def send_execution_report(self, report: m.ExecutionReport) -> None:
        self.send(report.session, codec.execution_report(report))

    def send_cancel_reject(self, reject: m.CancelReject) -> None:
        self.send(reject.session, codec.cancel_reject(reject))

    def send_snapshot(self, session: str, md_req_id: str, symbol: str, entries: list[md.Entry]) -> None:
        if self.send(session, codec.market_data_snapshot(md_req_id, symbol, entries)):
            MD_MESSAGES.labels("W").inc()

    def send_incremental(self, session: str, md_req_id: str, entries: list[md.Entry]) -> None:
        if self.send(session, codec.market_data_incremental(md_req_id, entries)):
            MD_MESSAGES.labels("X").inc()

    def send_md_reject(self, session: str, md_req_id: str, reason: str, text: str) -> None:
        if self.send(session, codec.market_data_reject(md_req_id, reason, text)):
            MD_MESSAGES.labels("Y").inc()

    def send_security_list(
        self,
        session: str,
        *,
        request_id: str,
        response_id: str,
        result: str,
        instruments: list[Instrument],
        total: int,
        last: bool,
    ) -> None:
        message = codec.security_list(
            request_id,
            response_id=response_id,
            result=result,
            instruments=instruments,
            total=total,
            last=last,
        )
        if self.send(session, message):
            MD_MESSAGES.labels("y").inc()

    def drop(self, counterparty: str) -> bool:
        """Cut the connection without a Logout, as a network failure would."""
        session_id = self.sessions.get(counterparty)
        session = fix.Session.lookupSession(session_id) if session_id is not None else None
        if session is None or not session.isLoggedOn():
            return False
        session.disconnect()
        return True

    def state(self, counterparty: str) -> SessionState | None:
        session_id = self.sessions.get(counterparty)
        if session_id is None:
            return None
        session = fix.Session.lookupSession(session_id)
        return SessionState(
            session_id=session_id.toString(),
            counterparty=counterparty,
            role=self.roles[counterparty],
            logged_on=bool(session is not None and session.isLoggedOn()),
            next_sender_seq=session.getExpectedSenderNum() if session is not None else 0,
            next_target_seq=session.getExpectedTargetNum() if session is not None else 0,
        )
