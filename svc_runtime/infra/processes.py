"""Child-process helpers: free ports, and children that die with their parent."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. Probed the way servers bind (SO_REUSEADDR):
    connections of a stopped server still in TIME_WAIT do not make its port look taken, so a
    restarted stack gets its ports back."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def die_with_parent(
    command: Sequence[str], sig: int = signal.SIGTERM, *, user: tuple[int, int] | None = None
) -> list[str]:
    """`command`, wrapped so that the child receives `sig` when this process dies: a kill -9
    of the supervisor or of the test runner leaves no orphan servers behind. With `user`
    (uid, gid) the child runs as that user, like `Popen(user=..., group=..., extra_groups=[])`.

    A short standard-library-only Python step switches user, sets PR_SET_PDEATHSIG (a user
    switch would clear it, so in that order) and execs `command` in the same process. A
    `preexec_fn` would have to run Python between fork and exec, which can crash the child
    once gRPC threads run in the parent.
    """
    uid, gid = user if user is not None else (-1, -1)
    interpreter = os.path.realpath(sys.executable)
    return [
        interpreter,
        "-I",
        "-S",
        "-c",
        _ARM_THEN_EXEC,
        str(os.getpid()),
        str(int(sig)),
        str(uid),
        str(gid),
        *command,
    ]


def die_with_parent_from_now(sig: int = signal.SIGTERM) -> None:
    """For a child already running Python (a `multiprocessing` spawn): receive `sig` when
    the parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


# Where there is no PR_SET_PDEATHSIG (not Linux) the step only switches user. Everything is
# imported before the switch: the new user may not be able to read this interpreter's files.
# The parent may die before the setting takes effect: then the child is already re-parented.
_ARM_THEN_EXEC = f"""\
import ctypes, os, sys
parent, sig, uid, gid = (int(arg) for arg in sys.argv[1:5])
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, sig)
    if os.getppid() != parent:
        sys.exit("the parent exited before the child started")
os.execvp(sys.argv[5], sys.argv[5:])
"""
