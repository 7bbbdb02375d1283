"""Running anvil (from the npm registry, pinned in package.json) as a child process."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import httpx

from datagora.atomic import write_atomically
from datagora.errors import ConfigError
from datagora.ledger import jsonrpc
from datagora.ledger.chainnode import ChainNode
from datagora.ledger.errors import ChainError

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


class Anvil(ChainNode):
    """An anvil node on a loopback port; a context manager that stops it on exit.

    With `state`, the chain is loaded from that file when it exists, and
    :meth:`stop` saves it there (over JSON-RPC, written atomically) before the node
    stops, so a later node continues where this one stopped.
    """

    name = "anvil"

    def __init__(
        self,
        port: int | None = None,
        state: Path | None = None,
        block_time: float | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(port)
        self.extra_args = list(extra_args)
        """More of anvil's options (e.g. ``["--hardfork", "berlin"]``)."""
        self.state = state
        self.block_time = block_time

    def _command(self) -> list[str]:
        args = [find_anvil(), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if self.state is not None and self.state.exists():
            args += ["--load-state", str(self.state)]
        if self.block_time is not None:
            args += ["--block-time", str(self.block_time)]
        return args + self.extra_args

    def stop(self) -> None:
        """Stop the node, waiting for it to exit; with `state`, save the chain first
        (:class:`ChainError` if it cannot be read: the node is stopped all the same)."""
        try:
            if self.state is not None and self.running:
                write_atomically(self.state, dump_state(self.url), 0o600)
        finally:
            self._stop_process()
