"""Storage nodes as local processes on loopback, for tests, benchmarks and demos.

Each node is a real ``python -m datagora node --roles storage`` process on a free
loopback port with its own data directory; :class:`LocalNodes` starts them, waits
for ``/health`` and stops them (kill, pause and resume one to simulate failures).
Every development account (``datagora.ledger.dev_account``) has a quota on them
unless other ``grants`` are given, so a client signing as one may write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final

import httpx

from datagora.node.network import dev_grants
from datagora.ports import free_port
from datagora.storage.auth import QuotaBook
from datagora.storage.errors import NoNodesError

__all__ = ["LocalNode", "LocalNodes"]

_START_TIMEOUT: Final = 120.0  # generous: a loaded 2-core machine starts 7 nodes slowly


class LocalNode:
    """One storage node process."""

    def __init__(
        self,
        data_dir: Path,
        max_share_mb: int | None = None,
        grants: Mapping[str, int] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.max_share_mb = max_share_mb
        self.grants = dict(dev_grants() if grants is None else grants)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_dir(self) -> Path:
        """Where the node keeps its shares (``DATA/storage``)."""
        return self.data_dir / "storage"

    def start(self) -> None:
        """Start the process (on a fresh free port the first time, the same one after)."""
        if self.port == 0:
            self.port = free_port()
        command = [
            sys.executable, "-m", "datagora", "node", "--roles", "storage",
            "--port", str(self.port), "--data", str(self.data_dir),
        ]  # fmt: skip
        if self.max_share_mb is not None:
            command += ["--max-share-mb", str(self.max_share_mb)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        book = QuotaBook.in_dir(self.storage_dir)
        try:
            for account, amount in self.grants.items():
                book.grant(account, amount)
        finally:
            book.close()
        log = open(self.data_dir / "node.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def wait_ready(self, deadline: float) -> None:
        """Block until ``/health`` answers, or raise :class:`NoNodesError`."""
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise NoNodesError(
                    f"storage node on port {self.port} exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'node.log'}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise NoNodesError(f"storage node on port {self.port} did not start in time")
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the process (a crash: no cleanup) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the node keeps its socket but answers nothing (a slow node)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop the process gracefully (SIGTERM), killing it if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


class LocalNodes:
    """``count`` storage node processes under ``base_dir/node<i>``, as a context manager."""

    def __init__(
        self,
        count: int,
        base_dir: Path,
        max_share_mb: int | None = None,
        grants: Mapping[str, int] | None = None,
    ) -> None:
        self.nodes = [LocalNode(base_dir / f"node{i}", max_share_mb, grants) for i in range(count)]

    @property
    def urls(self) -> list[str]:
        """Every node's base URL, in order."""
        return [n.url for n in self.nodes]

    def start(self) -> LocalNodes:
        """Start every node and wait until all answer ``/health``."""
        try:
            for node in self.nodes:
                node.start()
            deadline = time.monotonic() + _START_TIMEOUT
            for node in self.nodes:
                node.wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalNodes:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
