"""Reading quickfix's FileStore after a crash: a command counts as sent only if its message
holds its sequence number in the store. Written with quickfix's own FileStore, in the order
quickfix's session writes (store the message, then count its number)."""

from __future__ import annotations

from pathlib import Path

import quickfix as fix

from svc_exec.adapters.fix_session import FileStoreReader

SESSION = fix.SessionID("FIX.4.4", "BROKER", "EXCHANGE")


def _message(seq: int, msg_type: str, cl_ord_id: str = "") -> str:
    order = f"11={cl_ord_id}\x01" if cl_ord_id else ""
    return f"8=FIX.4.4\x019=40\x0135={msg_type}\x0134={seq}\x0149=BROKER\x0156=EXCHANGE\x01{order}10=000\x01"


def _store(path: Path) -> fix.MessageStore:
    return fix.FileStoreFactory(str(path)).create(fix.UtcTimeStamp(), SESSION)


def _sent(store: fix.MessageStore, seq: int, msg_type: str, cl_ord_id: str = "") -> None:
    store.set(seq, _message(seq, msg_type, cl_ord_id))
    store.incrNextSenderMsgSeqNum()


def test_a_stored_and_counted_order_is_in_the_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _sent(store, 1, "A")
    _sent(store, 2, "D", "ord_a")
    reader = FileStoreReader(tmp_path, SESSION)
    assert reader.contains("ord_a", "D", store.getNextSenderMsgSeqNum())
    assert not reader.contains("ord_a", "F", store.getNextSenderMsgSeqNum())
    assert not reader.contains("ord_b", "D", store.getNextSenderMsgSeqNum())


def test_an_order_stored_but_not_counted_before_a_crash_is_not(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _sent(store, 1, "A")
    store.set(2, _message(2, "D", "ord_a"))  # killed before the number was counted
    reader = FileStoreReader(tmp_path, SESSION)
    # Before the next logon: the number is not used yet.
    assert store.getNextSenderMsgSeqNum() == 2
    assert not reader.contains("ord_a", "D", 2)
    # After it: the Logon took the number, so the order never went out.
    restarted = _store(tmp_path)
    _sent(restarted, 2, "A")
    assert not reader.contains("ord_a", "D", restarted.getNextSenderMsgSeqNum())
    _sent(restarted, 3, "D", "ord_a")  # sent again, now for real
    assert reader.contains("ord_a", "D", restarted.getNextSenderMsgSeqNum())
