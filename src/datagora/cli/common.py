"""What the `datagora` command modules share: consoles, options, the account and the
market to act on. Every command module imports this one; none imports another."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console

from datagora.display import (
    SYMBOL,
    format_amount,
    format_bool,
    format_list,
    format_time,
    format_value,
    parse_amount,
    short_hex,
    shorten_hexes,
)
from datagora.errors import ConfigError, DatagoraError, Unreachable

if TYPE_CHECKING:
    from datagora.crypto.keys import Identity
    from datagora.market import Marketplace
    from datagora.node.network import Network

__all__ = [
    "SYMBOL",
    "AccountOption",
    "JsonFlag",
    "KeysOption",
    "address_of",
    "err",
    "format_amount",
    "format_bool",
    "format_list",
    "format_time",
    "format_value",
    "keys_dir",
    "load_identity",
    "marketplace",
    "network_or_none",
    "out",
    "parse_amount",
    "password",
    "print_fields",
    "print_json",
    "short_hex",
    "shorten_hexes",
    "tokens",
    "what_to_do",
]

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON (shapes: docs/cli.md).")
]
AccountOption = Annotated[
    str | None,
    typer.Option("--account", help="Account name or address (default: $DATAGORA_ACCOUNT)."),
]
KeysOption = Annotated[Path | None, typer.Option("--keys", help="Keystore directory.")]

err = Console(stderr=True)
out = Console()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def tokens(amount: str, what: str = "amount") -> int:
    """MarketTokens as typed (a decimal string) to base units (see :func:`parse_amount`)."""
    return parse_amount(amount, what)


def print_fields(fields: dict[str, Any]) -> None:
    """A result for people: one ``key: value`` line each, values already formatted."""
    width = max((len(k) for k in fields), default=0)
    for key, value in fields.items():
        shown = value if isinstance(value, str) else format_value(value)
        out.print(f"[bold]{key + ':':<{width + 1}}[/bold] {shown}", highlight=False, soft_wrap=True)


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


def address_of(account: str, keys: Path | None = None) -> str:
    """An address as given, or the address of a named account in the keystore directory
    (nothing is decrypted)."""
    from eth_utils.address import is_hex_address, to_checksum_address

    from datagora.crypto.keys import list_accounts

    if is_hex_address(account):
        return str(to_checksum_address(account))
    directory = keys_dir(keys)
    for info in list_accounts(directory):
        if info.name == account:
            return info.address
    raise ConfigError(
        f"no account named {account!r} in {directory}: give an address, or create it with "
        f"`datagora account new --name {account}`"
    )


def marketplace(
    account: str | None, keys: Path | None = None, need_account: bool = True
) -> Marketplace:
    """A Marketplace on the default network (its compute node too), acting as `account`."""
    from datagora.node.connect import marketplace_for
    from datagora.node.network import load_network

    net = load_network()
    return marketplace_for(net, load_identity(account, keys) if need_account else None)


def io_failure(exc: OSError | httpx.TransportError) -> str:
    """One line for an input/output failure that no layer turned into a DatagoraError:
    a file's name and the system's reason, or a connection's reason and where to look."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    reason = found.group(1).strip() if found else (str(exc)[:200] or type(exc).__name__)
    return (
        f"a network request failed: {reason}; is the network running? "
        "(`datagora status` shows which part does not answer)"
    )


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
    if exc.url is not None and exc.url.rstrip("/") not in ours and exc.url != net.chain_url:
        # Not a part the file lists: maybe a node found in the registry.
        from datagora.node.connect import node_urls

        storage, proxies, compute = node_urls(net)
        ours |= {u.rstrip("/") for u in [*storage, *proxies, compute] if u}
    if exc.url is not None and exc.url.rstrip("/") not in ours:
        return f"{message}; check the URL"
    if net.state_dir:
        state = Path(net.state_dir)
        start = "datagora up"
        if state.resolve() != (Path.cwd() / ".datagora").resolve():
            start += f" --dir {state}"
        return f"{message}; is the network running? start it with `{start}`"
    return f"{message}; check that it runs, or the URLs in the network file {path}"
