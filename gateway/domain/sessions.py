"""A login session and the rotation of its refresh tokens.

A session starts at login and lasts at most `session_seconds`. Its refresh tokens are
numbered: the record holds the generation of the one refresh token that may still be
used. Presenting it moves the session to the next generation (a new access token and a
new refresh token); presenting any older one means a refresh token was copied — the thief
or the user used it first — so the whole session is revoked (RFC 9700 §4.14.2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum


class Refresh(StrEnum):
    ROTATE = "rotate"
    REUSED = "reused"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class SessionRecord:
    user_id: str
    generation: int
    ends_at: int

    def judge(self, user_id: str, generation: int) -> Refresh:
        """What presenting refresh token `generation` of `user_id` means for this session."""
        if user_id != self.user_id:
            return Refresh.FOREIGN
        return Refresh.ROTATE if generation == self.generation else Refresh.REUSED

    def rotated(self) -> SessionRecord:
        return SessionRecord(self.user_id, self.generation + 1, self.ends_at)

    def encode(self) -> bytes:
        return json.dumps({"user": self.user_id, "gen": self.generation, "ends": self.ends_at}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SessionRecord:
        data = json.loads(raw)
        return cls(str(data["user"]), int(data["gen"]), int(data["ends"]))
