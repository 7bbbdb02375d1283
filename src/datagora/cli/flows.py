"""The `datagora` commands for everyday flows: accounts, publish, buy, request, grant,
download, repair. They use the network file (`datagora up`) and a keystore account."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TransferSpeedColumn,
)

from datagora.cli.common import (
    AccountOption,
    JsonFlag,
    KeysOption,
    address_of,
    err,
    format_amount,
    format_bool,
    format_list,
    format_time,
    keys_dir,
    load_identity,
    marketplace,
    out,
    password,
    print_fields,
    print_json,
    short_hex,
    tokens,
)
from datagora.errors import ConfigError

commands = typer.Typer()
account_app = typer.Typer(
    help="Accounts (encrypted keystores): new, import, list, export-public, "
    "authorize-agent, revoke-agent.",
    no_args_is_help=True,
)


YesFlag = Annotated[
    bool, typer.Option("--yes", "-y", help="Send without asking (after the gas estimate).")
]
# The native currency's symbol on chains whose currency is not ether.
_NATIVE = {137: "POL", 80002: "POL", 100: "xDAI", 56: "BNB", 43114: "AVAX"}


def _native(wei: int, chain_id: int) -> str:
    from decimal import Decimal

    value = Decimal(wei).scaleb(-18).normalize()
    return f"{format(value, 'f') if wei else '0'} {_NATIVE.get(chain_id, 'ETH')}"


@contextlib.contextmanager
def _gas_shown(
    m: Any, yes: bool, as_json: bool, after: str = "", bar: Progress | None = None
) -> Iterator[dict[str, Any]]:
    """Show each transaction's gas estimate × the current fee (one line on stderr) before
    it is sent, and ask to go on when a person is at a terminal (not with --yes, never
    without a TTY). Yields the totals, for ``--json``'s ``gas_estimate``."""
    chain = m.ledger.chain
    seen: dict[str, Any] = {"gas": 0, "wei_per_gas": "0", "wei": "0"}

    def gate(what: str, gas: int, per_gas: int) -> None:
        seen["gas"] += gas
        seen["wei_per_gas"] = str(per_gas)
        seen["wei"] = str(int(seen["wei"]) + gas * per_gas)
        if as_json:
            return  # the estimate is the document's gas_estimate; stdout stays JSON alone
        gwei = f"{per_gas / 1e9:.3g} gwei"
        err.print(
            f"gas estimate for {what}: {gas:,} gas × {gwei} ≈ "
            f"{_native(gas * per_gas, chain.chain_id)}",
            highlight=False,
            soft_wrap=True,
        )
        if yes or not (sys.stdin.isatty() and sys.stderr.isatty()):
            return
        if bar is not None:
            bar.stop()  # the upload is done; the prompt needs the terminal
        if not typer.confirm("send it?", default=True, err=True):
            err.print(f"cancelled: nothing was sent{after}")
            raise typer.Exit(1)

    chain.before_send = gate
    try:
        yield seen
    finally:
        chain.before_send = None


def _tx(tx: Any) -> dict[str, Any]:
    """The JSON fields of a mined transaction."""
    return {"tx": tx.tx_hash, "block": tx.block_number, "gas": tx.gas_used}


def _progress(label: str) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    )


# -- accounts -----------------------------------------------------------------------------


@account_app.command("new")
def account_new(
    name: Annotated[str | None, typer.Option(help="A name to refer to the account by.")] = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an account: an Ethereum key and its Umbral keys, in an encrypted keystore.

    Example: datagora account new --name alice
    """
    from datagora.crypto.keys import export_public, new_account

    identity = new_account(keys_dir(keys), password(confirm=True), name)
    if as_json:
        print_json(export_public(identity))
    else:
        out.print(f"created {identity.address} in {keys_dir(keys)}")


@account_app.command("import")
def account_import(
    key_env: Annotated[
        str, typer.Option(help="Environment variable holding the private key (hex).")
    ] = "DATAGORA_PRIVATE_KEY",
    name: Annotated[str | None, typer.Option(help="A name for the account.")] = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Import an Ethereum private key into a keystore (read from the environment, never argv).

    Example: DATAGORA_PRIVATE_KEY=0x... datagora account import --name bob
    """
    from datagora.crypto.keys import import_account

    secret = os.environ.get(key_env)
    if not secret:
        raise ConfigError(f"set {key_env} to the private key to import")
    identity = import_account(keys_dir(keys), secret, password(confirm=True), name)
    if as_json:
        print_json({"address": identity.address, "name": name})
    else:
        out.print(f"imported {identity.address}")


@account_app.command("list")
def account_list(keys: KeysOption = None, as_json: JsonFlag = False) -> None:
    """List the accounts in the keystore directory (nothing is decrypted).

    Example: datagora account list
    """
    from datagora.crypto.keys import list_accounts

    found = list_accounts(keys_dir(keys))
    if as_json:
        print_json([{"address": a.address, "name": a.name, "file": str(a.file)} for a in found])
        return
    for a in found:
        out.print(f"{a.address}  {a.name or ''}")
    if not found:
        out.print(f"no accounts in {keys_dir(keys)} (datagora account new)")


@account_app.command("export-public")
def account_export_public(account: AccountOption = None, keys: KeysOption = None) -> None:
    """Print the account's public record (address, Umbral public key, verifying key).

    Example: datagora account export-public --account alice
    """
    from datagora.crypto.keys import export_public

    print_json(export_public(load_identity(account, keys)))


@account_app.command("authorize-agent")
def account_authorize_agent(
    agent_public: Annotated[
        Path, typer.Argument(help="The agent account's public record (export-public JSON).")
    ],
    out_file: Annotated[
        Path, typer.Option("--out", help="Where to write the sealed delegation keys.")
    ],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Authorise an agent key on chain to delegate key fragments for your datasets (and
    nothing else), and write your delegation keys sealed to it for its --delegation.

    Example: datagora account authorize-agent agent.json --out keys.json
    """
    from datagora.atomic import write_atomically
    from datagora.crypto.errors import KeystoreError
    from datagora.crypto.keys import PublicIdentity

    try:
        agent = PublicIdentity.from_json(json.loads(agent_public.read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {agent_public}: {exc}") from None
    except KeystoreError as exc:
        raise ConfigError(f"{agent_public}: {exc}") from None
    market = marketplace(account, keys)
    owner = market.identity
    tx = market.ledger.access.set_delegate(owner.account, agent.address, True)
    sealed = owner.delegation_keys().seal(agent.umbral_public_key)
    write_atomically(out_file, json.dumps(sealed, indent=2) + "\n", 0o600)
    if as_json:
        print_json({"owner": owner.address, "agent": agent.address, "file": str(out_file),
                    **_tx(tx)})  # fmt: skip
    else:
        out.print(f"{agent.address} may now delegate for {owner.address}; keys in {out_file}")


@account_app.command("revoke-agent")
def account_revoke_agent(
    agent: Annotated[str, typer.Argument(help="The agent account's address.")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Revoke an agent key: proxies refuse its deliveries from the next one on.

    Example: datagora account revoke-agent 0x... --account alice
    """
    market = marketplace(account, keys)
    tx = market.ledger.access.set_delegate(market.identity.account, agent, False)
    if as_json:
        print_json({"agent": agent, **_tx(tx)})
    else:
        out.print(f"revoked agent {agent}")


# -- market tokens ------------------------------------------------------------------------

AmountArgument = Annotated[str, typer.Argument(help="MarketTokens, e.g. 10 or 1.5.")]
ToArgument = Annotated[str, typer.Argument(help="Account name (in the keystore) or address.")]


@commands.command()
def fund(
    to: ToArgument,
    amount: AmountArgument,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """On a development network only: mint MarketTokens to an account from the faucet
    (and give it ether for gas if it has none). Refused on any other chain.

    Example: datagora fund alice 100
    """
    from datagora.node.faucet import fund as mint

    address = address_of(to, keys)
    base = tokens(amount, "AMOUNT")
    done = mint(marketplace(None, keys, need_account=False).ledger, address, base)
    if as_json:
        print_json(
            {
                "to": address,
                "amount": str(done.amount),
                "balance": str(done.balance),
                "gas_wei": str(done.gas_wei),
                **_tx(done.tx),
            }
        )
    else:
        gas = " and ether for gas" if done.gas_wei else ""
        out.print(
            f"funded {to} with {format_amount(base)}{gas}; it holds {format_amount(done.balance)}",
            highlight=False,
        )


@commands.command()
def transfer(
    to: ToArgument,
    amount: AmountArgument,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Send MarketTokens from your account to another account.

    Example: datagora transfer alice 2.5 --account owner
    """
    from datagora.node.faucet import transfer as send

    address = address_of(to, keys)
    base = tokens(amount, "AMOUNT")
    m = marketplace(account, keys)
    done = send(m.ledger, m.identity.account, address, base)
    if as_json:
        print_json(
            {
                "from": m.identity.address,
                "to": address,
                "amount": str(done.amount),
                "balance": str(done.balance),
                **_tx(done.tx),
            }
        )
    else:
        out.print(
            f"sent {format_amount(base)} to {to}; it holds {format_amount(done.balance)}",
            highlight=False,
        )


# -- publishing ---------------------------------------------------------------------------


@commands.command()
def publish(
    file: Annotated[Path, typer.Argument(help="The data file to publish.")],
    title: Annotated[str | None, typer.Option(help="Title (or give --metadata).")] = None,
    description: Annotated[str, typer.Option(help="Description.")] = "",
    license: Annotated[str, typer.Option(help="License (SPDX id).")] = "CC-BY-4.0",
    creator: Annotated[str | None, typer.Option(help="Creator (default: the account).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeat).")] = None,
    metadata: Annotated[Path | None, typer.Option(help="A metadata JSON file.")] = None,
    price: Annotated[str | None, typer.Option(help="Fixed price in MarketTokens.")] = None,
    free: Annotated[bool, typer.Option(help="Free datatokens from the dispenser.")] = False,
    approval: Annotated[
        bool, typer.Option(help="Not for sale: consumers request, you grant.")
    ] = False,
    chunk_mb: Annotated[int, typer.Option(help="Chunk size in MiB.")] = 1,
    mock: Annotated[
        Path | None,
        typer.Option(
            help="A CSV of synthetic rows (same columns, no real row), public with the "
            "metadata; anyone reads it with `datagora mock DATASET`."
        ),
    ] = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
    yes: YesFlag = False,
) -> None:
    """Encrypt, erasure-code and store a file, then publish it on chain in one transaction.

    The transaction's gas estimate (× the current fee) is shown before it is sent; at a
    terminal you are asked to go on (--yes does not ask).

    Example: datagora publish cohort.csv --title Cohort --price 1.5 --tag medical

    Example: datagora publish cohort.csv --title Cohort --free --mock mock.csv
    """
    from datagora.ledger import Pricing

    if not file.is_file():
        raise ConfigError(f"{file} is not a file")
    if sum([price is not None, free, approval]) != 1:
        raise ConfigError("choose exactly one of --price, --free, --approval")
    mock_data = _read_mock(mock, file) if mock is not None else None
    m = marketplace(account, keys)
    if metadata is not None:
        try:
            doc: dict[str, Any] = json.loads(metadata.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read metadata {metadata}: {exc}") from None
    else:
        if not title:
            raise ConfigError("give --title (or a --metadata file)")
        base_price = tokens(price, "--price") if price is not None else 0
        doc = {
            "title": title,
            "description": description,
            "license": license,
            "creator": creator or m.identity.address,
            "tags": sorted(set(tag or [])),
            "services": [
                {
                    "id": 0,
                    "type": "download",
                    "price": str(base_price),
                    "policy": "approval" if approval else "automatic",
                }
            ],
        }
    pricing = Pricing.FIXED if price is not None else Pricing.FREE if free else Pricing.NONE
    size = file.stat().st_size
    after = " on chain (the upload stays in storage, unpublished)"
    with _progress("upload") as bar, _gas_shown(m, yes, as_json, after, bar) as gas:
        task = bar.add_task("uploading", total=size)
        result = m.publish(
            file,
            doc,
            pricing=pricing,
            price=tokens(price, "--price") if price else 0,
            chunk_size=chunk_mb << 20,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            mock=mock_data,
        )
    info = {
        "dataset": result.dataset,
        "datatoken": result.datatoken,
        "version": result.version,
        "manifest_hash": result.manifest_hash.hex(),
        "merkle_root": result.merkle_root.hex(),
        "metadata_hash": result.metadata_hash.hex(),
        "price": str(tokens(price) if price else 0),
        "mock": mock_data is not None,
        "gas_estimate": gas,
        **_tx(result.tx),
    }
    if as_json:
        print_json(info)
    else:
        cost = f" at {format_amount(tokens(price))}" if price else ""
        out.print(
            f"published dataset {result.dataset}{cost} ({result.tx.gas_used:,} gas, 1 transaction)"
        )


def _read_mock(mock: Path, data: Path) -> bytes:
    """The mock file's bytes, once it is a CSV with the data's columns (when the data is a
    CSV) and none of its rows is a row of the data copied as it stands."""
    import csv
    import io

    from datagora.market.flows import MAX_MOCK_BYTES

    how = "make synthetic rows with datagora.compute.mock.make_mock"
    if not mock.is_file():
        raise ConfigError(f"--mock {mock} is not a file")
    if mock.stat().st_size > MAX_MOCK_BYTES:
        raise ConfigError(f"--mock {mock} is larger than {MAX_MOCK_BYTES >> 20} MiB; {how}")
    raw = mock.read_bytes()
    try:
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"--mock {mock} is not a UTF-8 CSV file ({exc})") from None
    if len(rows) < 2:
        raise ConfigError(f"--mock {mock} needs a header and at least one row; {how}")
    if data.suffix.lower() != ".csv":
        return raw
    synthetic = {tuple(c.strip() for c in r) for r in rows[1:]}
    try:
        with data.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            if [c.strip() for c in header] != [c.strip() for c in rows[0]]:
                raise ConfigError(
                    f"--mock {mock} has columns {rows[0]}, {data} has {header}: "
                    "a mock keeps the data's columns in order"
                )
            for line, row in enumerate(reader, 2):
                if tuple(c.strip() for c in row) in synthetic:
                    raise ConfigError(
                        f"--mock {mock} contains line {line} of {data} as it stands: "
                        f"mock data is public, it must not copy real rows; {how}"
                    )
    except (UnicodeDecodeError, csv.Error):
        return raw  # not a text CSV after all: nothing to compare with
    return raw


# -- consuming ----------------------------------------------------------------------------


@commands.command()
def buy(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    max_price: Annotated[
        str | None, typer.Option(help="Refuse to pay more (MarketTokens).")
    ] = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
    yes: YesFlag = False,
) -> None:
    """Buy one access and order it, in one transaction (no separate approve).

    The gas estimate (× the current fee) is shown before anything is sent; at a terminal
    you are asked to go on (--yes does not ask).

    Example: datagora buy 3 --max-price 2
    """
    m = marketplace(account, keys)
    with _gas_shown(m, yes, as_json) as gas:
        order = m.buy_and_order(dataset, 0, tokens(max_price, "--max-price") if max_price else None)
    if as_json:
        print_json(
            {
                "dataset": dataset,
                "consumer": order.consumer,
                "expires_at": order.expires_at,
                "gas_estimate": gas,
                **_tx(order.tx),
            }
        )
    else:
        out.print(f"ordered dataset {dataset}; valid until {format_time(order.expires_at)}")


@commands.command()
def order(
    dataset: Annotated[int, typer.Argument(help="Dataset id (a free dataset).")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Take a free datatoken from the dispenser and order with it.

    Example: datagora order 4
    """
    result = marketplace(account, keys).order_free(dataset)
    if as_json:
        print_json(
            {
                "dataset": dataset,
                "consumer": result.consumer,
                "expires_at": result.expires_at,
                **_tx(result.tx),
            }
        )
        return
    out.print(f"ordered dataset {dataset}; valid until {format_time(result.expires_at)}")


@commands.command()
def request(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    purpose: Annotated[str, typer.Option(help="What you will use the data for.")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask the owner for access (recorded on chain).

    Example: datagora request 4 --purpose "tumour classifier"
    """
    rid = marketplace(account, keys).request_access(dataset, purpose)
    if as_json:
        print_json({"request": rid, "dataset": dataset, "purpose": purpose})
        return
    out.print(f"request {rid} filed; the owner grants or denies it")


@commands.command()
def requests(
    account: AccountOption = None, keys: KeysOption = None, as_json: JsonFlag = False
) -> None:
    """List pending requests for the datasets you control.

    Example: datagora requests
    """
    from datagora.ledger import RequestStatus

    m = marketplace(account, keys)
    pending = []
    for e in m.ledger.events():
        if e.name != "AccessRequested":
            continue
        req = m.ledger.access.get_request(int(e["request_id"]))
        if (
            req.status == RequestStatus.PENDING
            and m.ledger.data_nft.controller(req.dataset) == m.identity.address
        ):
            pending.append(
                {
                    "request": req.request_id,
                    "dataset": req.dataset,
                    "consumer": req.consumer,
                    "purpose": e["purpose"],
                }
            )
    if as_json:
        print_json(pending)
        return
    for p in pending:
        out.print(f"#{p['request']}  dataset {p['dataset']}  {p['consumer']}  {p['purpose']}")
    if not pending:
        out.print("no pending requests")


@commands.command()
def grant(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    days: Annotated[int, typer.Option(help="Days the grant lasts.")] = 30,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Grant a request and give the consumer's key fragments to the proxies.

    Example: datagora grant 1 --days 7
    """
    if days <= 0:
        raise ConfigError("--days must be positive")
    tx = marketplace(account, keys).grant(request_id, days * 86_400)
    if as_json:
        print_json({"request": request_id, "days": days, **_tx(tx)})
    else:
        out.print(f"granted request {request_id} for {days} days")


@commands.command()
def deny(
    request_id: Annotated[int, typer.Argument(help="Request id.")],
    reason: Annotated[str, typer.Option(help="Why (recorded on chain).")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Deny a request, with a reason.

    Example: datagora deny 2 --reason "purpose not covered by consent"
    """
    tx = marketplace(account, keys).deny(request_id, reason)
    if as_json:
        print_json({"request": request_id, "reason": reason, **_tx(tx)})
    else:
        out.print(f"denied request {request_id}")


@commands.command()
def revoke(
    request_id: Annotated[int, typer.Argument(help="The grant (its request id).")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Revoke a grant: every proxy refuses the consumer from its next request. Bytes
    already downloaded cannot be recalled.

    Example: datagora revoke 1
    """
    tx = marketplace(account, keys).revoke(request_id)
    if as_json:
        print_json({"request": request_id, **_tx(tx)})
    else:
        out.print(f"revoked grant {request_id}")


@commands.command()
def download(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Where to write.")] = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Download a dataset you may read: key from t proxies, shares verified, decrypted.

    Example: datagora download 3 -o cohort.csv
    """
    from datagora.sharing.answers import default_evidence_dir

    m = marketplace(account, keys)
    # A proxy that signs a bad fragment leaves evidence: kept for `proxies report`.
    m.evidence_dir = default_evidence_dir()
    target = output or Path(f"dataset-{dataset}.bin")
    with _progress("download") as bar:
        task = bar.add_task("downloading", total=None)
        report = m.download(
            dataset,
            target,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print_json(
            {
                "dataset": dataset,
                "output": str(target),
                "bytes": report.bytes_written,
                "bad_nodes": {n: list(r) for n, r in report.bad_nodes.items()},
                "proxy_evidence": [str(f) for f in m.kept_evidence],
            }
        )
        return
    note = f"; nodes reported bad: {format_list(report.bad_nodes)}" if report.bad_nodes else ""
    out.print(f"wrote {report.bytes_written:,} bytes to {target}{note}")
    for kept in m.kept_evidence:
        out.print(
            f"a proxy signed a bad key fragment; evidence kept in {kept} "
            f"(file it: datagora proxies report {kept})",
            highlight=False,
        )


@commands.command()
def repair(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    check_only: Annotated[bool, typer.Option("--check", help="Only check.")] = False,
    record: Annotated[
        bool, typer.Option(help="Record a repair on chain (needs an account).")
    ] = True,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Check every share of a dataset and rebuild missing or corrupt ones (no key needed);
    a repair is recorded on chain, so it shows in the dataset's audit. Repairing
    writes a new placement record, so it is done by the dataset's controller (its
    holder or an approved operator), with a quota on the storage nodes (on chain, a
    registered storage node may also record a repair).

    Example: datagora repair 3 --account owner
    """
    from datagora.ledger.errors import NotController
    from datagora.storage.repair import Repairer

    m = marketplace(account, keys, need_account=not check_only)
    info = m.dataset_info(dataset)
    who = None if check_only else load_identity(account, keys)
    if who is not None and not m.ledger.data_nft.may_control(dataset, who.address):
        raise NotController(
            "not controller",
            f"{who.address} does not control dataset {dataset}: only its holder or an "
            "operator it approved repairs it (use --check to only check)",
        )
    repairer = Repairer(m.endpoints.storage, signer=who.account if who is not None else None)
    counter = Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        console=err, transient=True,
    )  # fmt: skip
    with counter as bar:
        task = bar.add_task("checking chunks" if check_only else "repairing chunks", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        run = repairer.check if check_only else repairer.repair
        report = run(info.manifest_hash, step)
    summary: dict[str, Any] = {
        "dataset": dataset,
        "healthy": report.healthy,
        "rebuilt": report.rebuilt,
        "problems": len(report.problems),
        "dead_nodes": sorted(report.dead_nodes),
        "recorded_tx": None,
    }
    if who is not None and record and report.rebuilt and report.placement_hash is not None:
        tx = m.ledger.storage_log.record_repair(
            who.account, dataset, info.manifest_hash, report.placement_hash, report.rebuilt
        )
        summary["recorded_tx"] = tx.tx_hash
    if as_json:
        print_json(summary)
    else:
        print_fields(
            {
                "dataset": dataset,
                "healthy": format_bool(report.healthy),
                "shares rebuilt": report.rebuilt,
                "problems": len(report.problems),
                "dead nodes": format_list(summary["dead_nodes"]),
                "recorded": short_hex(summary["recorded_tx"]) if summary["recorded_tx"] else "no",
            }
        )


@commands.command()
def audit(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    verify_hashes: Annotated[
        bool, typer.Option("--verify", help="Recompute and check every hash it can.")
    ] = False,
    prov: Annotated[Path | None, typer.Option("--prov", help="Write W3C PROV-JSON here.")] = None,
    sample: Annotated[int, typer.Option(help="--verify: shares to sample.")] = 16,
    allow_partial: Annotated[
        bool,
        typer.Option(
            "--allow-partial",
            help="--verify: exit 0 when some hashes could not be checked (none mismatched).",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The dataset's history from the ledger alone; --verify checks every hash.

    Example: datagora audit 3 --verify --prov history.json
    """
    from datagora.audit import (
        Status,
        render_timeline,
        report_to_dict,
        timeline,
        to_prov,
        verify,
        write_prov,
    )

    m = marketplace(None, need_account=False)
    entries = timeline(m.ledger, dataset)
    report = None
    if verify_hashes:
        sources = [m.endpoints.catalog] if m.endpoints.catalog else []
        report = verify(m.ledger, dataset, m.endpoints.storage, sources, sample, entries=entries)
    if prov is not None:
        write_prov(to_prov(m.ledger, dataset, entries), prov)
    if as_json:
        print_json(
            {
                "dataset": dataset,
                "events": [
                    {
                        "block": e.block_number,
                        "time": format_time(e.timestamp),
                        "timestamp": e.timestamp,
                        "kind": str(e.kind),
                        "contract": e.contract,
                        "event": e.event,
                        "args": {k: _jsonable(v) for k, v in e.args.items()},
                        "text": e.text,
                        "tx": e.tx_hash,
                    }
                    for e in entries
                ],
                "verify": report_to_dict(report) if report is not None else None,
            }
        )
    else:
        out.print(render_timeline(entries, title=f"dataset {dataset}"))
        if report is not None:
            if report.complete:
                out.print(f"verified: every hash matches ({report.counts()})")
            elif report.ok:
                out.print(f"INCOMPLETE: some hashes could not be checked ({report.counts()})")
            else:
                out.print(f"MISMATCH found ({report.counts()})")
    if report is not None and not report.ok:
        bad = [c for c in report.checks if c.status == Status.MISMATCH]
        raise ConfigError(
            "verification failed: " + "; ".join(f"{c.subject}: {c.reason}" for c in bad[:5])
        )
    if report is not None and not report.complete and not allow_partial:
        raise ConfigError(
            f"could not check every hash ({report.counts()}): no source answered for "
            + ", ".join(sorted({c.subject.split()[0] for c in report.unavailable}) or ["any"])
            + "; bring the storage nodes up, or pass --allow-partial to accept a partial check"
        )


def _jsonable(value: Any) -> Any:
    """An event argument for JSON: bytes as 0x-hex, integers past 2**53 as strings."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**53:
        return str(value)
    return value


@commands.command()
def update(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    metadata: Annotated[Path, typer.Option(help="The new metadata JSON file.")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Publish new metadata as a new version (the data stays; its key is re-wrapped).

    Example: datagora update 3 --metadata meta-v2.json
    """
    try:
        doc = json.loads(metadata.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read metadata {metadata}: {exc}") from None
    tx = marketplace(account, keys).update_metadata(dataset, doc)
    if as_json:
        print_json({"dataset": dataset, **_tx(tx)})
        return
    out.print(f"dataset {dataset} updated ({tx.gas_used:,} gas)")


@commands.command()
def rotate(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    file: Annotated[
        Path | None, typer.Option(help="New content (default: the current content).")
    ] = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-encrypt the dataset under a new data key as a new version, so revoked consumers'
    old fragments open nothing new (downloaded bytes cannot be recalled).

    Example: datagora rotate 3
    """
    if file is not None and not file.is_file():
        raise ConfigError(f"{file} is not a file")
    with _progress("upload") as bar:
        task = bar.add_task("re-encrypting", total=None)
        tx = marketplace(account, keys).rotate(
            dataset,
            file,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print_json({"dataset": dataset, **_tx(tx)})
    else:
        out.print(f"dataset {dataset} rotated to a new data key")


@commands.command("transfer-dataset")
def transfer_dataset(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    to: Annotated[
        Path,
        typer.Option(
            help="The recipient's public record (JSON, from `datagora account export-public`)."
        ),
    ],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Give a dataset you hold (its data NFT: control and future sales) to another account.

    The data key is left on chain wrapped to the recipient; the dataset neither sells nor
    serves until the recipient runs `datagora rekey`. Compute operators and trusted
    algorithms end with the transfer (`datagora transfer` sends MarketTokens instead).

    Example: datagora transfer-dataset 3 --to bob.json
    """
    from datagora.crypto.errors import KeystoreError
    from datagora.crypto.keys import PublicIdentity

    try:
        record = PublicIdentity.from_json(json.loads(to.read_text()))
    except (OSError, ValueError, KeystoreError) as exc:
        raise ConfigError(f"cannot read the recipient's public record {to}: {exc}") from None
    done = marketplace(account, keys).transfer_dataset(dataset, record)
    if as_json:
        print_json(
            {
                "dataset": dataset,
                "to": done.recipient,
                "key_record": done.key_record,
                "state": "awaiting_rekey",
                **_tx(done.tx),
            }
        )
        return
    out.print(
        f"dataset {dataset} now belongs to {done.recipient}; it sells again once they run "
        f"`datagora rekey {dataset}`",
        highlight=False,
    )


@commands.command()
def rekey(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """As the new holder of a transferred dataset: wrap its data key to your key as a new
    version, so that it sells and serves again (then `datagora rotate` for a fresh key).

    Example: datagora rekey 3
    """
    tx = marketplace(account, keys).rekey(dataset)
    if as_json:
        print_json({"dataset": dataset, "state": "active", **_tx(tx)})
        return
    out.print(f"dataset {dataset} re-keyed to you: it sells and serves again")


kv_app = typer.Typer(
    help="Your private key/value records: values encrypted, key → hash on chain.",
    no_args_is_help=True,
)


@kv_app.command("put")
def kv_put(
    key: Annotated[str, typer.Argument(help="The key (any text).")],
    file: Annotated[Path | None, typer.Option(help="Read the value from this file.")] = None,
    value: Annotated[str | None, typer.Option(help="The value, as text.")] = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Store a value under KEY (small values on chain as ciphertext, large ones on the nodes).

    Example: datagora kv put cohort/2026 --file summary.json
    """
    if (file is None) == (value is None):
        raise ConfigError("give exactly one of --file and --value")
    if file is not None:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    else:
        data = str(value).encode()
    version = marketplace(account, keys).records().put(key, data)
    if as_json:
        print_json({"key": key, "version": version, "bytes": len(data)})
    else:
        out.print(f"{key}: version {version}", highlight=False, markup=False)


@kv_app.command("get")
def kv_get(
    key: Annotated[str, typer.Argument(help="The key.")],
    version: Annotated[int | None, typer.Option(help="An older version.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here.")] = None,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Print (or write) the value of KEY, decrypted (--json: as text if UTF-8, and base64).

    Example: datagora kv get cohort/2026 --version 1
    """
    data = marketplace(account, keys).records().get(key, version)
    if output is not None:
        from datagora.atomic import write_atomically

        write_atomically(output, data, 0o600)
    if as_json:
        import base64

        try:
            text: str | None = data.decode()
        except UnicodeDecodeError:
            text = None
        print_json(
            {
                "key": key,
                "version": version,
                "bytes": len(data),
                "output": str(output) if output is not None else None,
                "value": text,
                "value_base64": base64.b64encode(data).decode(),
            }
        )
    elif output is not None:
        out.print(f"wrote {len(data):,} bytes to {output}")
    else:
        sys.stdout.buffer.write(data)


@kv_app.command("history")
def kv_history(
    key: Annotated[str, typer.Argument(help="The key.")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Every version of KEY, from the ledger.

    Example: datagora kv history cohort/2026
    """
    rows = [
        {
            "version": v.version,
            "removed": v.removed,
            "block": v.block_number,
            "tx": v.tx_hash,
            "content_hash": v.content_hash.hex() if v.content_hash else None,
        }
        for v in marketplace(account, keys).records().history(key)
    ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        state = "removed" if r["removed"] else f"hash {short_hex(str(r['content_hash']))}"
        out.print(f"version {r['version']} at block {r['block']}: {state}")


@kv_app.command("remove")
def kv_remove(
    key: Annotated[str, typer.Argument(help="The key.")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Remove KEY (its history stays on the ledger).

    Example: datagora kv remove cohort/2026
    """
    version = marketplace(account, keys).records().remove(key)
    if as_json:
        print_json({"key": key, "version": version, "removed": True})
    else:
        out.print(f"{key}: removed (version {version})", highlight=False, markup=False)


@commands.command()
def mock(
    dataset: Annotated[int, typer.Argument(help="Dataset id.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write here.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Fetch a dataset's public mock data (synthetic, schema-preserving) to develop against.

    Example: datagora mock 3 -o mock.csv
    """
    data = marketplace(None, need_account=False).mock(dataset)
    target = output or Path(f"dataset-{dataset}-mock.csv")
    from datagora.atomic import write_atomically

    write_atomically(target, data)
    if as_json:
        print_json({"dataset": dataset, "output": str(target), "bytes": len(data)})
    else:
        out.print(f"wrote {len(data):,} bytes of mock data to {target}")


conditions_app = typer.Typer(
    help="Access conditions proxies check before every answer (docs/ledger.md).",
    no_args_is_help=True,
)


def _condition_json(dataset: int, service: int, condition: Any) -> dict[str, Any]:
    from datagora.ledger import conditions

    if condition is None:
        return {"dataset": dataset, "service": service, "condition": None, "encoded": None}
    blob = conditions.encode(condition)
    return {
        "dataset": dataset,
        "service": service,
        "condition": conditions.render(condition),
        "encoded": "0x" + blob.hex(),
    }


@conditions_app.command("set")
def conditions_set(
    dataset: Annotated[int, typer.Argument(help="The dataset id.")],
    condition: Annotated[
        str | None,
        typer.Argument(
            help="e.g. 'order AND (erc20:0xTOKEN>=100 OR before:2027-01-01)'; "
            "terms: order, allowlist, after:DATE, before:DATE, erc20:0xTOKEN>=AMOUNT, "
            "erc721:0xTOKEN, erc721:0xTOKEN#ID; AND binds tighter than OR."
        ),
    ] = None,
    service: Annotated[int, typer.Option(help="The datatoken service.")] = 0,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove the condition (orders and grants rule).")
    ] = False,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Set the access condition of a dataset's service (its controller only), or --clear it.

    Example: datagora conditions set 3 'order AND before:2027-01-01'
    """
    from datagora.ledger import conditions

    if clear == (condition is not None):
        raise ConfigError("give a condition, or --clear to remove it")
    # Parsed before anything is sent: a malformed condition changes nothing.
    parsed = None if condition is None else conditions.parse(condition)
    tx = marketplace(account, keys).set_condition(dataset, parsed, service)
    if as_json:
        print_json({**_condition_json(dataset, service, parsed), **_tx(tx)})
    elif parsed is None:
        out.print(f"dataset {dataset} service {service}: condition cleared (orders and grants)")
    else:
        out.print(
            f"dataset {dataset} service {service}: {conditions.render(parsed)}",
            highlight=False,
            markup=False,
        )


@conditions_app.command("show")
def conditions_show(
    dataset: Annotated[int, typer.Argument(help="The dataset id.")],
    service: Annotated[int, typer.Option(help="The datatoken service.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Show the access condition of a dataset's service.

    Example: datagora conditions show 3 --json
    """
    from datagora.ledger import conditions

    condition = marketplace(None, None, need_account=False).condition(dataset, service)
    if as_json:
        print_json(_condition_json(dataset, service, condition))
    elif condition is None:
        out.print(f"dataset {dataset} service {service}: no condition (orders and grants)")
    else:
        out.print(
            f"dataset {dataset} service {service}: {conditions.render(condition)}",
            highlight=False,
            markup=False,
        )
