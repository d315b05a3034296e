"""The exchange's order journal: an append-only file of JSON lines, fsynced per batch.

Why a plain journal and not SQLite: the exchange only ever appends the latest state of the
orders a batch of requests changed and reads everything back once, at start; it never
queries. One sequential write and one fsync per batch is the least a durable
acknowledgement can cost, and a batch holds every request that arrived while the previous
fsync ran (group commit), so the cost per order falls as the rate rises.

Format: the first line is a header `{"k": "h", "v": 1, "since": <unix seconds>}`; then
`{"k": "o", ...}` (an order as it stands; the last line of an order wins) and
`{"k": "q", ...}` (a ClOrdID used). A crash can leave the last line torn: it was never
fsynced, so no report announced it, and it is dropped on load. A torn line anywhere else is
corruption and stops the start, rather than forgetting orders silently.

On start the journal is compacted: the current state of every order it keeps is rewritten
to a new file, which is fsynced and renamed over the old one (then the directory is
fsynced). Finished orders whose last change is older than the retention are left out, and
`since` moves up to the retention's start, so the exchange says how far back it can answer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from exchange_sim.app.journal import Saved, SavedOrder, SavedRequest
from exchange_sim.domain.matching import WORKING

log = logging.getLogger(__name__)

VERSION = 1


class JournalCorrupt(RuntimeError):
    pass


class FileOrderJournal:
    def __init__(self, path: Path, *, retain_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.retain_seconds = retain_seconds
        self.clock = clock
        self._file: IO[str] | None = None

    def load(self) -> Saved:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = self.clock()
        saved = self._read() if self.path.exists() else Saved(since=now)
        cutoff = now - self.retain_seconds
        kept = [o for o in saved.orders if o.status in WORKING or o.updated >= cutoff]
        dropped = {(o.session, o.cl_ord_id) for o in saved.orders} - {(o.session, o.cl_ord_id) for o in kept}
        if len(kept) < len(saved.orders):
            saved.since = max(saved.since, cutoff)
        saved.orders = kept
        known = {(o.session, c) for o in kept for c in o.cl_ord_ids}
        saved.requests = [
            r
            for r in saved.requests
            if (r.session, r.cl_ord_id) in known
            or (r.at >= cutoff and (r.session, r.cl_ord_id) not in dropped)
        ]
        self._rewrite(saved)
        self._file = self.path.open("a", encoding="utf-8")
        log.info(
            "order journal loaded",
            extra={
                "orders": len(saved.orders),
                "working": sum(o.status in WORKING for o in saved.orders),
                "requests": len(saved.requests),
                "since": saved.since,
            },
        )
        return saved

    def append(self, orders: Sequence[SavedOrder], requests: Sequence[SavedRequest]) -> None:
        assert self._file is not None, "load() first"
        self._file.write("".join(_lines(orders, requests)))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # ---- internals ------------------------------------------------------------------------

    def _read(self) -> Saved:
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        # Everything before the last newline was fsynced whole; what follows it is torn.
        torn = lines.pop()
        if torn:
            log.warning("order journal: torn last line dropped", extra={"bytes": len(torn)})
        if not lines:
            return Saved(since=self.clock())
        header = self._parse(lines[0], 1)
        if header.get("k") != "h" or header.get("v") != VERSION:
            raise JournalCorrupt(f"{self.path}: not an order journal of version {VERSION}")
        orders: dict[str, SavedOrder] = {}
        requests: dict[tuple[str, str], SavedRequest] = {}
        for number, line in enumerate(lines[1:], start=2):
            entry = self._parse(line, number)
            kind = entry.pop("k", None)
            if kind == "o":
                entry["cl_ord_ids"] = tuple(entry["cl_ord_ids"])
                order = SavedOrder(**entry)
                orders[order.exchange_order_id] = order
            elif kind == "q":
                request = SavedRequest(**entry)
                requests[(request.session, request.cl_ord_id)] = request
            else:
                raise JournalCorrupt(f"{self.path}:{number}: unknown entry {kind!r}")
        return Saved(
            since=float(header["since"]),
            orders=sorted(orders.values(), key=lambda o: o.seq),
            requests=list(requests.values()),
        )

    def _parse(self, line: str, number: int) -> dict[str, Any]:
        try:
            entry = json.loads(line)
        except ValueError as error:
            raise JournalCorrupt(f"{self.path}:{number}: unreadable line ({error})") from error
        if not isinstance(entry, dict):
            raise JournalCorrupt(f"{self.path}:{number}: not an object")
        return entry

    def _rewrite(self, saved: Saved) -> None:
        fresh = self.path.with_suffix(".compacting")
        with fresh.open("w", encoding="utf-8") as out:
            out.write(json.dumps({"k": "h", "v": VERSION, "since": saved.since}) + "\n")
            out.write("".join(_lines(saved.orders, saved.requests)))
            out.flush()
            os.fsync(out.fileno())
        os.replace(fresh, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# Field names, read once: dataclasses.asdict deep-copies every value and costs more than the
# JSON encoding itself.
_ORDER_FIELDS = tuple(f.name for f in dataclasses.fields(SavedOrder))
_REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(SavedRequest))
_COMPACT = (",", ":")


def _lines(orders: Iterable[SavedOrder], requests: Iterable[SavedRequest]) -> Iterable[str]:
    for request in requests:
        entry = {"k": "q", **{name: getattr(request, name) for name in _REQUEST_FIELDS}}
        yield json.dumps(entry, separators=_COMPACT) + "\n"
    for order in orders:
        entry = {"k": "o", **{name: getattr(order, name) for name in _ORDER_FIELDS}}
        yield json.dumps(entry, separators=_COMPACT) + "\n"
