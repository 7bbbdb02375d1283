"""Role apps served in this process: each under its own uvicorn server, in a thread, on
a loopback port — for the demo, notebooks and tests that want real HTTP without
child processes.

A :class:`ThreadServer` keeps its port across :meth:`~ThreadServer.stop` and
:meth:`~ThreadServer.start`, so a stopped node comes back at the address that
placement records and clients already know. :class:`ServerGroup` starts several and
stops them all (in reverse order), also when something failed in between.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final

import uvicorn
from starlette.types import ASGIApp

from datagora.node.errors import ServerError
from datagora.ports import free_port

__all__ = ["ServerError", "ServerGroup", "ThreadServer"]

_START_TIMEOUT: Final = 60.0  # a loaded 2-core machine can be slow to start a server
_STOP_TIMEOUT: Final = 30.0


class ThreadServer:
    """An ASGI app under a uvicorn server in a daemon thread, on ``host``.

    ``factory`` builds the app at every start: an app whose lifespan opens and closes
    resources (databases, background threads) is built afresh after a stop.
    """

    def __init__(
        self,
        factory: Callable[[], ASGIApp],
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port or free_port(host)
        self._factory = factory
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app: ASGIApp | None = None

    @property
    def url(self) -> str:
        """The server's base URL (stable across restarts)."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ThreadServer:
        """Serve the app and wait until it accepts connections; :class:`ServerError` if not."""
        if self.running:
            return self
        self.app = app = self._factory()
        config = uvicorn.Config(
            app,
            host=self.host,
            port=self.port,
            log_level="error",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"server-{self.name}", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive():
                self._server = self._thread = None
                raise ServerError(f"{self.name} did not start on {self.url} (see its log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.name} did not start on {self.url} in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (graceful: the app's shutdown runs) and wait for the thread."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=_STOP_TIMEOUT)
        if thread.is_alive():  # a stuck connection: stop waiting for it
            server.force_exit = True
            thread.join(timeout=_STOP_TIMEOUT)


class ServerGroup:
    """Several :class:`ThreadServer`; stops every one started, in reverse order."""

    def __init__(self) -> None:
        self.servers: list[ThreadServer] = []

    def start(
        self, factory: Callable[[], ASGIApp], name: str, *, host: str = "127.0.0.1"
    ) -> ThreadServer:
        """Start the app ``factory`` builds on a free port; :meth:`stop` stops it."""
        server = ThreadServer(factory, name, host=host)
        self.servers.append(server)
        return server.start()

    def stop(self) -> None:
        """Stop every server (those already stopped are skipped)."""
        for server in reversed(self.servers):
            server.stop()

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
