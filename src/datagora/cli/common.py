"""What the `datagora` command modules share: consoles, options, the account and the
market to act on. Every command module imports this one; none imports another."""

from __future__ import annotations

import json
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from datagora.errors import ConfigError, DatagoraError, Unreachable

if TYPE_CHECKING:
    from datagora.crypto.keys import Identity
    from datagora.market import Marketplace
    from datagora.node.network import Network

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
AccountOption = Annotated[
    str | None,
    typer.Option("--account", help="Account name or address (default: $DATAGORA_ACCOUNT)."),
]
KeysOption = Annotated[Path | None, typer.Option("--keys", help="Keystore directory.")]

err = Console(stderr=True)
out = Console()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def tokens(amount: str) -> int:
    """MarketTokens (a decimal string) to base units (18 decimals)."""
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise ConfigError(f"{amount!r} is not a number of tokens") from None
    if value < 0:
        raise ConfigError("a price cannot be negative")
    return int(value * 10**18)


def network_or_none() -> Network | None:
    """The default network, or None if there is no network file."""
    from datagora.node.network import load_network, network_path

    return load_network() if network_path() is not None else None


def keys_dir(keys: Path | None) -> Path:
    """The keystore directory (see :func:`datagora.node.connect.keys_dir_for`)."""
    from datagora.node.connect import keys_dir_for

    return keys_dir_for(network_or_none(), keys)


def password(confirm: bool = False) -> str:
    """The keystore password: from the environment or the network, else asked for."""
    from datagora.node.connect import password_for

    found = password_for(network_or_none())
    if found:
        return found
    if not sys.stdin.isatty():
        raise ConfigError("set DATAGORA_PASSWORD to the keystore password (no terminal to ask on)")
    return str(typer.prompt("keystore password", hide_input=True, confirmation_prompt=confirm))


def load_identity(account: str | None, keys: Path | None = None) -> Identity:
    """The account to act as, opened from its keystore."""
    from datagora.node.connect import open_identity

    return open_identity(network_or_none(), account, keys, password())


def marketplace(
    account: str | None, keys: Path | None = None, need_account: bool = True
) -> Marketplace:
    """A Marketplace on the default network (its compute node too), acting as `account`."""
    from datagora.node.connect import marketplace_for
    from datagora.node.network import load_network

    net = load_network()
    return marketplace_for(net, load_identity(account, keys) if need_account else None)


def what_to_do(exc: DatagoraError) -> str:
    """The message of a user error, with the next step where the CLI knows it better than
    the layer that raised it: an unreachable part of a network `datagora up` made means
    `up` is not running."""
    message = str(exc)
    if not isinstance(exc, Unreachable):
        return message
    from datagora.node.network import network_path

    path = network_path()
    try:
        net = network_or_none()
    except DatagoraError:
        net = None
    if net is None or path is None:
        return f"{message}; check the URL"
    urls = [net.chain_url, *net.storage, *net.proxies, net.agent, net.catalog, net.compute]
    ours = {u.rstrip("/") for u in urls if u}
    if exc.url is not None and exc.url.rstrip("/") not in ours:
        return f"{message}; check the URL"
    if net.state_dir:
        state = Path(net.state_dir)
        start = "datagora up"
        if state.resolve() != (Path.cwd() / ".datagora").resolve():
            start += f" --dir {state}"
        return f"{message}; is the network running? start it with `{start}`"
    return f"{message}; check that it runs, or the URLs in the network file {path}"
