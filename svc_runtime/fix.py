"""FIX plumbing shared by the processes that speak FIX 4.4 through quickfix (svc_exec,
svc_marketdata and the exchange simulator).

- Session settings live in `.cfg` files committed beside each process, with `{placeholders}`
  for what only the stack knows at run time (host, port, store and log directories, the
  data dictionary); `load_settings` fills them in. A real venue is reached by pointing the
  file and environment at it: no code changes.
- quickfix calls back on its own threads. `ThreadBridge` hands each callback to the asyncio
  loop without blocking the FIX thread, so callbacks stay tiny.
- quickfix retries a lost initiator session every ReconnectInterval, for ever;
  `ReconnectPacer` spaces the retries out exponentially while the venue stays away.
- A process stops its sessions with `log_out`, never with quickfix's own stop (see there).
- Prices and quantities never pass through quickfix's typed fields, which are C doubles:
  `set_text`/`get_text` read and write the raw tag text, and `fix_decimal` formats exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sysconfig
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import quickfix as fix
from prometheus_client import Counter

from svc_runtime import aio, service
from svc_runtime.decimals import format_decimal

log = logging.getLogger(__name__)

RECONNECT_PAUSES = Counter(
    "fix_reconnect_pauses_total", "Times reconnecting to the venue was paused (back-off)", ["session"]
)

# A setting of ours in the initiator's session file: the longest pause between reconnect
# tries, in seconds; absent, tries are paused for at most BACKOFF_MAX_DEFAULT.
RECONNECT_BACKOFF_MAX = "ReconnectBackoffMax"
BACKOFF_MAX_DEFAULT = 30.0


def data_dictionary(version: str = "FIX44") -> Path:
    """The standard data dictionary installed with quickfix (share/quickfix/FIX44.xml)."""
    candidates = [
        Path(sysconfig.get_path("data")) / "share" / "quickfix" / f"{version}.xml",
        Path(fix.__file__).resolve().parent / "spec" / f"{version}.xml",
        Path(fix.__file__).resolve().parent / "share" / "quickfix" / f"{version}.xml",
    ]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{version}.xml not found next to the quickfix installation")


def load_settings(template: Path, rendered: Path, **values: Any) -> fix.SessionSettings:
    """Render `template` (a quickfix .cfg with `{name}` placeholders) to `rendered` and load it.

    `data_dictionary` is always available as a placeholder.
    """
    values.setdefault("data_dictionary", data_dictionary())
    text = template.read_text().format(**{k: str(v) for k, v in values.items()})
    rendered.parent.mkdir(parents=True, exist_ok=True)
    rendered.write_text(text)
    return fix.SessionSettings(str(rendered))


def set_text(message: fix.Message | fix.FieldMap, tag: int, value: str | int | Decimal) -> None:
    """Set a field from its exact text (Decimal formatted without exponent)."""
    text = format_decimal(value) if isinstance(value, Decimal) else str(value)
    message.setField(fix.StringField(tag, text))


def get_text(message: fix.Message | fix.FieldMap, tag: int, default: str | None = None) -> str | None:
    """The raw text of a field, or `default` if absent."""
    if not message.isSetField(tag):
        return default
    return message.getField(tag)


def header_text(message: fix.Message, tag: int, default: str | None = None) -> str | None:
    header = message.getHeader()
    return header.getField(tag) if header.isSetField(tag) else default


def fix_decimal(text: str | None) -> Decimal | None:
    """Parse a FIX Price/Qty/Amt field exactly."""
    return None if text in (None, "") else Decimal(text)


async def log_out(session_ids: list[fix.SessionID], *, timeout: float = 3.0) -> bool:
    """Log every session out — a Logout each, as quickfix's own stop would send — and wait
    until the counterparties have answered, at most `timeout` seconds; False if some had not.

    The engine itself is never stopped: QuickFIX 1.15's `Acceptor::stop` and
    `Initiator::stop` can hang joining their own thread (quickfix/quickfix#740), and under
    load they have crashed the process with a segmentation fault inside `stop`. The process
    leaves with os._exit once the rest of its shutdown is done
    (`service.leave_without_finalizing`), so no quickfix thread or destructor runs after it:
    every message is in the FileStore already, as at a kill -9, which each FIX process
    recovers from."""
    service.leave_without_finalizing()
    sessions = [s for s in (fix.Session.lookupSession(i) for i in session_ids) if s is not None]
    for session in sessions:
        session.logout("the process is stopping")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(session.isLoggedOn() for session in sessions):
        if loop.time() >= deadline:
            log.warning("FIX sessions did not log out in time", extra={"timeout_s": timeout})
            return False
        await asyncio.sleep(0.05)
    return True


class ThreadBridge:
    """Runs callables on the asyncio loop from quickfix threads, without waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def put(self, queue: asyncio.Queue[Any], item: Any) -> None:
        self.loop.call_soon_threadsafe(queue.put_nowait, item)


class ReconnectPacer:
    """Exponential back-off for an initiator's reconnects.

    quickfix tries to reconnect a lost session every ReconnectInterval, for ever. When a try
    has not logged on within that interval, the pacer disables the session
    (`Session.logout`; nothing is sent, it is not connected) for a pause, then enables it
    again (`Session.logon`) for the next try. Pauses double from ReconnectInterval up to
    `ReconnectBackoffMax`, each within ±20 % so that many clients do not retry in step; a
    logon starts them over. Runs on the event loop; the owner reports logons and logouts.
    """

    def __init__(
        self, session: fix.Session, settings: fix.SessionSettings, session_id: fix.SessionID
    ) -> None:
        dictionary = settings.get(session_id)
        self.session = session
        self.session_key = session_id.toString()
        self.interval = float(
            dictionary.getInt("ReconnectInterval") if dictionary.has("ReconnectInterval") else 30
        )
        self.maximum = max(
            self.interval,
            float(dictionary.getString(RECONNECT_BACKOFF_MAX))
            if dictionary.has(RECONNECT_BACKOFF_MAX)
            else BACKOFF_MAX_DEFAULT,
        )
        self.pause = self.interval
        self._random = random.Random()
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start pacing, on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name="fix-reconnect-pacer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def logged_on(self) -> None:
        self._down.clear()
        self._up.set()
        self.pause = self.interval

    def logged_out(self) -> None:
        self._up.clear()
        self._down.set()

    def next_pause(self) -> float:
        """The pause before the next try, and the one after it doubled (up to the maximum)."""
        pause = min(self.pause * self._random.uniform(0.8, 1.2), self.maximum)
        self.pause = min(self.pause * 2, self.maximum)
        return pause

    async def run(self) -> None:
        while True:
            await self._down.wait()
            try:
                # quickfix's next try comes within one interval of the session being enabled.
                await aio.within(self._up.wait(), self.interval + 0.25)
                continue
            except TimeoutError:
                pass
            if self.session.sentLogon():
                continue  # connected, logon under way: let it finish or time out
            pause = self.next_pause()
            RECONNECT_PAUSES.labels(self.session_key).inc()
            log.info("FIX reconnect paused", extra={"session": self.session_key, "seconds": round(pause, 2)})
            self.session.logout()
            try:
                await asyncio.sleep(pause)
            finally:
                self.session.logon()
