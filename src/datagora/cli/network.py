"""The `datagora` commands that run and inspect a network: `demo`, `node`, `up`,
`status` and `chain …`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from datagora.cli.common import (
    AccountOption,
    JsonFlag,
    KeysOption,
    err,
    format_amount,
    format_time,
    load_identity,
    out,
    print_fields,
    print_json,
    short_hex,
    tokens,
)
from datagora.errors import ConfigError, DatagoraError

if TYPE_CHECKING:
    from datagora.storage.auth import QuotaBook

# Two groups so `datagora --help` keeps its order: demo, search, show, node, up, status.
demo_commands = typer.Typer()
commands = typer.Typer()
node_app = typer.Typer(
    help="Run a node, or manage its record in the on-chain NodeRegistry.",
    no_args_is_help=False,
)
commands.add_typer(node_app, name="node")
chain_app = typer.Typer(
    help="Deploy and inspect datagora's contracts on a chain.", no_args_is_help=True
)


@demo_commands.command()
def demo(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the story.")
    ] = False,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Directory for what the demo writes (kept; made if missing)."),
    ] = Path("datagora-demo-out"),
) -> None:
    """Run the end-to-end story on the embedded chain (no set-up needed).

    Example: datagora demo --json
    """
    from datagora.cli.demo import run_demo

    result = run_demo(None if as_json else out, out_dir)
    if as_json:
        print_json(result)
    failed = sorted(k for k, v in result.items() if v is False)
    if failed:
        raise DatagoraError("the demo's checks failed: " + ", ".join(failed))


@chain_app.command("deploy")
def chain_deploy(
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the chain.")],
    out_file: Annotated[
        Path, typer.Option("--out", help="Where to write the deployment record.")
    ] = Path("deployment.json"),
    key_env: Annotated[
        str, typer.Option(help="Environment variable holding the deployer's private key (hex).")
    ] = "DATAGORA_PRIVATE_KEY",
    protocol_fee_bps: Annotated[
        int, typer.Option(help="Protocol fee in basis points (max 500).")
    ] = 10,
    currency: Annotated[
        str | None,
        typer.Option(
            help="An existing ERC-20 to use as the market currency (default: deploy "
            "datagora's own MarketToken). Without EIP-2612 permit, buyers approve first."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Deploy every contract to the chain at --rpc and write the deployment record.

    Example: DATAGORA_PRIVATE_KEY=0x… datagora chain deploy --rpc http://host:8545
    """
    from eth_account import Account

    from datagora.ledger import Chain, Ledger

    key = os.environ.get(key_env)
    if not key:
        raise ConfigError(f"set {key_env} to the deployer's private key (it is never printed)")
    try:
        deployer = Account.from_key(key)
    except ValueError:
        raise ConfigError(f"{key_env} does not hold a valid private key") from None
    ledger = Ledger.deploy(Chain.rpc(rpc), deployer, protocol_fee_bps, currency=currency)
    ledger.deployment.save(out_file)
    if as_json:
        print_json(
            {
                "chain_id": ledger.chain.chain_id,
                "deployment": str(out_file),
                "contracts": ledger.deployment.contracts,
                "currency": ledger.deployment.currency or None,
            }
        )
        return
    money = f"; currency {ledger.deployment.currency}" if ledger.deployment.currency else ""
    out.print(
        f"deployed to chain {ledger.chain.chain_id}{money}; record written to {out_file}",
        highlight=False,
    )


@chain_app.command("base-uri")
def chain_base_uri(
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the chain.")],
    url: Annotated[
        str, typer.Option(help='The catalog\'s /nft/ URL, e.g. "https://catalog.example/nft/".')
    ],
    deployment: Annotated[Path, typer.Option(help="The deployment record.")] = Path(
        "deployment.json"
    ),
    key_env: Annotated[
        str, typer.Option(help="Environment variable holding the deployer's private key (hex).")
    ] = "DATAGORA_PRIVATE_KEY",
    as_json: JsonFlag = False,
) -> None:
    """Point DataNFT.tokenURI at a catalog, so that wallets fetch ERC-721 metadata JSON
    (signed by the deployer, whose key is in DATAGORA_PRIVATE_KEY).

    Example: datagora chain base-uri --rpc URL --url https://catalog.example/nft/
    """
    from eth_account import Account

    from datagora.ledger import Ledger

    key = os.environ.get(key_env)
    if not key:
        raise ConfigError(f"set {key_env} to the deployer's private key (it is never printed)")
    try:
        deployer = Account.from_key(key)
    except ValueError:
        raise ConfigError(f"{key_env} does not hold a valid private key") from None
    if url and not url.startswith(("https://", "http://")):
        raise ConfigError("the base URI must be an http(s) URL a wallet can fetch")
    ledger = Ledger.connect(rpc, deployment)
    tx = ledger.data_nft.set_base_uri(deployer, url)
    if as_json:
        print_json({"base_uri": url, "tx": tx.tx_hash, "gas": tx.gas_used})
        return
    out.print(f"tokenURI(id) is now {url}<id>", highlight=False)


@chain_app.command("info")
def chain_info(
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the chain.")],
    deployment: Annotated[Path, typer.Option(help="The deployment record.")] = Path(
        "deployment.json"
    ),
    as_json: JsonFlag = False,
) -> None:
    """Show the contracts of a deployment and how many datasets it holds.

    Example: datagora chain info --rpc http://127.0.0.1:8545 --deployment d.json
    """
    from datagora.ledger import Ledger

    ledger = Ledger.connect(rpc, deployment)
    info = {
        "chain_id": ledger.chain.chain_id,
        "block": ledger.chain.block_number,
        "datasets": ledger.data_nft.dataset_count(),
        "contracts": ledger.deployment.contracts,
    }
    if as_json:
        print_json(info)
        return
    print_fields(
        {
            "chain id": info["chain_id"],
            "block": info["block"],
            "datasets": info["datasets"],
            **{f"  {name}": address for name, address in ledger.deployment.contracts.items()},
        }
    )


quota_app = typer.Typer(
    help="Byte quotas of the accounts that may write to a storage node.", no_args_is_help=True
)
node_app.add_typer(quota_app, name="quota")


@node_app.callback(invoke_without_command=True)
def node(
    ctx: typer.Context,
    roles: Annotated[
        str | None,
        typer.Option(help="Comma-separated roles: storage, catalog, proxy, agent, compute, web."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port to listen on.")] = None,
    data: Annotated[Path | None, typer.Option(help="Directory for this node's data.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    max_share_mb: Annotated[
        int, typer.Option(help="storage: largest share accepted, in MiB.")
    ] = 64,
    rpc: Annotated[str | None, typer.Option(help="JSON-RPC URL of the chain.")] = None,
    deployment: Annotated[
        Path | None, typer.Option(help="catalog: the deployment record (JSON).")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(help="catalog: SQLAlchemy URL (default: SQLite in the data directory)."),
    ] = None,
    storage_node: Annotated[
        list[str] | None,
        typer.Option(
            help="catalog, compute: a storage node URL (metadata; compute: the owner's "
            "published datasets, fetched and decrypted per job) (repeat)."
        ),
    ] = None,
    confirmations: Annotated[
        int, typer.Option(help="catalog: blocks to wait before indexing.")
    ] = 0,
    keys: Annotated[
        Path | None,
        typer.Option(help="proxy, agent: keystore directory (default ~/.datagora/keys)."),
    ] = None,
    account: Annotated[
        str | None, typer.Option(help="proxy, agent: the account (address or name) to act as.")
    ] = None,
    password_env: Annotated[
        str, typer.Option(help="Environment variable holding the keystore password.")
    ] = "DATAGORA_PASSWORD",
    anchor_every: Annotated[
        float, typer.Option(help="proxy: seconds between access-log anchors on chain.")
    ] = 60.0,
    proxy: Annotated[
        list[str] | None, typer.Option(help="agent, web: a proxy URL (repeat).")
    ] = None,
    catalog: Annotated[
        str | None, typer.Option(help="web: the catalog node's URL the pages read.")
    ] = None,
    compute: Annotated[
        str | None, typer.Option(help="web: the compute node the page's requests go to.")
    ] = None,
    threshold: Annotated[
        int,
        typer.Option(
            help="agent: fragments a consumer needs (0: 2 with several proxies, else 1; "
            "1 with several proxies is refused)."
        ),
    ] = 0,
    delegation: Annotated[
        Path | None,
        typer.Option(
            help="agent: the owner's delegation keys sealed to --account, an agent key the "
            "owner authorised (datagora account authorize-agent)."
        ),
    ] = None,
    poll_interval: Annotated[
        float, typer.Option(help="catalog, agent: seconds between polls of the chain.")
    ] = 0.1,
    dataset: Annotated[
        list[str] | None,
        typer.Option(help="compute: ID=PATH, a dataset this node computes on (repeat)."),
    ] = None,
    allow_weak_sandbox: Annotated[
        bool, typer.Option(help="compute: run jobs without bubblewrap (NO isolation).")
    ] = False,
    max_jobs_per_dataset: Annotated[
        int | None,
        typer.Option(
            help="compute: open jobs (pending review, queued, running) one dataset may have; "
            "the next is refused with 429 (default 32)."
        ),
    ] = None,
    max_jobs_per_consumer: Annotated[
        int | None,
        typer.Option(help="compute: open jobs one consumer may have on this node (default 16)."),
    ] = None,
    require_onchain_record: Annotated[
        bool,
        typer.Option(
            help="storage: keep only data the ledger records (needs --rpc and --deployment); "
            "anything unrecorded is deleted after --retention-grace seconds."
        ),
    ] = False,
    retention_grace: Annotated[
        float,
        typer.Option(help="storage: seconds unrecorded data is kept (the publish's time)."),
    ] = 3600.0,
    workers: Annotated[
        int,
        typer.Option(help="proxy (alone): processes serving the port, e.g. one per core."),
    ] = 1,
    public_url: Annotated[
        list[str] | None,
        typer.Option(
            help="storage: a URL clients reach this node by; signed writes must name one "
            "(repeat; default: the URL each request was sent to)."
        ),
    ] = None,
    chain_id: Annotated[
        int | None,
        typer.Option(help="storage without --rpc: the chain id writes are signed for."),
    ] = None,
    accept_deals: Annotated[
        bool,
        typer.Option(
            help="storage with --rpc and --account: join the storage deals naming this "
            "node that match the shares it holds (posting their collateral)."
        ),
    ] = False,
    prove_every: Annotated[
        float,
        typer.Option(help="storage with --rpc and --account: seconds between deal checks."),
    ] = 12.0,
) -> None:
    """Run a node serving the given roles until interrupted; or, with a command, manage
    this node's record in the on-chain NodeRegistry (register, update, leave, list).

    A storage node accepts writes only signed by accounts with a quota on it
    (`datagora node quota grant`); with --rpc and --deployment it also checks that
    placement records come from the dataset's controller, and an owner with an open
    storage deal naming this node may write its dataset to it. With --account as
    well, the node proves the deals naming it each period by itself (and joins new
    ones with --accept-deals).

    Example: datagora node --roles storage --port 7001 --data ./node1
    """
    from datagora.node import NodeConfig, serve

    if ctx.invoked_subcommand is not None:
        if roles is not None or port is not None or data is not None:
            raise ConfigError(
                f"`datagora node {ctx.invoked_subcommand}` takes its own options: "
                "give --roles, --port and --data only to run a node"
            )
        return
    if roles is None or port is None or data is None:
        raise ConfigError(
            "to run a node give --roles, --port and --data; or use a command: "
            "register, update, add-stake, leave, withdraw, list, quota (see --help)"
        )
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    if max_share_mb <= 0:
        raise ConfigError("--max-share-mb must be positive")
    if confirmations < 0:
        raise ConfigError("--confirmations must not be negative")
    if retention_grace < 0:
        raise ConfigError("--retention-grace must not be negative")
    for flag, cap in (
        ("--max-jobs-per-dataset", max_jobs_per_dataset),
        ("--max-jobs-per-consumer", max_jobs_per_consumer),
    ):
        if cap is not None and cap < 1:
            raise ConfigError(f"{flag} must be at least 1, got {cap}")
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    config = NodeConfig(
        data_dir=data,
        max_share_bytes=max_share_mb << 20,
        rpc=rpc,
        deployment=deployment,
        database=db,
        storage_nodes=list(storage_node or []),
        confirmations=confirmations,
        poll_interval=poll_interval,
        keys_dir=keys,
        account=account,
        password_env=password_env,
        anchor_every=anchor_every,
        proxies=list(proxy or []),
        threshold=threshold,
        catalog=catalog,
        compute=compute,
        delegation=delegation,
        compute_datasets=_compute_datasets(dataset or []),
        allow_weak_sandbox=allow_weak_sandbox,
        max_jobs_per_dataset=max_jobs_per_dataset,
        max_jobs_per_consumer=max_jobs_per_consumer,
        require_onchain_record=require_onchain_record,
        retention_grace=retention_grace,
        public_urls=list(public_url or []),
        chain_id=chain_id,
        accept_deals=accept_deals,
        prove_every=prove_every,
    )
    serve(role_list, host, port, config, workers)


def _registry_ledger() -> Any:
    """The ledger of the default network (for the registry commands)."""
    from datagora.ledger import Ledger
    from datagora.node.network import load_network

    net = load_network()
    return Ledger.connect(net.chain_url, net.deployment)


def _node_json(info: Any) -> dict[str, Any]:
    return {
        "address": info.address,
        "roles": info.roles.names(),
        "endpoint": info.endpoint,
        "umbral_pk": info.umbral_pk.hex(),
        "stake": str(info.stake),
        "state": info.state.name.lower(),
        "unbond_at": info.unbond_at,
    }


def _tx_json(tx: Any) -> dict[str, Any]:
    return {"tx": tx.tx_hash, "block": tx.block_number, "gas": tx.gas_used}


EndpointOption = Annotated[
    str,
    typer.Option("--endpoint", help="The node's public http(s) URL, e.g. https://n1.example.org."),
]


@node_app.command("register")
def node_register(
    roles: Annotated[
        str, typer.Option("--roles", help="Comma-separated: storage, proxy, compute.")
    ],
    endpoint: EndpointOption,
    stake: Annotated[
        str | None,
        typer.Option("--stake", help="Tokens to stake (default: the minimum for the roles)."),
    ] = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Register this account as a node in the NodeRegistry, staking market tokens.

    A proxy registers its account's Umbral public key with it.

    Example: datagora node register --roles storage --endpoint https://n1.org
    """
    from datagora.ledger import Role

    parsed = Role.parse(roles)
    ledger = _registry_ledger()
    identity = load_identity(account, keys)
    registry = ledger.registry
    amount = registry.required_stake(parsed) if stake is None else tokens(stake, "--stake")
    umbral_pk = identity.umbral_public_key if Role.PROXY in parsed else b""
    tx = registry.register(identity.account, parsed, endpoint, amount, umbral_pk)
    info = registry.node(identity.address)
    if as_json:
        print_json({**_node_json(info), **_tx_json(tx)})
        return
    out.print(
        f"registered {info.address} as {', '.join(info.roles.names())} at {info.endpoint}, "
        f"staking {format_amount(info.stake)} (gas {tx.gas_used})",
        highlight=False,
        soft_wrap=True,
    )


@node_app.command("update")
def node_update(
    endpoint: EndpointOption,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Change this node's endpoint in the NodeRegistry (a proxy's Umbral key is renewed).

    Example: datagora node update --endpoint https://n1.example.org:8443
    """
    from datagora.ledger import Role

    ledger = _registry_ledger()
    identity = load_identity(account, keys)
    registry = ledger.registry
    current = registry.node(identity.address)
    umbral_pk = identity.umbral_public_key if Role.PROXY in current.roles else current.umbral_pk
    tx = registry.update(identity.account, endpoint, umbral_pk)
    info = registry.node(identity.address)
    if as_json:
        print_json({**_node_json(info), **_tx_json(tx)})
        return
    out.print(f"{info.address} now serves at {info.endpoint}", highlight=False, soft_wrap=True)


@node_app.command("add-stake")
def node_add_stake(
    amount: Annotated[str, typer.Argument(help="Tokens to add, e.g. 5 or 2.5.")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Add market tokens to this node's stake (e.g. after a slash left it under the minimum).

    Example: datagora node add-stake 5
    """
    ledger = _registry_ledger()
    identity = load_identity(account, keys)
    tx = ledger.registry.add_stake(identity.account, tokens(amount, "AMOUNT"))
    info = ledger.registry.node(identity.address)
    if as_json:
        print_json({**_node_json(info), **_tx_json(tx)})
        return
    out.print(f"{info.address} stakes {format_amount(info.stake)}", highlight=False)


@node_app.command("leave")
def node_leave(
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Stop serving: clients stop using the node at once; its stake unbonds (and can
    still be slashed) until the registry's delay has passed, then `withdraw` returns it.

    Example: datagora node leave
    """
    ledger = _registry_ledger()
    identity = load_identity(account, keys)
    unbond_at, tx = ledger.registry.leave(identity.account)
    if as_json:
        print_json({"address": identity.address, "unbond_at": unbond_at, **_tx_json(tx)})
        return
    out.print(
        f"{identity.address} is leaving; withdraw its stake from {format_time(unbond_at)} "
        "with `datagora node withdraw`",
        highlight=False,
        soft_wrap=True,
    )


@node_app.command("withdraw")
def node_withdraw(
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """After `leave` and the unbonding delay, take back what is left of the stake.

    Example: datagora node withdraw
    """
    ledger = _registry_ledger()
    identity = load_identity(account, keys)
    amount, tx = ledger.registry.withdraw(identity.account)
    if as_json:
        print_json({"address": identity.address, "amount": str(amount), **_tx_json(tx)})
        return
    out.print(f"withdrew {format_amount(amount)} to {identity.address}", highlight=False)


@node_app.command("list")
def node_list(
    role: Annotated[
        str | None,
        typer.Option("--role", help="Only nodes with this role: storage, proxy, compute."),
    ] = None,
    all_nodes: Annotated[
        bool, typer.Option("--all", help="Also nodes that left, are leaving or are under-staked.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The nodes in the NodeRegistry: roles, endpoint, stake and state (by default only
    those clients use: active and staked at least their roles' minimum).

    Example: datagora node list --role storage
    """
    from datagora.ledger import Role

    registry = _registry_ledger().registry
    wanted = Role.parse(role) if role else None
    usable = {n.address for n in registry.nodes(wanted)}
    shown = registry.nodes(wanted, active_only=False) if all_nodes else registry.nodes(wanted)

    def state(info: Any) -> str:
        name = str(info.state.name.lower())
        if name == "active" and info.address not in usable:
            return "under-staked"
        return name

    if as_json:
        print_json([{**_node_json(n), "state": state(n)} for n in shown])
        return
    if not shown:
        out.print("no nodes registered" + (f" with role {role}" if role else ""))
        return
    from rich.table import Table

    table = Table("address", "roles")
    table.add_column("endpoint", overflow="fold")  # whole: it is what one copies
    table.add_column("stake", no_wrap=True)
    table.add_column("state", overflow="fold")
    for n in shown:
        when = f" until {format_time(n.unbond_at)}" if n.state.name == "LEAVING" else ""
        table.add_row(
            short_hex(n.address),
            ", ".join(n.roles.names()),
            n.endpoint,
            format_amount(n.stake),
            state(n) + when,
        )
    out.print(table)


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}  # fmt: skip


def parse_bytes(text: str) -> int:
    """``"10GiB"``, ``"500MB"`` or ``"1048576"`` as a number of bytes."""
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("kmgtib")
    unit = raw[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value < 0 or value != value:
        raise ConfigError(f"not a size in bytes: {text!r} (e.g. 1048576, 500MB, 10GiB)")
    return int(value * _UNITS[unit])


_QuotaData = Annotated[
    Path, typer.Option("--data", help="The storage node's data directory (its --data).")
]


def _quota_book(data: Path) -> QuotaBook:
    from datagora.storage.auth import QuotaBook

    storage = data / "storage"
    if not storage.is_dir():
        raise ConfigError(f"{data} holds no storage node's data (no {storage})")
    return QuotaBook.in_dir(storage)


@quota_app.command("grant")
def quota_grant(
    account: Annotated[str, typer.Argument(help="The account (0x address) that may write.")],
    size: Annotated[str, typer.Argument(help="Bytes it may store, e.g. 10GiB (0 revokes).")],
    data: _QuotaData,
    as_json: JsonFlag = False,
) -> None:
    """Let an account store up to SIZE bytes on this storage node (replaces its grant).

    Example: datagora node quota grant $ACCOUNT 10GiB --data ./node1
    """
    from datagora.storage.auth import check_account

    amount = parse_bytes(size)
    book = _quota_book(data)
    try:
        book.grant(account, amount)
        entry = {"account": check_account(account), "granted": amount,
                 "used": book.used(check_account(account))}  # fmt: skip
    finally:
        book.close()
    if as_json:
        print_json(entry)
    else:
        print_fields(entry)


@quota_app.command("list")
def quota_list(data: _QuotaData, as_json: JsonFlag = False) -> None:
    """The accounts with a quota on this storage node: granted and used bytes.

    Example: datagora node quota list --data ./node1 --json
    """
    book = _quota_book(data)
    try:
        entries = [
            {"account": e.account, "granted": e.granted, "used": e.used} for e in book.entries()
        ]
    finally:
        book.close()
    if as_json:
        print_json({"quotas": entries})
        return
    if not entries:
        out.print("no account has a quota on this node")
    for e in entries:
        out.print(f"{e['account']}  granted {e['granted']:>16}  used {e['used']:>16}")


@commands.command()
def up(
    state_dir: Annotated[
        Path, typer.Option("--dir", help="State directory (chain, keys, node data, logs).")
    ] = Path(".datagora"),
    storage: Annotated[int, typer.Option(help="Storage nodes.")] = 6,
    proxies: Annotated[int, typer.Option(help="Re-encryption proxies.")] = 3,
    threshold: Annotated[int, typer.Option(help="Proxies a consumer needs (t of m).")] = 2,
    allow_weak_sandbox: Annotated[
        bool, typer.Option(help="compute: run jobs without bubblewrap (NO isolation).")
    ] = False,
    repair_watch: Annotated[
        bool,
        typer.Option(
            help="Run the owner's storage-deal repair watcher (as `storage watch` does): "
            "a deal node that leaves or is slashed has its shares moved elsewhere."
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object when the network is ready.")
    ] = False,
) -> None:
    """Start a local development network of real processes; Ctrl-C stops it.

    Example: datagora up --storage 6 --proxies 3 --threshold 2
    """
    from datagora.node.launcher import LaunchPlan, ready_printer, run_up

    plan = LaunchPlan(state_dir, storage, proxies, threshold, allow_weak_sandbox, repair_watch)
    run_up(plan, lambda line: err.print(line, highlight=False), ready_printer(out, as_json))


@commands.command()
def status(
    network: Annotated[
        Path | None, typer.Option(help="Network file (default: the one `datagora up` wrote).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check the chain and every node of the network; exit 1 if any part is down.

    Example: datagora status --json
    """
    from datagora.node.errors import NetworkDown
    from datagora.node.network import load_network
    from datagora.node.status import check_network

    parts = check_network(load_network(network))
    if as_json:
        print_json({"ok": all(p.ok for p in parts), "parts": [p.to_json() for p in parts]})
    else:
        for p in parts:
            mark = "[green]ok  [/green]" if p.ok else "[red]down[/red]"
            out.print(
                f"{mark} {p.part:<10} {p.url:<24} {p.detail}", highlight=False, soft_wrap=True
            )
    down = [p.part for p in parts if not p.ok]
    if down:
        raise NetworkDown(f"{len(down)} of {len(parts)} parts down: {', '.join(down)}")


def _compute_datasets(specs: list[str]) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for spec in specs:
        ident, sep, path = spec.partition("=")
        if not sep or not ident.isdigit() or not path:
            raise ConfigError(f"--dataset takes ID=PATH, got {spec!r}")
        if not Path(path).is_file():
            raise ConfigError(f"--dataset {ident}: {path} is not a file")
        out[int(ident)] = Path(path)
    return out
