"""Running anvil (from the npm registry, pinned in package.json) as a child process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

from datagora.errors import ChainError, ConfigError

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """An anvil node on a loopback port; a context manager that stops it on exit.

    With `state`, the chain is loaded from and saved to that file, so a later
    node continues where this one stopped.
    """

    def __init__(
        self, port: int | None = None, state: Path | None = None, block_time: float | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = state
        self.block_time = block_time
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Anvil:
        args = [find_anvil(), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if self.state is not None:
            self.state.parent.mkdir(parents=True, exist_ok=True)
            args += ["--state", str(self.state)]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
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
                r = httpx.post(
                    self.url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                    timeout=1.0,
                )
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ChainError(f"anvil did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the node (SIGTERM, so a state file is written), waiting for it to exit."""
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

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
