"""A small FIX 4.4 initiator for tests: a counterparty of the exchange simulator.

Real quickfix sessions (FileStore, standard FIX44.xml validation) in the test process. What
the exchange sends is kept as parsed messages; tests wait for them with generous timeouts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import quickfix as fix

from svc_runtime.fix import load_settings

TEMPLATE = Path(__file__).resolve().parent / "initiator.cfg"
SOH = "\x01"


@dataclass
class Received:
    msg_type: str
    fields: list[tuple[int, str]]
    raw: str

    def get(self, tag: int, default: str | None = None) -> str | None:
        for key, value in self.fields:
            if key == tag:
                return value
        return default

    def __getitem__(self, tag: int) -> str:
        value = self.get(tag)
        if value is None:
            raise KeyError(f"tag {tag} not in {self.raw.replace(SOH, '|')}")
        return value

    def all(self, tag: int) -> list[str]:
        return [value for key, value in self.fields if key == tag]

    def __repr__(self) -> str:
        return self.raw.replace(SOH, "|")


def parse(raw: str) -> Received:
    fields = []
    for part in raw.split(SOH):
        if "=" in part:
            tag, value = part.split("=", 1)
            fields.append((int(tag), value))
    msg_type = next(v for t, v in fields if t == 35)
    return Received(msg_type, fields, raw)


class FixClient(fix.Application):  # type: ignore[misc]
    def __init__(self, work_dir: Path, port: int, sender: str = "BROKER") -> None:
        super().__init__()
        self.sender = sender
        self.work_dir = work_dir
        self.settings = load_settings(
            TEMPLATE,
            work_dir / f"{sender}.cfg",
            port=port,
            sender=sender,
            store_dir=work_dir / "store",
            log_dir=work_dir / "log",
        )
        self.session_id = fix.SessionID("FIX.4.4", sender, "EXCHANGE")
        self.received: list[Received] = []
        self.admin: list[Received] = []
        self.logged_on = False
        self.logons = 0
        self._lock = threading.Lock()
        self._initiator: fix.SocketInitiator | None = None

    # quickfix callbacks
    def onCreate(self, session_id: fix.SessionID) -> None:
        pass

    def onLogon(self, session_id: fix.SessionID) -> None:
        with self._lock:
            self.logged_on = True
            self.logons += 1

    def onLogout(self, session_id: fix.SessionID) -> None:
        with self._lock:
            self.logged_on = False

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        with self._lock:
            self.admin.append(parse(message.toString()))

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        pass

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        with self._lock:
            self.received.append(parse(message.toString()))

    # test side
    def start(self) -> None:
        (self.work_dir / "store").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "log").mkdir(parents=True, exist_ok=True)
        store = fix.FileStoreFactory(self.settings)
        logs = fix.FileLogFactory(self.settings)
        self._initiator = fix.SocketInitiator(self, store, self.settings, logs)
        self._initiator.start()

    def stop(self, *, force: bool = False) -> None:
        """Log out (or, forced, just disconnect) and stop quickfix's thread."""
        if self._initiator is not None:
            self._initiator.stop(force)
            self._initiator = None

    def session(self) -> fix.Session:
        return fix.Session.lookupSession(self.session_id)

    def send(self, message: fix.Message) -> None:
        assert fix.Session.sendToTarget(message, self.session_id)

    def send_raw(self, fields: list[tuple[int, str]], msg_type: str) -> None:
        message = fix.Message()
        message.getHeader().setField(fix.MsgType(msg_type))
        for tag, value in fields:
            message.setField(fix.StringField(tag, value))
        self.send(message)

    def messages(self, msg_type: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if msg_type is None or r.msg_type == msg_type]

    async def wait_logged_on(self, timeout: float = 30.0) -> None:
        await wait_until(lambda: self.logged_on, timeout, f"{self.sender} never logged on")

    async def wait_for(
        self, predicate: Callable[[Received], bool], timeout: float = 20.0, what: str = "message"
    ) -> Received:
        found: list[Received] = []

        def check() -> bool:
            found[:] = [r for r in self.messages() if predicate(r)]
            return bool(found)

        await wait_until(check, timeout, f"no {what} arrived; got {self.messages()[-5:]}")
        return found[0]


async def wait_until(
    condition: Callable[[], bool], timeout: float = 20.0, message: str = "timed out"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        await asyncio.sleep(0.02)
