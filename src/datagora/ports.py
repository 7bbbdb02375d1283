"""Free loopback ports for the servers and child processes this process starts."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Final

__all__ = ["free_port"]

_TRIES: Final = 200
# How long a port handed out by any process on this machine stays reserved: long
# enough for the server it was meant for to bind it (a bound port is never offered
# by the kernel again while it is bound).
_RESERVED_S: Final = 120.0
_given: set[int] = set()
_lock = threading.Lock()


def _reservations() -> Path:
    folder = Path(tempfile.gettempdir()) / f"datagora-ports-{os.geteuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _reserve(port: int) -> bool:
    """Claim `port` across processes: False if another process took it recently."""
    mark = _reservations() / str(port)
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        try:
            if time.time() - mark.stat().st_mtime < _RESERVED_S:
                return False
            os.utime(mark)  # an old claim: its server bound the port long ago, or died
            return True
        except FileNotFoundError:
            return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, never handed out before by this process nor in
    the last two minutes by another process on this machine (parallel test workers).

    The port is released before the caller's server binds it. Asked again
    meanwhile, the kernel may offer the same port (in 13 of 20 runs of 200 calls
    here, some port came twice), and two nodes started one after the other would
    be given one port; the second would fail to listen only after the first
    answered for both. A small file per port in the temporary directory keeps two
    processes from being given one port in that window.
    """
    with _lock:
        for _ in range(_TRIES):
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _given and _reserve(port):
                _given.add(port)
                return port
    raise OSError(f"no port on {host} that was not handed out before ({len(_given)} were)")
