"""The pauses between reconnect tries of a FIX initiator (pure: no session is connected)."""

from __future__ import annotations

from pathlib import Path

import pytest
import quickfix as fix

from svc_runtime.fix import ReconnectPacer

CONFIG = """\
[DEFAULT]
ConnectionType=initiator
ReconnectInterval=1
{extra}
[SESSION]
BeginString=FIX.4.4
SenderCompID=BROKER
TargetCompID=EXCHANGE
"""


def _pacer(tmp_path: Path, extra: str = "") -> ReconnectPacer:
    path = tmp_path / "initiator.cfg"
    path.write_text(CONFIG.format(extra=extra))
    session_id = fix.SessionID("FIX.4.4", "BROKER", "EXCHANGE")
    return ReconnectPacer(object(), fix.SessionSettings(str(path)), session_id)  # type: ignore[arg-type]


def test_pauses_double_from_the_interval_up_to_the_maximum_with_jitter(tmp_path: Path) -> None:
    pacer = _pacer(tmp_path, "ReconnectBackoffMax=10")
    pauses = [pacer.next_pause() for _ in range(7)]
    for pause, nominal in zip(pauses, [1, 2, 4, 8, 10, 10, 10], strict=True):
        assert nominal * 0.8 <= pause <= min(nominal * 1.2, 10)


def test_a_logon_starts_the_pauses_over(tmp_path: Path) -> None:
    pacer = _pacer(tmp_path, "ReconnectBackoffMax=10")
    for _ in range(4):
        pacer.next_pause()
    pacer.logged_on()
    assert pacer.next_pause() <= 1.2


@pytest.mark.parametrize(("extra", "maximum"), [("", 30.0), ("ReconnectBackoffMax=0", 1.0)])
def test_the_maximum_defaults_to_30_s_and_is_never_below_the_interval(
    tmp_path: Path, extra: str, maximum: float
) -> None:
    assert _pacer(tmp_path, extra).maximum == maximum
