"""The network file: where a datagora network's chain, contracts and nodes are.

`datagora up` writes it; the CLI and SDK read it by default. Lookup order:
``$DATAGORA_NETWORK``, then ``./.datagora/network.json``, then
``~/.datagora/network.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from datagora.atomic import write_atomically
from datagora.errors import ConfigError
from datagora.ledger import Deployment

NETWORK_FORMAT = 1

# The shape of a development network, whether its nodes are processes (`datagora up`)
# or threads of one process (the embedded network, the demo).
STORAGE_NODES: Final = 6
"""Storage nodes of a development network (`datagora up`, the embedded network)."""
PROXIES: Final = 3
"""Proxies of a development network."""
THRESHOLD: Final = 2
"""Of the proxies, how many re-encrypt a data key for a consumer."""
STARTING_TOKENS: Final = 1_000 * 10**18
"""Market tokens a development user account starts with."""
DEV_QUOTA_BYTES: Final = 1 << 40
"""The storage quota each development account gets on each storage node (1 TiB)."""
DEV_WRITERS: Final = range(10)
"""The development accounts (anvil's well-known keys) with a quota on the storage nodes."""


def dev_grants() -> dict[str, int]:
    """The storage quotas of a development network: every development account."""
    from datagora.ledger import dev_account

    return {dev_account(i).address: DEV_QUOTA_BYTES for i in DEV_WRITERS}


@dataclass
class Network:
    """A chain URL, the deployment on it, and the HTTP endpoints of the nodes."""

    chain_url: str
    deployment: Deployment
    storage: list[str] = field(default_factory=list)
    proxies: list[str] = field(default_factory=list)
    threshold: int = 0
    agent: str | None = None
    compute: str | None = None
    catalog: str | None = None
    web: str | None = None
    state_dir: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["deployment"] = json.loads(self.deployment.to_json())
        data["format"] = NETWORK_FORMAT
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        write_atomically(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Network:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read network file {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"network file {path} is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != NETWORK_FORMAT:
            raise ConfigError(f"network file {path}: unknown format")
        try:
            return cls(
                chain_url=str(data["chain_url"]),
                deployment=Deployment.from_json(json.dumps(data["deployment"]), str(path)),
                storage=[str(u) for u in data.get("storage", [])],
                proxies=[str(u) for u in data.get("proxies", [])],
                threshold=int(data.get("threshold", 0)),
                agent=data.get("agent"),
                compute=data.get("compute"),
                catalog=data.get("catalog"),
                web=data.get("web"),
                state_dir=data.get("state_dir"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"network file {path}: malformed ({exc})") from None


def network_path() -> Path | None:
    """The network file to use, or None if there is none."""
    explicit = os.environ.get("DATAGORA_NETWORK")
    if explicit:
        return Path(explicit)
    for candidate in (
        Path.cwd() / ".datagora" / "network.json",
        Path.home() / ".datagora" / "network.json",
    ):
        if candidate.is_file():
            return candidate
    return None


def load_network(path: Path | None = None) -> Network:
    """The network at `path` or the default one; a clear error if there is none."""
    found = path or network_path()
    if found is None:
        raise ConfigError(
            "no datagora network found: run `datagora up` (it writes .datagora/network.json), "
            "or set DATAGORA_NETWORK to a network file"
        )
    return Network.load(found)
