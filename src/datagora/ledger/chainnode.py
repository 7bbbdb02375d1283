"""A development EVM node (anvil, Hardhat Network) run as a child process on a loopback
port: started, asked until it answers, stopped. Each node's module says how it is found
and what its command line is."""

from __future__ import annotations

import os
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from datagora.ledger import jsonrpc
from datagora.ledger.errors import ChainError
from datagora.ports import free_port


class ChainNode(ABC):
    """A node process answering JSON-RPC at :attr:`url`; a context manager that stops
    it on exit."""

    name = "node"
    """What the node is called in errors."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @abstractmethod
    def _command(self) -> list[str]:
        """The command line that starts the node on :attr:`port`."""

    def _cwd(self) -> Path | None:
        return None

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 30.0) -> Self:
        """Start the node and return once it answers ``eth_chainId`` (:class:`ChainError`
        with the end of its error output if it exits first or stays silent)."""
        try:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=self._cwd(),
                env=self._env(),
            )
        except OSError as exc:
            self.stop()
            raise ChainError(f"cannot start {self.name}: {exc}") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                code = self._proc.returncode
                self.stop()
                raise ChainError(f"{self.name} exited at start (code {code}): {err[-500:]}")
            try:
                jsonrpc.call(self.url, "eth_chainId", [], timeout=1.0)
                return self
            except (httpx.HTTPError, ChainError):
                pass
            time.sleep(0.05)
        self.stop()
        raise ChainError(f"{self.name} did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the node, waiting for it to exit."""
        self._stop_process()

    def _stop_process(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
