"""Watchlists in a NATS JetStream KV bucket: one entry per user, key `users.{user_id}`.

The value is a small JSON document with all of the user's watchlists and the request ids of
recent creates. Writes are compare-and-set on the entry's revision (`update(…, last=rev)`;
`create` for a user's first write), which is what lets concurrent edits retry instead of
overwriting each other.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from svc_marketdata.domain.watchlists import CreateRecord, UserWatchlists, Watchlist

FORMAT_VERSION = 1


def _key(user_id: str) -> str:
    return f"users.{user_id}"


def to_json(doc: UserWatchlists) -> bytes:
    body = {
        "v": FORMAT_VERSION,
        "watchlists": [
            {
                "id": w.watchlist_id,
                "name": w.display_name,
                "symbols": w.symbols,
                "created": w.create_time.isoformat(),
                "updated": w.update_time.isoformat(),
            }
            for w in doc.watchlists.values()
        ],
        "requests": [
            {"id": rid, "watchlist": r.watchlist_id, "fingerprint": r.fingerprint, "at": r.at.isoformat()}
            for rid, r in doc.requests.items()
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def from_json(user_id: str, data: bytes) -> UserWatchlists:
    body: dict[str, Any] = json.loads(data)
    if body.get("v") != FORMAT_VERSION:
        raise ValueError(f"unknown watchlist document version {body.get('v')!r}")
    doc = UserWatchlists(user_id)
    for w in body["watchlists"]:
        doc.watchlists[w["id"]] = Watchlist(
            watchlist_id=w["id"],
            display_name=w["name"],
            symbols=list(w["symbols"]),
            create_time=datetime.fromisoformat(w["created"]),
            update_time=datetime.fromisoformat(w["updated"]),
        )
    for r in body["requests"]:
        doc.requests[r["id"]] = CreateRecord(
            r["watchlist"], r["fingerprint"], datetime.fromisoformat(r["at"])
        )
    return doc


class KvWatchlistStore:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def load(self, user_id: str) -> tuple[UserWatchlists, int]:
        try:
            entry = await self.kv.get(_key(user_id))
        except (KeyNotFoundError, KeyDeletedError):
            return UserWatchlists(user_id), 0
        if not entry.value:
            return UserWatchlists(user_id), entry.revision or 0
        return from_json(user_id, entry.value), entry.revision or 0

    async def save(self, watchlists: UserWatchlists, revision: int) -> bool:
        try:
            if revision:
                await self.kv.update(_key(watchlists.user_id), to_json(watchlists), last=revision)
            else:
                await self.kv.create(_key(watchlists.user_id), to_json(watchlists))
        except KeyWrongLastSequenceError:
            return False
        return True
