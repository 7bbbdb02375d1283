"""The `datagora bench …` commands, and finding the benchmarks they run (in the
repository's `benchmarks/` directory)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from datagora.cli.common import JsonFlag, print_fields, print_json
from datagora.errors import ConfigError


def _benchmarks_root() -> Path:
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        if (base / "benchmarks" / "__init__.py").is_file():
            return base
    raise ConfigError(
        "the benchmarks/ directory was not found: run `datagora bench` from a datagora checkout"
    )


def load_benchmark(name: str) -> ModuleType:
    root = str(_benchmarks_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"benchmarks.{name}")


bench_app = typer.Typer(
    help="Benchmarks that print ratios against this machine's own limits.", no_args_is_help=True
)


def _bench_output(result: dict[str, Any], as_json: bool) -> None:
    # The machine is shared and noisy: every benchmark says how loaded it was, as the
    # 1-, 5- and 15-minute load averages when it ended (the 5-minute one covers the run).
    result.setdefault("load_avg_at_end", [round(x, 2) for x in os.getloadavg()])
    if as_json:
        print_json(result)
        return
    print_fields(result)


@bench_app.command("ledger")
def bench_ledger(
    as_json: JsonFlag = False,
    txs: Annotated[int, typer.Option(help="Transactions in the throughput runs.")] = 1000,
) -> None:
    """Gas per operation and client throughput on a fresh anvil.

    Example: datagora bench ledger --json
    """
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
    _bench_output(load_benchmark("catalog").run(samples=samples, datasets=datasets), as_json)


@bench_app.command("access")
def bench_access(as_json: JsonFlag = False) -> None:
    """Order-to-key latency on anvil and a proxy's re-encryption rate vs bare umbral-pre.

    Example: datagora bench access --json
    """
    _bench_output(load_benchmark("access").run(), as_json)


@bench_app.command("compute")
def bench_compute(as_json: JsonFlag = False) -> None:
    """Sandboxed (bubblewrap) job overhead vs a bare Python process; federated vs central
    accuracy.

    Example: datagora bench compute --json
    """
    _bench_output(load_benchmark("compute").run(), as_json)


@bench_app.command("audit")
def bench_audit(as_json: JsonFlag = False) -> None:
    """The audit timeline of a dataset with 10,000 events, on anvil.

    Example: datagora bench audit --json
    """
    _bench_output(load_benchmark("audit").run(), as_json)


@bench_app.command("web")
def bench_web(
    as_json: JsonFlag = False,
    datasets: Annotated[int, typer.Option(help="Datasets in the catalog.")] = 10_000,
) -> None:
    """Server time to render the web node's search page over a catalog of 10,000 datasets.

    Example: datagora bench web --json
    """
    _bench_output(load_benchmark("web").run(datasets), as_json)


@bench_app.command("chaos")
def bench_chaos(
    as_json: JsonFlag = False,
    faults: Annotated[int, typer.Option(help="Faults to inject before the final check.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the random faults and operations.")] = 1,
    gap: Annotated[float, typer.Option(help="Mean seconds between faults.")] = 1.0,
) -> None:
    """Kill, stall and corrupt the parts of a local network while it publishes, sells and
    serves; then check nothing was lost or charged twice.

    Example: datagora bench chaos --json --faults 200
    """
    if faults < 1 or gap <= 0:
        raise ConfigError("need faults >= 1 and gap > 0")
    _bench_output(load_benchmark("chaos").run(faults=faults, seed=seed, gap=gap), as_json)
