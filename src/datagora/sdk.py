"""The data scientist's entry point: ``dg.connect()``.

>>> import datagora as dg
>>> market = dg.connect()                      # the network `datagora up` started
>>> hits = market.search("breast cancer")      # the catalog
>>> market.buy_and_order(hits[0]["id"]); df = market.to_pandas(hits[0]["id"])
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import httpx

from datagora.crypto.keys import Identity, default_keys_dir, list_accounts, load_account
from datagora.errors import ConfigError
from datagora.ledger import Ledger
from datagora.market import Endpoints, Marketplace
from datagora.node.network import Network, load_network


def keys_dir_for(net: Network | None, keys: Path | None = None) -> Path:
    """Where the account keystores are: explicit, $DATAGORA_KEYS_DIR, the local
    network's own (for `datagora up`), else ~/.datagora/keys."""
    if keys is not None:
        return keys
    if os.environ.get("DATAGORA_KEYS_DIR"):
        return default_keys_dir()
    if net is not None and net.state_dir and (Path(net.state_dir) / "keys").is_dir():
        return Path(net.state_dir) / "keys"
    return default_keys_dir()


def password_for(net: Network | None) -> str | None:
    """$DATAGORA_PASSWORD, or the development password `datagora up` generated."""
    env = os.environ.get("DATAGORA_PASSWORD")
    if env:
        return env
    if net is not None and net.state_dir and (Path(net.state_dir) / "password").is_file():
        return (Path(net.state_dir) / "password").read_text().strip()
    return None


def open_identity(
    net: Network | None, account: str | None, keys: Path | None, password: str | None
) -> Identity:
    folder = keys_dir_for(net, keys)
    name = account or os.environ.get("DATAGORA_ACCOUNT")
    if name is None:
        found = list_accounts(folder)
        if len(found) != 1:
            raise ConfigError(
                f"{len(found)} accounts in {folder}: choose one (account=... or "
                "$DATAGORA_ACCOUNT; see `datagora account list`)"
            )
        name = found[0].address
    secret = password or password_for(net)
    if secret is None:
        raise ConfigError("set DATAGORA_PASSWORD to the keystore password")
    return load_account(folder, name, secret)


class Market(Marketplace):
    """A :class:`Marketplace` with the catalog and pandas conveniences."""

    def search(self, q: str = "", **filters: Any) -> list[dict[str, Any]]:
        """Datasets matching `q` (word prefixes) and filters (tag, license, max_price, ...)."""
        if not self.endpoints.catalog:
            raise ConfigError("this network has no catalog")
        r = httpx.get(
            f"{self.endpoints.catalog.rstrip('/')}/datasets", params={"q": q, **filters}, timeout=10
        )
        if r.status_code != 200:
            raise ConfigError(f"the catalog refused the search: {r.text}")
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    def to_pandas(self, dataset: int) -> Any:
        """The dataset as a pandas DataFrame (CSV or Parquet), downloaded and verified."""
        import pandas as pd

        data = self.read_bytes(dataset)
        if data[:4] == b"PAR1":
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))

    def to_numpy(self, dataset: int) -> Any:
        return self.to_pandas(dataset).to_numpy()


def connect(
    network: Path | None = None,
    account: str | None = None,
    keys: Path | None = None,
    password: str | None = None,
) -> Market:
    """Connect to a datagora network (default: the one `datagora up` runs) as `account`.

    Without an account (none in the keystore directory) the market is read-only.
    """
    net = load_network(network)
    ledger = Ledger.connect(net.chain_url, net.deployment)
    folder = keys_dir_for(net, keys)
    identity = (
        open_identity(net, account, keys, password)
        if account or list_accounts(folder) or os.environ.get("DATAGORA_ACCOUNT")
        else None
    )
    endpoints = Endpoints(net.storage, net.proxies, max(net.threshold, 1), net.catalog)
    return Market(ledger, endpoints, identity)
