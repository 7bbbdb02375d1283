"""Running anvil (from the npm registry, pinned in package.json) as a child process."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from datagora.atomic import write_atomically
from datagora.errors import ConfigError
from datagora.ledger import jsonrpc
from datagora.ledger.errors import ChainError
from datagora.ports import free_port

ANVIL_CHAIN_ID = 31337


def find_anvil() -> str:
    """The anvil binary: $DATAGORA_ANVIL, the project's node_modules, or PATH."""
    explicit = os.environ.get("DATAGORA_ANVIL")
    if explicit:
        return explicit
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        candidate = base / "node_modules" / ".bin" / "anvil"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise ConfigError(
        "anvil not found: run `make setup` (npm installs @foundry-rs/anvil) "
        "or set DATAGORA_ANVIL to the binary"
    )


def dump_state(url: str, timeout: float = 120.0) -> bytes:
    """The whole state of the anvil node at `url` (``anvil_dumpState``), as the JSON
    its ``--load-state`` reads.

    anvil's own ``--state``/``--dump-state`` file is written in place at SIGTERM (and
    every ``--state-interval``) and anvil may exit before the write is done: 4 of 15
    stops left a truncated file, one no file at all. Asked over JSON-RPC, the
    state is either whole or an error, and the caller writes it atomically.
    """
    try:
        result = jsonrpc.call(url, "anvil_dumpState", [], timeout=timeout)
        raw = gzip.decompress(bytes.fromhex(result.removeprefix("0x")))
        json.loads(raw)  # whole, or refused
    except (httpx.HTTPError, OSError, ValueError, KeyError, AttributeError) as exc:
        raise ChainError(f"cannot read the chain's state from {url}: {exc}") from None
    return raw


class Anvil:
    """An anvil node on a loopback port; a context manager that stops it on exit.

    With `state`, the chain is loaded from that file when it exists, and
    :meth:`stop` saves it there (over JSON-RPC, written atomically) before the node
    stops, so a later node continues where this one stopped.
    """

    def __init__(
        self,
        port: int | None = None,
        state: Path | None = None,
        block_time: float | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.extra_args = list(extra_args)
        """More of anvil's options (e.g. ``["--hardfork", "berlin"]``)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = state
        self.block_time = block_time
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Anvil:
        args = [find_anvil(), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if self.state is not None and self.state.exists():
            args += ["--load-state", str(self.state)]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
        args += self.extra_args
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise ChainError(
                    f"anvil exited at start (code {self._proc.returncode}): {err[-500:]}"
                )
            try:
                jsonrpc.call(self.url, "eth_chainId", [], timeout=1.0)
                return self
            except (httpx.HTTPError, ChainError):
                pass
            time.sleep(0.05)
        self.stop()
        raise ChainError(f"anvil did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the node, waiting for it to exit; with `state`, save the chain first
        (:class:`ChainError` if it cannot be read: the node is stopped all the same)."""
        if self._proc is None:
            return
        try:
            if self.state is not None and self._proc.poll() is None:
                write_atomically(self.state, dump_state(self.url), 0o600)
        finally:
            self._stop_process()

    def _stop_process(self) -> None:
        assert self._proc is not None
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

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
