"""The `datagora` command: one Typer app, one line per user error, tracebacks with --debug."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from datagora.errors import ConfigError, DatagoraError, NotFoundError

app = typer.Typer(
    name="datagora",
    help="datagora — a decentralized data marketplace for machine learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
chain_app = typer.Typer(
    help="Deploy and inspect datagora's contracts on a chain.", no_args_is_help=True
)
bench_app = typer.Typer(
    help="Benchmarks that print ratios against this machine's own limits.", no_args_is_help=True
)
app.add_typer(chain_app, name="chain")
app.add_typer(bench_app, name="bench")


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when something fails.")
    ] = False,
) -> None:
    """datagora — a decentralized data marketplace for machine learning."""
    # `main` consumes --debug before Typer parses; declaring it here documents it.


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


err = Console(stderr=True)
out = Console()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


@app.command()
def demo(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of the story.")
    ] = False,
) -> None:
    """Run the end-to-end story on the embedded chain (no set-up needed).

    Example: datagora demo --json
    """
    from datagora.cli.demo import run_demo

    result = run_demo(None if as_json else out)
    if as_json:
        print_json(result)
    failed = sorted(k for k, v in result.items() if v is False)
    if failed:
        raise DatagoraError("the demo's checks failed: " + ", ".join(failed))


def _catalog_url(catalog: str | None) -> str:
    if catalog:
        return catalog.rstrip("/")
    from datagora.node.network import load_network

    url = load_network().catalog
    if not url:
        raise ConfigError("the network has no catalog: pass --catalog URL")
    return url.rstrip("/")


def _catalog_get(url: str, path: str, params: dict[str, Any] | None = None) -> Any:
    import httpx

    try:
        r = httpx.get(url + path, params=params, timeout=10)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach the catalog at {url}: {exc}") from None
    if r.status_code == 404:
        raise NotFoundError(r.json().get("detail", "not found"))
    if r.status_code >= 400:
        detail = (
            r.json().get("detail", r.text)
            if r.headers.get("content-type", "").startswith("application/json")
            else r.text
        )
        raise ConfigError(f"the catalog refused the request: {detail}")
    return r.json()


CatalogOption = Annotated[
    str | None, typer.Option(help="Catalog URL (default: the network file's).")
]


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words to look for (prefixes match).")] = "",
    tag: Annotated[
        list[str] | None, typer.Option(help="Only datasets with this tag (repeat).")
    ] = None,
    license: Annotated[str | None, typer.Option(help="Only this license.")] = None,
    min_price: Annotated[float | None, typer.Option(help="Minimum price in MarketTokens.")] = None,
    max_price: Annotated[float | None, typer.Option(help="Maximum price in MarketTokens.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only datasets held by this address.")] = None,
    service: Annotated[str | None, typer.Option(help="download or compute.")] = None,
    has_mock: Annotated[
        bool | None, typer.Option("--has-mock/--no-mock", help="With mock data.")
    ] = None,
    sort: Annotated[
        str, typer.Option(help="relevance, newest, oldest, price_asc, price_desc, orders.")
    ] = "relevance",
    limit: Annotated[int, typer.Option(help="Results per page (1-100).")] = 20,
    offset: Annotated[int, typer.Option(help="Results to skip.")] = 0,
    catalog: CatalogOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Search the catalog.

    Example: datagora search "breast cancer" --tag medical --max-price 5
    """
    params: dict[str, Any] = {"q": query, "sort": sort, "limit": limit, "offset": offset}
    for name, value in (
        ("license", license),
        ("min_price", min_price),
        ("max_price", max_price),
        ("owner", owner),
        ("service", service),
        ("has_mock", has_mock),
    ):
        if value is not None:
            params[name] = value
    if tag:
        params["tag"] = tag
    result = _catalog_get(_catalog_url(catalog), "/datasets", params)
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    table = Table("id", "title", "tags", "license", "price", "services", "orders")
    for item in result["items"]:
        price = (
            "free"
            if item["pricing"] == "free"
            else (f"{int(item['price']) / 1e18:g}" if item["pricing"] == "fixed" else "-")
        )
        table.add_row(
            str(item["id"]),
            item["title"],
            " ".join(item["tags"]),
            item["license"],
            price,
            " ".join(item["services"]),
            str(item["orders"]),
        )
    out.print(table)
    out.print(f"{result['total']} dataset(s)")


@app.command()
def show(
    dataset: Annotated[int, typer.Argument(help="The dataset id.")],
    catalog: CatalogOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Show everything the catalog knows about a dataset.

    Example: datagora show 3
    """
    details = _catalog_get(_catalog_url(catalog), f"/datasets/{dataset}")
    if as_json:
        print_json(details)
        return
    for key in (
        "id",
        "title",
        "description",
        "owner",
        "license",
        "tags",
        "pricing",
        "price",
        "services",
        "version",
        "orders",
        "metadata_hash",
        "manifest_hash",
        "merkle_root",
        "datatoken",
    ):
        out.print(f"[bold]{key}[/bold]: {details.get(key)}")
    for v in details.get("versions", []):
        out.print(
            f"  version {v['version']} at block {v['block']}: metadata {v['metadata_hash'][:16]}…"
        )


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
) -> None:
    """Deploy every contract to the chain at --rpc and write the deployment record.

    Example: DATAGORA_PRIVATE_KEY=0x... datagora chain deploy --rpc http://127.0.0.1:8545
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
    out.print(f"deployed to chain {ledger.chain.chain_id}; record written to {out_file}")


@chain_app.command("info")
def chain_info(
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the chain.")],
    deployment: Annotated[Path, typer.Option(help="The deployment record.")] = Path(
        "deployment.json"
    ),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the contracts of a deployment and how many datasets it holds.

    Example: datagora chain info --rpc http://127.0.0.1:8545 --deployment deployment.json
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
    for k, v in info.items():
        out.print(f"[bold]{k}[/bold]: {v}")


@app.command()
def node(
    roles: Annotated[
        str, typer.Option(help="Comma-separated roles: storage, catalog, proxy, agent, compute.")
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
    proxy: Annotated[list[str] | None, typer.Option(help="agent: a proxy URL (repeat).")] = None,
    threshold: Annotated[int, typer.Option(help="agent: fragments a consumer needs.")] = 1,
    poll_interval: Annotated[
        float, typer.Option(help="catalog, agent: seconds between polls of the chain.")
    ] = 0.1,
    dataset: Annotated[
        list[str] | None,
        typer.Option(help="compute: ID=PATH, a dataset this node computes on (repeat)."),
    ] = None,
    allow_weak_sandbox: Annotated[
        bool, typer.Option(help="compute: run jobs even where no network namespace can be made.")
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
        compute_datasets=_compute_datasets(dataset or []),
        allow_weak_sandbox=allow_weak_sandbox,
        require_onchain_record=require_onchain_record,
        retention_grace=retention_grace,
    )
    serve(role_list, host, port, config, workers)


@app.command()
def up(
    state_dir: Annotated[
        Path, typer.Option("--dir", help="State directory (chain, keys, node data, logs).")
    ] = Path(".datagora"),
    storage: Annotated[int, typer.Option(help="Storage nodes.")] = 6,
    proxies: Annotated[int, typer.Option(help="Re-encryption proxies.")] = 3,
    threshold: Annotated[int, typer.Option(help="Proxies a consumer needs (t of m).")] = 2,
    allow_weak_sandbox: Annotated[
        bool, typer.Option(help="compute: run jobs even where no network namespace can be made.")
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


@app.command()
def status(
    network: Annotated[
        Path | None, typer.Option(help="Network file (default: the one `datagora up` wrote).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check the chain and every node of the network; exit 1 if any part is down.

    Example: datagora status --json
    """
    from datagora.node.network import load_network
    from datagora.node.status import NetworkDown, check_network

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


def _bench_output(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    for k, v in result.items():
        out.print(f"[bold]{k}[/bold]: {v}")


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


@bench_app.command("ledger")
def bench_ledger(
    as_json: JsonFlag = False,
    txs: Annotated[int, typer.Option(help="Transactions in the throughput runs.")] = 1000,
) -> None:
    """Gas per operation and client throughput on a fresh anvil.

    Example: datagora bench ledger --json
    """
    from datagora.cli.benchmarks import load_benchmark

    _bench_output(load_benchmark("ledger").run(txs), as_json)


@bench_app.command("storage")
def bench_storage(
    as_json: JsonFlag = False,
    size_mb: Annotated[int, typer.Option(help="Size of the test file in MiB.")] = 256,
    chunk_mb: Annotated[int, typer.Option(help="Chunk size in MiB.")] = 1,
    k: Annotated[int, typer.Option(help="Shares needed to rebuild a chunk.")] = 4,
    n: Annotated[int, typer.Option(help="Shares per chunk.")] = 6,
    nodes: Annotated[int, typer.Option(help="Storage node processes.")] = 6,
) -> None:
    """Publish and retrieve through local storage nodes, against the raw pipeline.

    Example: datagora bench storage --json --size-mb 256
    """
    from datagora.cli.benchmarks import load_benchmark

    if size_mb <= 0 or chunk_mb <= 0 or not 1 <= k <= n or nodes < n:
        raise ConfigError("need size-mb > 0, chunk-mb > 0, 1 <= k <= n and nodes >= n")
    result = load_benchmark("storage").run(
        size_mb=size_mb, chunk_mb=chunk_mb, k=k, n=n, nodes=nodes
    )
    _bench_output(result, as_json)


@bench_app.command("catalog")
def bench_catalog(
    as_json: JsonFlag = False,
    datasets: Annotated[int, typer.Option(help="Datasets in the search corpus.")] = 10_000,
    samples: Annotated[int, typer.Option(help="Publishes timed for index latency.")] = 20,
) -> None:
    """Index latency on anvil, search latency at 10,000 datasets, audit of 10,000 events.

    Example: datagora bench catalog --json
    """
    from datagora.cli.benchmarks import load_benchmark

    _bench_output(load_benchmark("catalog").run(samples=samples, datasets=datasets), as_json)


@bench_app.command("access")
def bench_access(as_json: JsonFlag = False) -> None:
    """Order-to-key latency on anvil and a proxy's re-encryption rate vs bare umbral-pre.

    Example: datagora bench access --json
    """
    from datagora.cli.benchmarks import load_benchmark

    _bench_output(load_benchmark("access").run(), as_json)


@bench_app.command("compute")
def bench_compute(as_json: JsonFlag = False) -> None:
    """Sandboxed job overhead vs a bare Python process; federated vs central accuracy.

    Example: datagora bench compute --json
    """
    from datagora.cli.benchmarks import load_benchmark

    _bench_output(load_benchmark("compute").run(), as_json)


@bench_app.command("audit")
def bench_audit(as_json: JsonFlag = False) -> None:
    """The audit timeline of a dataset with 10,000 events, on anvil.

    Example: datagora bench audit --json
    """
    from datagora.cli.benchmarks import load_benchmark

    _bench_output(load_benchmark("audit").run(), as_json)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 1; --debug shows tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        app(args=args, prog_name="datagora", standalone_mode=False)
    except DatagoraError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.TyperException as exc:
        # Usage errors (and "no arguments: here is the help") from the parser.
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"error: {exc}")
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except KeyboardInterrupt:
        sys.exit(130)


# The compute-to-data commands (compute …, jobs …, train) register themselves on `app`.
from datagora.cli import compute as _compute  # noqa: E402

del _compute
