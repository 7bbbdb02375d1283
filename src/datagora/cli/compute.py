"""The `datagora` commands for compute-to-data: `compute …` (consumers, and `compute
offer` for owners), `jobs …` (owners review the jobs on their datasets) and `train`
(federated training over several datasets)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from datagora.cli.common import (
    AccountOption,
    JsonFlag,
    KeysOption,
    err,
    marketplace,
    out,
    print_json,
    short_hex,
    tokens,
)
from datagora.errors import ConfigError, Unreachable

commands = typer.Typer()
compute_app = typer.Typer(
    help="Compute-to-data: run your algorithm next to a dataset you never see.",
    no_args_is_help=True,
)
jobs_app = typer.Typer(
    help="As a dataset's owner: list, review, approve and deny compute jobs on it.",
    no_args_is_help=True,
)

NodeOption = Annotated[
    str | None, typer.Option("--node", help="Compute node URL (default: the network file's).")
]


def _node_url(m: Any, node: str | None) -> str:
    url = node or m.endpoints.compute
    if not url:
        raise ConfigError("the network file names no compute node: pass --node URL")
    return str(url)


@contextlib.contextmanager
def _reaching(what: str) -> Iterator[None]:
    """Network failures as one line saying which node could not be reached."""
    import httpx

    try:
        yield
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach the compute node at {what}: {exc}", what) from None


def _params(pairs: list[str], params_file: Path | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if params_file is not None:
        try:
            loaded = json.loads(params_file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read --params-file {params_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--params-file {params_file} must hold a JSON object")
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(raw)  # numbers, booleans, lists: as JSON
        except ValueError:
            params[key] = raw  # anything else: as text
    return params


def _show_status(info: dict[str, Any]) -> None:
    line = f"job {info['job']} on dataset {info['dataset']}: {info['state']}"
    if info.get("reason"):
        line += f" ({info['reason']})"
    if info.get("epsilon"):
        line += f"; epsilon {info['epsilon']:g}"
    out.print(line, highlight=False, markup=False)


def _algorithm(arg: str) -> str:
    """A built-in algorithm's name, or a file."""
    from datagora.market.compute import BUILTIN_ALGORITHMS, load_algorithm

    return load_algorithm(arg if arg in BUILTIN_ALGORITHMS else Path(arg))


def _wait(job: Any, timeout: float) -> dict[str, Any]:
    """Poll the job until it has finished, with a spinner showing its state."""
    import time

    from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn

    from datagora.compute.errors import ComputeError

    deadline = time.monotonic() + timeout
    with Progress(
        SpinnerColumn(), "{task.description}", TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task(f"job {job.job}", total=None)
        while True:
            info: dict[str, Any] = job.status()
            bar.update(task, description=f"job {job.job}: {info['state']}")
            if info["state"] in ("succeeded", "failed", "denied"):
                return info
            if info["state"] == "pending":
                return info  # waits for the owner's review: do not block on a person
            if time.monotonic() > deadline:
                raise ComputeError(f"job {job.job} is still {info['state']} after {timeout:g} s")
            time.sleep(0.2)


# -- consumers ------------------------------------------------------------------------------


@compute_app.command("submit")
def compute_submit(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    algorithm: Annotated[
        str, typer.Option(help="The algorithm: a .py file defining run(inputs, params, out).")
    ],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="KEY=VALUE (VALUE as JSON if it parses).")
    ] = None,
    params_file: Annotated[Path | None, typer.Option(help="A JSON object of parameters.")] = None,
    max_price: Annotated[
        str | None, typer.Option(help="Refuse to pay more for the order (MarketTokens).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the job has finished.")] = False,
    node: NodeOption = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Order the dataset's compute service if needed, sign the job and submit it to the
    owner's compute node; prints the job id.

    Example: datagora compute submit 3 --algorithm train.py --param C=0.5
    """
    from datagora.market.compute import Job, node_client, order_for

    m = marketplace(account, keys)
    params = _params(param or [], params_file)
    code = _algorithm(algorithm)
    url = _node_url(m, node)
    client = node_client(m, url)
    try:
        with _reaching(url):
            # The node says first whether it computes on the dataset: no order, no payment
            # for a job it would refuse.
            order, ordered = order_for(
                m, client, dataset, tokens(max_price, "--max-price") if max_price else None
            )
            if ordered and not as_json:
                err.print(f"ordered the compute service of dataset {dataset}", highlight=False)
            job = Job(client.submit(dataset, order, code, params), dataset, client, m)
            info = _wait(job, 600.0) if wait else job.status()
    finally:
        client.close()
    if as_json:
        print_json({**info, "order": order, "ordered": ordered})
    elif wait:
        _show_status(info)
    else:
        out.print(f"submitted job {job.job} ({info['state']})", highlight=False)


@compute_app.command("status")
def compute_status(
    job: Annotated[int, typer.Argument(help="Job id.")],
    node: NodeOption = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """The state of one of your jobs (only the consumer who submitted it may ask).

    Example: datagora compute status 7 --json
    """
    from datagora.market.compute import job_handle

    m = marketplace(account, keys)
    url = _node_url(m, node)
    with _reaching(url):
        info = job_handle(m, job, url).status()
    record = m.ledger.compute.job(job)
    info["on_chain"] = record.status.name.lower()
    if as_json:
        print_json(info)
    else:
        _show_status(info)


@compute_app.command("logs")
def compute_logs(
    job: Annotated[int, typer.Argument(help="Job id.")],
    node: NodeOption = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a job's logs (stdout and stderr, capped), decrypted for you.

    Example: datagora compute logs 7
    """
    from datagora.market.compute import job_handle

    m = marketplace(account, keys)
    url = _node_url(m, node)
    with _reaching(url):
        text = job_handle(m, job, url).logs()
    if as_json:
        print_json({"job": job, "logs": text})
        return
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


@compute_app.command("result")
def compute_result(
    job: Annotated[int, typer.Argument(help="Job id.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to unpack into.")],
    node: NodeOption = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Fetch a job's result, check it against the hash on chain, decrypt it (only the
    consumer can) and unpack it into a directory.

    Example: datagora compute result 7 -o results/
    """
    from datagora.compute.client import extract_archive
    from datagora.market.compute import job_handle

    m = marketplace(account, keys)
    url = _node_url(m, node)
    with _reaching(url):
        archive = job_handle(m, job, url).result()
    files = extract_archive(archive, output)
    rel = sorted(str(f.relative_to(output)) for f in files)
    if as_json:
        print_json(
            {
                "job": job,
                "output": str(output),
                "files": rel,
                "result_hash": m.ledger.compute.job(job).result.hex(),
            }
        )
    else:
        out.print(f"job {job}: {len(rel)} file(s) in {output}: {', '.join(rel)}", highlight=False)


@compute_app.command("offer")
def compute_offer(
    dataset: Annotated[int, typer.Argument(help="Dataset id (one you control).")],
    trust: Annotated[
        list[str] | None,
        typer.Option(help="An algorithm (.py file or built-in name) to allow without review."),
    ] = None,
    service: Annotated[int, typer.Option(help="The compute service id.")] = 1,
    days: Annotated[int, typer.Option(help="Days an order of the service lasts.")] = 1,
    require_dp: Annotated[
        bool | None,
        typer.Option(
            "--require-dp/--no-require-dp",
            help="Require differential privacy: jobs declare epsilon and bounds and spend "
            "from each consumer's budget (default: keep the current setting).",
        ),
    ] = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """As the owner: offer a compute service on a dataset (listed in its metadata, set on
    chain) and trust algorithms by hash; other algorithms wait for your review.

    Example: datagora compute offer 3 --trust fedavg-logistic --trust train.py
    Example: datagora compute offer 4 --require-dp --trust fedavg-logistic-dp
    """
    from datagora.market.compute import offer_compute

    m = marketplace(account, keys)
    summary = offer_compute(
        m,
        dataset,
        [_algorithm(t) for t in trust or []],
        service=service,
        days=days,
        differential_privacy=require_dp,
    )
    if as_json:
        print_json(summary)
    else:
        out.print(
            f"dataset {dataset} offers compute (service {service}"
            f"{', differential privacy required' if summary['differential_privacy'] else ''}); "
            f"{len(summary['trusted'])} algorithm(s) trusted",
            highlight=False,
        )


# -- owners ---------------------------------------------------------------------------------


def _owner_client(account: str | None, keys: Path | None, node: str | None) -> Any:
    from datagora.market.compute import OwnerClient

    m = marketplace(account, keys)
    return OwnerClient(
        _node_url(m, node), m.identity, m.ledger.chain.chain_id, m.ledger.compute.address
    )


@jobs_app.command("list")
def jobs_list(
    node: NodeOption = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Jobs on your datasets waiting for your review.

    Example: datagora jobs list --account owner
    """
    with _owner_client(account, keys, node) as owner, _reaching(owner.url):
        pending = owner.pending()
    if as_json:
        print_json(pending)
        return
    for j in pending:
        out.print(
            f"job {j['job']}  dataset {j['dataset']}  {j['consumer']}  "
            f"algorithm {short_hex(str(j['algorithm']))}",
            highlight=False,
        )
    if not pending:
        out.print("no jobs waiting for review")


@jobs_app.command("review")
def jobs_review(
    job: Annotated[int, typer.Argument(help="Job id.")],
    node: NodeOption = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a job's algorithm code and parameters, and who asks, before you decide.

    Example: datagora jobs review 7
    """
    with _owner_client(account, keys, node) as owner, _reaching(owner.url):
        review = owner.review(job)
    if as_json:
        print_json(review)
        return
    info = review["job"]
    dp = review.get("differential_privacy")
    privacy = ""
    if isinstance(dp, dict):
        enforced = "enforced by the node" if dp.get("enforced") else "NOT enforced"
        privacy = f"differential privacy required, {enforced}: {dp.get('note', '')}\n"
    out.print(
        f"job {info['job']} on dataset {info['dataset']} by {info['consumer']} ({info['state']})\n"
        f"algorithm sha256 {info['algorithm']}\n"
        f"params {json.dumps(review['params'], sort_keys=True)}\n"
        f"{privacy}"
        "---- code ----",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    code = review["code"]
    sys.stdout.write(code if code.endswith("\n") else code + "\n")


@jobs_app.command("approve")
def jobs_approve(
    job: Annotated[int, typer.Argument(help="Job id.")],
    node: NodeOption = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve a job (the decision goes on chain); it then runs.

    Example: datagora jobs approve 7
    """
    with _owner_client(account, keys, node) as owner, _reaching(owner.url):
        info = owner.approve(job)
    if as_json:
        print_json(info)
    else:
        out.print(f"approved job {job} ({info['state']})", highlight=False)


@jobs_app.command("deny")
def jobs_deny(
    job: Annotated[int, typer.Argument(help="Job id.")],
    reason: Annotated[str, typer.Option(help="Why (recorded on chain, 256 bytes at most).")],
    node: NodeOption = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Deny a job, with a reason (the decision goes on chain).

    Example: datagora jobs deny 7 --reason "exports per-patient predictions"
    """
    if len(reason.encode()) > 256:
        raise ConfigError("--reason is limited to 256 bytes (it goes on chain)")
    with _owner_client(account, keys, node) as owner, _reaching(owner.url):
        info = owner.deny(job, reason)
    if as_json:
        print_json(info)
    else:
        out.print(f"denied job {job}", highlight=False)


# -- federated training ------------------------------------------------------------------


@commands.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def train(
    ctx: typer.Context,
    datasets: Annotated[
        list[int],
        typer.Option("--datasets", help="Dataset ids: --datasets 1 2 3 (or repeat the option)."),
    ],
    algorithm: Annotated[
        str | None,
        typer.Option(
            help="fedavg-logistic or fedavg-logistic-dp (built in; the default follows "
            "--dp-epsilon) or a .py file of the same protocol."
        ),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(help="FedAvg rounds after one statistics round (default 3; under DP: 1)."),
    ] = None,
    target: Annotated[str, typer.Option(help="The label column.")] = "target",
    features: Annotated[
        str | None, typer.Option(help="Comma-separated feature columns (default: all others).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 5,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            "--dp-epsilon",
            help="Train under differential privacy, spending this epsilon on every dataset.",
        ),
    ] = None,
    bounds: Annotated[
        Path | None,
        typer.Option(
            help='With --dp-epsilon: a JSON file {"feature": \\[lower, upper], ...} for every '
            "feature (from domain knowledge, never from the data)."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the model (JSON) here.")
    ] = None,
    node: NodeOption = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Train federated (FedAvg) over several datasets: each round runs one compute job per
    dataset on its owner's node and averages the weights; only weights move. With
    --dp-epsilon E --bounds FILE: one round, each site trains an E-DP model (E is
    charged to your budget on every dataset) and the models are averaged.

    Example: datagora train --datasets 1 2 3 --rounds 3 -o model.json
    Example: datagora train --datasets 1 2 3 --dp-epsilon 1 --bounds bounds.json
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from datagora.atomic import write_atomically
    from datagora.market.compute import train as train_federated

    extra = list(ctx.args)
    bad = [a for a in extra if not a.isdigit()]
    if bad:
        raise ConfigError(f"unexpected argument(s) {' '.join(bad)}: dataset ids are numbers")
    ids = [*datasets, *(int(a) for a in extra)]
    if (rounds is not None and rounds < 1) or epochs < 1:
        raise ConfigError("--rounds and --epochs must be at least 1")
    dp = _dp_declaration(dp_epsilon, bounds)
    if dp is not None and rounds not in (None, 1):
        raise ConfigError("under DP training runs one round (one DP model per site): drop --rounds")
    m = marketplace(account, keys)
    url = _node_url(m, node)
    total = len(ids) if dp is not None else (1 + (rounds or 3)) * len(ids)
    with (
        Progress(
            "{task.description}", BarColumn(), MofNCompleteColumn(), console=err, transient=True
        ) as bar,
        _reaching(url),
    ):
        task = bar.add_task("federated jobs", total=total)
        model = train_federated(
            m,
            ids,
            target,
            algorithm=_algorithm(algorithm) if algorithm else None,
            rounds=rounds,
            features=[f.strip() for f in features.split(",")] if features else None,
            nodes=dict.fromkeys(ids, url),
            epochs=epochs,
            on_job=lambda job, info: bar.advance(task),
            dp=dp,
        )
    doc = model.to_json()
    done = 1 if dp is not None else (rounds or 3)
    if output is not None:
        write_atomically(output, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    if as_json:
        print_json({**doc, "datasets": ids, "rounds": done})
    else:
        where = f"; model written to {output}" if output else ""
        out.print(
            f"trained over datasets {', '.join(map(str, ids))}: {len(model.jobs)} jobs "
            f"({done} round{'s' if done > 1 else ''}){where}",
            highlight=False,
        )
        if model.epsilon:
            spent = ", ".join(f"dataset {d}: {e:g}" for d, e in sorted(model.epsilon.items()))
            out.print(f"epsilon spent: {spent}", highlight=False)


def _dp_declaration(epsilon: float | None, bounds: Path | None) -> dict[str, Any] | None:
    """``{"epsilon", "bounds"}`` from --dp-epsilon and --bounds (both or neither)."""
    if epsilon is None and bounds is None:
        return None
    if epsilon is None:
        raise ConfigError("--bounds is for DP training: give --dp-epsilon E as well")
    if bounds is None:
        raise ConfigError(
            '--dp-epsilon needs --bounds FILE.json ({"feature": [lower, upper], ...} for '
            "every feature): bounds are never inferred from the data"
        )
    try:
        loaded = json.loads(bounds.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read --bounds {bounds}: {exc}") from None
    if not isinstance(loaded, dict) or not loaded:
        raise ConfigError(f'--bounds {bounds} must hold {{"feature": [lower, upper], ...}}')
    return {"epsilon": epsilon, "bounds": loaded}
