"""The `datagora` commands that run and inspect a network: `demo`, `node`, `up`,
`status` and `chain …`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from datagora.cli.common import JsonFlag, err, out, print_fields, print_json
from datagora.errors import ConfigError, DatagoraError

# Two groups so `datagora --help` keeps its order: demo, search, show, node, up, status.
demo_commands = typer.Typer()
commands = typer.Typer()
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
    ledger = Ledger.deploy(Chain.rpc(rpc), deployer, protocol_fee_bps)
    ledger.deployment.save(out_file)
    if as_json:
        print_json(
            {
                "chain_id": ledger.chain.chain_id,
                "deployment": str(out_file),
                "contracts": ledger.deployment.contracts,
            }
        )
        return
    out.print(f"deployed to chain {ledger.chain.chain_id}; record written to {out_file}")


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


@commands.command()
def node(
    roles: Annotated[
        str,
        typer.Option(help="Comma-separated roles: storage, catalog, proxy, agent, compute, web."),
    ],
    port: Annotated[int, typer.Option(help="TCP port to listen on.")],
    data: Annotated[Path, typer.Option(help="Directory for this node's data.")],
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
    threshold: Annotated[int, typer.Option(help="agent: fragments a consumer needs.")] = 1,
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
) -> None:
    """Run a node serving the given roles until interrupted.

    Example: datagora node --roles storage --port 7001 --data ./node1
    """
    from datagora.node import NodeConfig, serve

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    if max_share_mb <= 0:
        raise ConfigError("--max-share-mb must be positive")
    if confirmations < 0:
        raise ConfigError("--confirmations must not be negative")
    if retention_grace < 0:
        raise ConfigError("--retention-grace must not be negative")
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
        compute_datasets=_compute_datasets(dataset or []),
        allow_weak_sandbox=allow_weak_sandbox,
        require_onchain_record=require_onchain_record,
        retention_grace=retention_grace,
    )
    serve(role_list, host, port, config, workers)


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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object when the network is ready.")
    ] = False,
) -> None:
    """Start a local development network of real processes; Ctrl-C stops it.

    Example: datagora up --storage 6 --proxies 3 --threshold 2
    """
    from datagora.node.launcher import LaunchPlan, ready_printer, run_up

    plan = LaunchPlan(state_dir, storage, proxies, threshold, allow_weak_sandbox)
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
