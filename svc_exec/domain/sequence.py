"""Which incoming FIX messages are safely behind us.

quickfix advances the session's expected incoming sequence number as soon as a callback
returns, but a report is only safe once JetStream acknowledged its publication. The
executor therefore remembers the sequence numbers of reports handed over but not yet
published, and persists the lowest sequence number it may resume from. After a crash the
session's expected incoming number is lowered to that value before logon: the exchange
sees a gap, resends everything from there with PossDupFlag=Y, and the publications dedupe
on ExecID. Nothing the exchange sent is lost; nothing is published twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class InboundProgress:
    """Not thread-safe: the FIX adapter serialises calls from its thread and the loop."""

    pending: set[int] = field(default_factory=set)

    def received(self, seq: int) -> None:
        """A message that will produce publications; call before the callback returns."""
        self.pending.add(seq)

    def published(self, seq: int) -> None:
        self.pending.discard(seq)

    def safe_next(self, expected_target: int) -> int:
        """The first sequence number not yet safely published. `expected_target` must be
        read from the session *before* calling, so that every message below it has been
        registered with `received` already."""
        return min(self.pending, default=expected_target)


def resume_target(
    store_next_target: int,
    store_created: str,
    persisted_next_target: int | None,
    persisted_store_created: str | None,
) -> int:
    """The incoming sequence number to resume from after a restart: never above what the
    store says, lowered to the last safely published point of the same store generation
    (a store reset for a new trading day starts again from its own numbers)."""
    if persisted_next_target is None or persisted_store_created != store_created:
        return store_next_target
    return max(1, min(store_next_target, persisted_next_target))
