"""Child-process helpers: free ports, and children that die with their parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import socket
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child receive `sig` when its parent dies, so that a
    kill -9 of the supervisor or of the test runner leaves no orphan servers behind.

    It runs after the user switch of `subprocess.Popen(user=...)`, which would otherwise
    clear the setting.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    def _set() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig)

    return _set
