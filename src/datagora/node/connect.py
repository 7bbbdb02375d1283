"""One way to connect: which account acts, and the market a network gives it.

Account resolution (the keystore directory, its password, the account) and the
assembly of a :class:`~datagora.market.Marketplace` from a network file live here;
the CLI, the SDK, the demo, `datagora up` and the embedded network use them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar, overload

from datagora.crypto.keys import Identity, default_keys_dir, list_accounts, load_account
from datagora.errors import ConfigError, DatagoraError
from datagora.ledger import Ledger, dev_account
from datagora.market import Endpoints, Marketplace, discover
from datagora.node.network import Network

__all__ = [
    "dev_identity",
    "endpoints_for",
    "has_account",
    "keys_dir_for",
    "marketplace_for",
    "node_urls",
    "open_identity",
    "password_for",
]


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
    """The account to act as (`account`, else $DATAGORA_ACCOUNT, else the only one in
    the keystore directory), opened with `password` or :func:`password_for`."""
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


def has_account(net: Network | None, account: str | None, keys: Path | None) -> bool:
    """Whether an account is named or the keystore directory holds any (else read-only)."""
    return bool(
        account or os.environ.get("DATAGORA_ACCOUNT") or list_accounts(keys_dir_for(net, keys))
    )


def dev_identity(index: int) -> Identity:
    """Development account `index` (0-9) as an identity."""
    if not 0 <= index < 10:
        raise ConfigError(f"the embedded network has development accounts 0-9, not {index}")
    return Identity.from_private_key(bytes(dev_account(index).key))


def endpoints_for(net: Network) -> Endpoints:
    """The nodes `net` names (storage, proxies, catalog, compute); a network without a
    list of one role finds those nodes in the registry (:func:`marketplace_for`)."""
    return Endpoints(
        net.storage, net.proxies, max(net.threshold, 1), net.catalog, compute=net.compute
    )


def node_urls(net: Network) -> tuple[list[str], list[str], str | None]:
    """The storage nodes, proxies and compute node of `net`: those its file lists, else
    those active in the NodeRegistry (nothing from the registry when the chain does not
    answer: this is for status lines and hints, never for acting)."""
    storage, proxies, compute = list(net.storage), list(net.proxies), net.compute
    if storage and proxies and compute:
        return storage, proxies, compute
    try:
        found = discover(Ledger.connect(net.chain_url, net.deployment), endpoints_for(net))
    except DatagoraError:
        return storage, proxies, compute
    return found.storage, found.proxies, found.compute


M = TypeVar("M", bound=Marketplace)


@overload
def marketplace_for(net: Network, identity: Identity | None) -> Marketplace: ...
@overload
def marketplace_for(net: Network, identity: Identity | None, kind: type[M]) -> M: ...
def marketplace_for(
    net: Network, identity: Identity | None, kind: type[Marketplace] = Marketplace
) -> Marketplace:
    """A :class:`Marketplace` (or the subclass `kind`) on `net`'s chain and nodes, acting
    as `identity` (None: read-only). Storage nodes, proxies and the compute node the
    network file does not list are discovered from the on-chain NodeRegistry."""
    ledger = Ledger.connect(net.chain_url, net.deployment)
    account = identity.address if identity is not None else None
    return kind(ledger, discover(ledger, endpoints_for(net), account), identity)
