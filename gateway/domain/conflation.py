"""Conflation: per client, keep only the latest frame of each symbol until it is written.

Memory per client is bounded by the symbols it subscribed to, however fast ticks arrive
and however slowly the client reads. Versions order a symbol's quotes, so a late or
duplicate tick never replaces (or follows) a newer one.
"""

from __future__ import annotations

# (exchange time in nanoseconds, sequence): the exchange time orders quotes even if the
# price tracker's sequence restarts; the sequence breaks ties.
Version = tuple[int, int]


class Conflator:
    __slots__ = ("_pending", "_sent", "replaced")

    def __init__(self) -> None:
        self._pending: dict[str, tuple[Version, bytes]] = {}
        self._sent: dict[str, Version] = {}
        # Frames superseded before they could be written: how much conflation saved.
        self.replaced = 0

    def offer(self, symbol: str, version: Version, frame: bytes) -> bool:
        """Keep `frame` as the symbol's latest; True if it is queued (and was not before)."""
        sent = self._sent.get(symbol)
        if sent is not None and version < sent:
            return False
        queued = self._pending.get(symbol)
        if queued is not None:
            if version < queued[0]:
                return False
            self.replaced += 1
            self._pending[symbol] = (version, frame)
            return False
        self._pending[symbol] = (version, frame)
        return True

    def drain(self) -> list[bytes]:
        """The queued frames, oldest symbol first; they count as sent."""
        frames = []
        for symbol, (version, frame) in self._pending.items():
            self._sent[symbol] = version
            frames.append(frame)
        self._pending.clear()
        return frames

    def __len__(self) -> int:
        return len(self._pending)
