"""The FIX order-entry session: quickfix's initiator, kept thin.

quickfix calls back on its own thread. The callbacks here only read the message into plain
domain values, register its sequence number as pending publication, and hand it to the
event loop (`ThreadBridge`); they never wait on the loop, except to bound the backlog when
JetStream is unreachable. Sending happens on the loop thread (quickfix's session mutex
makes that safe; the binding releases the GIL while it waits).

Session recovery is quickfix's: persistent FileStore, sequence numbers kept across
reconnects (ResetOn* = N), ResendRequest and SequenceReset-GapFill handled, reconnects
every ReconnectInterval, spaced out by `ReconnectPacer` while the exchange stays away. On top
of it, before logon the expected incoming sequence number is lowered to the first one not
yet safely published (see `svc_exec.domain.sequence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import quickfix as fix
from prometheus_client import Counter, Gauge

from svc_exec.adapters import fix_messages as fm
from svc_exec.adapters import venue
from svc_exec.domain.commands import Amendment, NewOrder, ReplaceOrder
from svc_exec.domain.model import Inbound, Side, VenueIncident
from svc_exec.domain.sequence import InboundProgress
from svc_runtime import aio
from svc_runtime.fix import ReconnectPacer, ThreadBridge, load_settings, log_out

log = logging.getLogger(__name__)

LOGGED_ON = Gauge("exec_fix_logged_on", "1 while the FIX order-entry session is logged on")
NEXT_SENDER = Gauge("exec_fix_next_sender_seq_num", "Next outgoing FIX sequence number")
NEXT_TARGET = Gauge("exec_fix_next_target_seq_num", "Next expected incoming FIX sequence number")
LOGONS = Counter("exec_fix_logons_total", "FIX logons")
MESSAGES_SENT = Counter("exec_fix_messages_sent_total", "Application messages sent", ["msg_type"])
MALFORMED = Counter("exec_fix_malformed_total", "Incoming messages svc_exec could not read")
BACKLOG_STALLS = Counter("exec_fix_backlog_stalls_total", "Times the FIX thread waited for JetStream")

InboundSink = Callable[[int | None, Inbound], None]
EXEC_ID_SCOPE = "ExecIDScope"


def _file_prefix(session_id: fix.SessionID) -> str:
    """How quickfix names a session's store and log files."""
    return "-".join(
        (
            session_id.getBeginString().getValue(),
            session_id.getSenderCompID().getValue(),
            session_id.getTargetCompID().getValue(),
        )
    )


class FileStoreReader:
    """Reads quickfix's FileStore of outgoing messages: `<prefix>.header` indexes
    `seq,offset,size` entries into `<prefix>.body`. Used only after a crash, to tell
    whether a recorded command made it into the store."""

    def __init__(self, store_dir: Path, session_id: fix.SessionID) -> None:
        prefix = _file_prefix(session_id)
        self.header = store_dir / f"{prefix}.header"
        self.body = store_dir / f"{prefix}.body"
        self.session_file = store_dir / f"{prefix}.session"

    def created_at(self) -> datetime:
        """When this generation of the store began (quickfix writes it on creation and reset)."""
        text = self.session_file.read_text().strip() if self.session_file.exists() else ""
        try:
            return datetime.strptime(text[:17], "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            return datetime.fromtimestamp(0, UTC)

    def message(self, seq: int) -> str | None:
        if not self.header.exists():
            return None
        entries = self.header.read_text().split()
        for entry in reversed(entries):
            number, offset, size = (int(part) for part in entry.split(","))
            if number == seq:
                with self.body.open("rb") as body:
                    body.seek(offset)
                    return body.read(size).decode("latin-1")
        return None

    def contains(self, cl_ord_id: str, msg_type: str, next_sender: int) -> bool:
        """Whether a message of `msg_type` for `cl_ord_id` holds its sequence number in the
        store, below `next_sender`: then it went out, or quickfix resends it when the exchange
        asks. quickfix writes a message to the store before it counts the number as used; a
        message written just before a crash, ahead of that count, lost its number to the next
        message sent (the Logon) and never reached the exchange."""
        if not self.body.exists() or not self.header.exists():
            return False
        holders = self._current_offsets(next_sender)
        data = self.body.read_bytes()
        needle = b"\x0111=" + cl_ord_id.encode() + b"\x01"
        wanted = b"\x0135=" + msg_type.encode() + b"\x01"
        position = data.find(needle)
        while position != -1:
            start = data.rfind(b"8=FIX", 0, position)
            if start in holders and wanted in data[start:position]:
                return True
            position = data.find(needle, position + 1)
        return False

    def _current_offsets(self, next_sender: int) -> set[int]:
        """Body offsets of the messages that hold numbers below `next_sender` (a number
        written twice belongs to its later message, as in quickfix's own index)."""
        offsets: dict[int, int] = {}
        for entry in self.header.read_text().split():
            parts = entry.split(",")
            if len(parts) == 3:  # the last entry may be half written while quickfix sends
                offsets[int(parts[0])] = int(parts[1])
        return {offset for number, offset in offsets.items() if number < next_sender}


class MessageLogReader:
    """Finds an incoming message in quickfix's FileLog (`<prefix>.messages.current.log`,
    one `time : message` line per message in and out). quickfix rejects a message its data
    dictionary refuses before the application sees it; its raw text is only in this log."""

    TAIL_BYTES = 1 << 20

    def __init__(self, log_dir: Path, session_id: fix.SessionID) -> None:
        prefix = _file_prefix(session_id)
        self.path = log_dir / f"{prefix}.messages.current.log"
        self.from_venue = f"{fm.SOH}49={session_id.getTargetCompID().getValue()}{fm.SOH}"

    def incoming(self, seq: int) -> str | None:
        if not self.path.exists():
            return None
        with self.path.open("rb") as log_file:
            log_file.seek(0, 2)
            size = log_file.tell()
            log_file.seek(max(0, size - self.TAIL_BYTES))
            lines = log_file.read().decode("latin-1").splitlines()
        wanted = f"{fm.SOH}34={seq}{fm.SOH}"
        for line in reversed(lines):
            _, _, message = line.partition(" : ")
            if wanted in message and self.from_venue in message:
                return message
        return None


class _Application(fix.Application):
    """quickfix's callbacks, forwarded to `FixSession` (runs on the FIX thread)."""

    def __init__(self, owner: FixSession) -> None:
        super().__init__()
        self.owner = owner

    def onCreate(self, session_id: fix.SessionID) -> None:
        self.owner.session_id = session_id

    def onLogon(self, session_id: fix.SessionID) -> None:
        self.owner.on_logon_thread()

    def onLogout(self, session_id: fix.SessionID) -> None:
        self.owner.on_logout_thread()

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        self.owner.on_admin_out_thread(message)

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        # quickfix itself answers an unsupported message type with a BusinessMessageReject.
        if message.getHeader().getField(fm.MSG_TYPE) == "j":
            self.owner.on_admin_out_thread(message)

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        self.owner.on_message_thread(message, admin=True)

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        self.owner.on_message_thread(message, admin=False)


class FixSession:
    """The order-entry session as svc_exec's ports see it (`OrderEntry`, `InboundCursor`)."""

    def __init__(
        self,
        *,
        template: Path,
        workdir: Path,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop,
        sink: InboundSink,
        on_logon: Callable[[], None] = lambda: None,
        on_logout: Callable[[], None] = lambda: None,
        max_backlog: int = 20_000,
    ) -> None:
        self.workdir = workdir
        self.store_dir = workdir / "store"
        self.log_dir = workdir / "log"
        self.settings = load_settings(
            template,
            workdir / "initiator.cfg",
            host=host,
            port=port,
            store_dir=self.store_dir,
            log_dir=self.log_dir,
            **venue.dictionaries(workdir, template.read_text()),
        )
        self.bridge = ThreadBridge(loop)
        self.sink = sink
        self._on_logon = on_logon
        self._on_logout = on_logout
        self.session_id: fix.SessionID | None = None
        self.progress = InboundProgress()
        self._lock = threading.Lock()
        self._backlog = threading.BoundedSemaphore(max_backlog)
        self._logged_on = asyncio.Event()
        self.last_receive_time: float | None = None
        self.last_send_time: float | None = None
        self.application = _Application(self)
        self.store_factory = fix.FileStoreFactory(self.settings)
        self.log_factory = fix.FileLogFactory(self.settings)
        # Creating the initiator creates (and loads) the session, but does not connect.
        self.initiator = fix.SocketInitiator(
            self.application, self.store_factory, self.settings, self.log_factory
        )
        if self.session_id is None:
            raise RuntimeError("the FIX settings define no session")
        self.session = fix.Session.lookupSession(self.session_id)
        self.pacer = ReconnectPacer(self.session, self.settings, self.session_id)
        self.reader = FileStoreReader(self.store_dir, self.session_id)
        self.message_log = MessageLogReader(self.log_dir, self.session_id)
        self.exec_id_scope = self._exec_id_scope()
        dictionary = self.settings.get(self.session_id)
        self.begin_string = self.session_id.getBeginString().getValue()
        self.speech = venue.speech(
            self.begin_string,
            dictionary.getString(venue.DIALECT) if dictionary.has(venue.DIALECT) else "STANDARD",
        )

    def _exec_id_scope(self) -> str:
        """svc_exec's own session setting `ExecIDScope`: VENUE (the default: the venue's
        ExecIDs are unique for good), ORDER (unique only within an order's day) or NONE (not
        unique at all; see `fix_messages.execution_report`)."""
        dictionary = self.settings.get(self.session_id)
        scope = dictionary.getString(EXEC_ID_SCOPE) if dictionary.has(EXEC_ID_SCOPE) else "VENUE"
        if scope not in ("VENUE", "ORDER", "NONE"):
            raise ValueError(f"{EXEC_ID_SCOPE} must be VENUE, ORDER or NONE, not {scope!r}")
        return scope

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def session_key(self) -> str:
        assert self.session_id is not None
        return self.session_id.toString()

    @property
    def store_created_at(self) -> datetime:
        # A new trading day or a manual reset starts a new store generation.
        return self.reader.created_at()

    @property
    def store_created(self) -> str:
        return self.store_created_at.isoformat()

    def resume_from(self, next_target: int) -> None:
        """Before logon: expect incoming messages from `next_target` on."""
        current = self.session.getExpectedTargetNum()
        if next_target < current:
            log.warning(
                "lowering the expected incoming sequence number: the exchange will resend what was "
                "received but not yet published",
                extra={"from": current, "to": next_target},
            )
            self.session.setNextTargetMsgSeqNum(next_target)

    def start(self) -> None:
        self.initiator.start()
        self.pacer.start()
        log.info("FIX initiator started", extra={"session": self.session_key})

    async def stop(self) -> None:
        """Log out; quickfix itself is left running until the process leaves
        (`svc_runtime.fix.log_out`)."""
        await self.pacer.stop()
        if self.session_id is not None:
            await log_out([self.session_id])

    # --- callbacks (FIX thread) -----------------------------------------------------------------
    def on_logon_thread(self) -> None:
        self.bridge.call(self._logon)

    def on_logout_thread(self) -> None:
        self.bridge.call(self._logout)

    def _logon(self) -> None:
        LOGONS.inc()
        LOGGED_ON.set(1)
        self._logged_on.set()
        self.pacer.logged_on()
        log.info("FIX session logged on", extra={"session": self.session_key, **self.sequence_numbers()})
        self._on_logon()

    def _logout(self) -> None:
        LOGGED_ON.set(0)
        self._logged_on.clear()
        self.pacer.logged_out()
        log.warning("FIX session logged out", extra={"session": self.session_key})
        self._on_logout()

    def on_admin_out_thread(self, message: fix.Message) -> None:
        """A Reject (35=3) or BusinessMessageReject (35=j) we send: quickfix refused an
        incoming message (its data dictionary, or svc_exec's reading of it). Never silent:
        it becomes an incident with the refused message's raw text from the FIX log."""
        fields = fm.fields_of(message)
        msg_type = fields.get(fm.MSG_TYPE, "")
        if msg_type not in ("3", "j"):
            return
        ref_seq_text = fields.get(fm.REF_SEQ_NUM, "")
        ref_seq = int(ref_seq_text) if ref_seq_text.isdigit() else None
        refused = self.message_log.incoming(ref_seq) if ref_seq is not None else None
        refused_fields = fm.fields_of(refused) if refused else {}
        code = fields.get(fm.SESSION_REJECT_REASON if msg_type == "3" else fm.BUSINESS_REJECT_REASON, "?")
        incident = VenueIncident(
            kind="session_reject_sent" if msg_type == "3" else "business_reject_sent",
            reason=f"{fields.get(fm.REF_MSG_TYPE) or refused_fields.get(fm.MSG_TYPE, '?')}:{code}",
            text=fields.get(fm.TEXT, "")
            + (f" (tag {fields[fm.REF_TAG_ID]})" if fm.REF_TAG_ID in fields else ""),
            raw=fm.raw_text(refused) if refused else f"(not in the FIX log) {fm.raw_text(fields)}",
            cl_ord_id=refused_fields.get(fm.CL_ORD_ID, ""),
            ref_msg_type=refused_fields.get(fm.MSG_TYPE, fields.get(fm.REF_MSG_TYPE, "")),
            ref_seq=ref_seq,
            exchange_order_id=refused_fields.get(fm.ORDER_ID, "")
            if refused_fields.get(fm.MSG_TYPE) == "8"
            else "",
        )
        # Held back from the safe resume point until stored: after a crash the venue resends
        # the refused message and the incident is raised again.
        with self._lock:
            if ref_seq is not None:
                self.progress.received(ref_seq)
        self.bridge.call(self.sink, ref_seq, incident)

    def on_message_thread(self, message: fix.Message, *, admin: bool) -> None:
        self.last_receive_time = time.time()
        fields = fm.fields_of(message)
        msg_type = fields.get(fm.MSG_TYPE, "")
        if admin:
            if msg_type == "5" and fields.get(fm.TEXT):
                log.warning("logout from the exchange", extra={"text": fields[fm.TEXT]})
            if msg_type != "3":
                return
        seq = int(fields.get(fm.MSG_SEQ_NUM) or 0)
        try:
            item = self._read(fields, msg_type)
        except fm.MalformedMessage as error:
            MALFORMED.inc()
            log.error("malformed message from the exchange", extra={"error": str(error), "seq": seq})
            # Standard FIX: reject it at the session level, the exchange sees why.
            raise fix.IncorrectTagValue(error.tag) from error
        if item is None:
            if not admin and msg_type not in ("8", "9", "j"):
                raise fix.UnsupportedMessageType()
            return
        if not self._backlog.acquire(timeout=5.0):
            # JetStream is not keeping up: hold the FIX thread back (TCP pushes back on the
            # exchange), but never indefinitely, so the session's own work goes on.
            BACKLOG_STALLS.inc()
            log.warning("report backlog full; continuing", extra={"seq": seq})
        with self._lock:
            self.progress.received(seq)
        self.bridge.call(self.sink, seq, item)

    def _read(self, fields: fm.Fields, msg_type: str) -> Inbound | None:
        if msg_type == "8":
            return fm.execution_report(fields, exec_id_scope=self.exec_id_scope, speech=self.speech)
        if msg_type == "9":
            return fm.cancel_reject(fields)
        if msg_type in ("j", "3"):
            ref_seq = fields.get(fm.REF_SEQ_NUM, "")
            raw = self.reader.message(int(ref_seq)) if ref_seq.isdigit() else None
            return fm.rejection(fields, fm.fields_of(raw) if raw is not None else None)
        return None

    # --- InboundCursor (event loop) -----------------------------------------------------------
    def expected_target(self) -> int:
        target = int(self.session.getExpectedTargetNum())
        NEXT_TARGET.set(target)  # read every persist interval: the gauges stay fresh
        NEXT_SENDER.set(int(self.session.getExpectedSenderNum()))
        return target

    def published(self, seq: int) -> None:
        with self._lock:
            self.progress.published(seq)
        # More releases than acquires after a stalled acquire: nothing to give back.
        with contextlib.suppress(ValueError):
            self._backlog.release()

    def safe_next(self, expected_target: int) -> int:
        with self._lock:
            return self.progress.safe_next(expected_target)

    # --- OrderEntry (event loop) -------------------------------------------------------------------
    @property
    def logged_on(self) -> bool:
        return self._logged_on.is_set()

    async def wait_logged_on(self, timeout: float) -> bool:
        try:
            await aio.within(self._logged_on.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _send(self, message: fix.Message, msg_type: str) -> bool:
        if self.begin_string != "FIX.4.4":  # messages are built as FIX 4.4 text
            message.getHeader().setField(fix.BeginString(self.begin_string))
        try:
            ok = bool(fix.Session.sendToTarget(message, self.session_id))
        except fix.SessionNotFound:
            return False
        self.last_send_time = time.time()
        MESSAGES_SENT.labels(msg_type).inc()
        return ok

    def send_new_order(self, cl_ord_id: str, order: NewOrder) -> bool:
        return self._send(fm.new_order_single(cl_ord_id, order), "D")

    def send_cancel(self, cl_ord_id: str, orig_cl_ord_id: str, order: Amendment) -> bool:
        return self._send(fm.cancel_request(cl_ord_id, orig_cl_ord_id, order), "F")

    def send_replace(self, cl_ord_id: str, orig_cl_ord_id: str, order: ReplaceOrder) -> bool:
        return self._send(fm.replace_request(cl_ord_id, orig_cl_ord_id, order), "G")

    def send_status_request(
        self,
        cl_ord_id: str,
        symbol: str,
        side: Side,
        request_id: str,
        *,
        exchange_order_id: str = "",
        account: str = "",
    ) -> bool:
        message = fm.status_request(
            cl_ord_id,
            symbol,
            side,
            request_id,
            exchange_order_id=exchange_order_id,
            account=account,
            with_request_id=self.speech.has_status_request_id,
        )
        return self._send(message, "H")

    @property
    def has_mass_status(self) -> bool:
        return self.speech.has_mass_status

    def send_mass_status_request(self, request_id: str) -> bool:
        return self._send(fm.mass_status_request(request_id), "AF")

    def in_store(self, cl_ord_id: str, msg_type: str, since: datetime | None) -> bool | None:
        if since is not None and since < self.store_created_at:
            return None  # the store was reset after the command was recorded
        return self.reader.contains(cl_ord_id, msg_type, int(self.session.getExpectedSenderNum()))

    # --- state ---------------------------------------------------------------------------------------
    def sequence_numbers(self) -> dict[str, int]:
        sender = int(self.session.getExpectedSenderNum())
        target = int(self.session.getExpectedTargetNum())
        NEXT_SENDER.set(sender)
        NEXT_TARGET.set(target)
        return {"next_sender_seq_num": sender, "next_target_seq_num": target}

    def store_next_target(self) -> int:
        return int(self.session.getExpectedTargetNum())
