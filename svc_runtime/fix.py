"""FIX plumbing shared by the processes that speak FIX 4.4 through quickfix (svc_exec,
svc_marketdata and the exchange simulator).

- Session settings live in `.cfg` files committed beside each process, with `{placeholders}`
  for what only the stack knows at run time (host, port, store and log directories, the
  data dictionary); `load_settings` fills them in. A real venue is reached by pointing the
  file and environment at it: no code changes.
- quickfix calls back on its own threads. `ThreadBridge` hands each callback to the asyncio
  loop without blocking the FIX thread, so callbacks stay tiny.
- Prices and quantities never pass through quickfix's typed fields, which are C doubles:
  `set_text`/`get_text` read and write the raw tag text, and `fix_decimal` formats exactly.
"""

from __future__ import annotations

import asyncio
import sysconfig
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import quickfix as fix

from svc_runtime.decimals import format_decimal


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


class ThreadBridge:
    """Runs callables on the asyncio loop from quickfix threads, without waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def put(self, queue: asyncio.Queue[Any], item: Any) -> None:
        self.loop.call_soon_threadsafe(queue.put_nowait, item)
