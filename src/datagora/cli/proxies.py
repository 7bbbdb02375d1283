"""``datagora proxies``: a dataset's proxies and threshold, chosen on chain (ProxySets), and
reports of proxies that signed bad answers (ProxyFaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from datagora.cli.common import (
    AccountOption,
    JsonFlag,
    KeysOption,
    address_of,
    format_list,
    marketplace,
    out,
    print_fields,
    print_json,
    tokens,
)
from datagora.display import format_value
from datagora.errors import ConfigError

proxies_app = typer.Typer(
    help="A dataset's proxies and threshold, chosen on chain by its controller.",
    no_args_is_help=True,
)


def _set_json(market: Any, dataset: int) -> dict[str, Any]:
    sets = market.ledger.proxy_sets
    if sets is None:
        raise ConfigError("this deployment has no ProxySets contract: redeploy")
    chosen = sets.proxies_of(dataset)
    from datagora.ledger import Role

    active = {n.address: n.endpoint for n in market.ledger.registry.nodes(Role.PROXY)}
    return {
        "dataset": dataset,
        "proxies": [{"address": p, "endpoint": active.get(p)} for p in chosen.proxies],
        "threshold": chosen.threshold,
        "chosen": chosen.chosen,
    }


@proxies_app.command("set")
def proxies_set(
    dataset: Annotated[int, typer.Argument(help="The dataset id.")],
    proxy: Annotated[
        list[str] | None,
        typer.Option("--proxy", help="A proxy node's account address (repeat for each)."),
    ] = None,
    threshold: Annotated[
        int, typer.Option("--threshold", help="Proxies a consumer needs (2+ with several).")
    ] = 0,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Choose DATASET's proxies (active registered proxy nodes) and threshold on chain;
    no --proxy and --threshold 0 clear the choice (the agent's own proxies then serve).

    Example: datagora proxies set 3 --proxy 0xAb... --proxy 0xCd... --threshold 2
    """
    proxies = list(proxy or [])
    if proxies and threshold == 0:
        threshold = 2 if len(proxies) > 1 else 1
    market = marketplace(account, keys)
    tx = market.set_proxies(dataset, proxies, threshold)
    if as_json:
        print_json(
            {**_set_json(market, dataset), "tx": tx.tx_hash, "block": tx.block_number,
             "gas": tx.gas_used}
        )  # fmt: skip
    elif proxies:
        out.print(f"dataset {dataset}: {threshold} of {len(proxies)} proxies", highlight=False)
    else:
        out.print(f"dataset {dataset}: proxies cleared (the agent's own serve)", highlight=False)


@proxies_app.command("show")
def proxies_show(
    dataset: Annotated[int, typer.Argument(help="The dataset id.")],
    as_json: JsonFlag = False,
) -> None:
    """Show DATASET's chosen proxies (with their registered endpoints) and threshold.

    Example: datagora proxies show 3 --json
    """
    market = marketplace(None, need_account=False)
    shown = _set_json(market, dataset)
    if as_json:
        print_json(shown)
        return
    if not shown["chosen"]:
        out.print(f"dataset {dataset}: no proxies chosen (the owner's agent uses its own)")
        return
    print_fields(
        {
            "dataset": str(dataset),
            "threshold": f"{shown['threshold']} of {len(shown['proxies'])}",
            "proxies": format_list(
                [f"{p['address']} ({p['endpoint'] or 'not active'})" for p in shown["proxies"]]
            ),
        }
    )


_STATES = {1: "open", 2: "confirmed", 3: "dismissed"}


def _faults(market: Any) -> Any:
    faults = market.ledger.proxy_faults
    if faults is None:
        raise ConfigError("this deployment has no ProxyFaults contract: redeploy")
    return faults


@proxies_app.command("report")
def proxies_report(
    evidence_file: Annotated[
        Path,
        typer.Argument(
            help="An evidence file a download kept (~/.datagora/evidence/fault-*.json)."
        ),
    ],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Report on chain (ProxyFaults) a proxy that signed a bad key fragment, as the
    consumer it answered; the dataset's controller then confirms (slashing the proxy's
    stake to you) or dismisses it.

    Example: datagora proxies report ~/.datagora/evidence/fault-0xab...-1f2e.json
    """
    from datagora.sharing import report_fault
    from datagora.sharing.answers import BadEvidence, Evidence

    evidence = Evidence.load(evidence_file)
    market = marketplace(account, keys)
    faults = _faults(market)
    me = market.identity
    if evidence.consumer != me.address:
        raise BadEvidence(
            f"this evidence is of {evidence.consumer}'s request: only that consumer can "
            f"report it (you are {me.address})",
        )
    if (evidence.chain_id, evidence.proxy_faults) != (market.ledger.chain.chain_id, faults.address):
        raise BadEvidence(
            f"this evidence is for ProxyFaults {evidence.proxy_faults} on chain "
            f"{evidence.chain_id}, not this network's",
        )
    report_id = report_fault(market.ledger, me, evidence)
    if as_json:
        print_json(
            {"report": report_id, "proxy": evidence.proxy, "dataset": evidence.dataset,
             "version": evidence.version, "reason": evidence.reason}
        )  # fmt: skip
    else:
        out.print(
            f"report {report_id}: proxy {evidence.proxy} on dataset {evidence.dataset} "
            "(its controller confirms or dismisses it)",
            highlight=False,
        )


@proxies_app.command("faults")
def proxies_faults(
    dataset: Annotated[
        int | None, typer.Option("--dataset", help="Only the reports on this dataset.")
    ] = None,
    proxy: Annotated[
        str | None, typer.Option("--proxy", help="Only the reports of this proxy account.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the reports of proxies' bad signed answers (ProxyFaults), with their state.

    Example: datagora proxies faults --dataset 3 --json
    """
    market = marketplace(None, need_account=False)
    faults = _faults(market)
    who = None if proxy is None else address_of(proxy)
    rows = []
    for ev in faults.find_events("FaultReported", None, who, dataset):
        report_id = int(ev["report_id"])
        state = faults.report_of(report_id)[3]
        rows.append(
            {
                "report": report_id,
                "proxy": str(ev["proxy"]),
                "dataset": int(ev["dataset"]),
                "version": int(ev["version"]),
                "reporter": str(ev["reporter"]),
                "state": _STATES.get(state, str(state)),
            }
        )
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no proxy faults reported")
        return
    for r in rows:
        out.print(
            f"report {r['report']}: proxy {r['proxy']}, dataset {r['dataset']} version "
            f"{r['version']}, by {r['reporter']}: {r['state']}",
            highlight=False,
        )


@proxies_app.command("confirm")
def proxies_confirm(
    report: Annotated[int, typer.Argument(help="The report id (datagora proxies faults).")],
    amount: Annotated[
        str, typer.Option("--amount", help="MarketTokens of the proxy's stake to slash.")
    ],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """As the dataset's controller: the reported fragment does not verify; slash up to
    --amount of the proxy's stake to the consumer who reported it.

    Example: datagora proxies confirm 4 --amount 1
    """
    market = marketplace(account, keys)
    slashed, tx = _faults(market).confirm(market.identity.account, report, tokens(amount))
    if as_json:
        print_json({"report": report, "slashed": str(slashed), "tx": tx.tx_hash})
    else:
        out.print(f"report {report} confirmed: {format_value(slashed)} slashed", highlight=False)


@proxies_app.command("dismiss")
def proxies_dismiss(
    report: Annotated[int, typer.Argument(help="The report id (datagora proxies faults).")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """As the dataset's controller: the reported fragment verifies; close the report.

    Example: datagora proxies dismiss 4
    """
    market = marketplace(account, keys)
    tx = _faults(market).dismiss(market.identity.account, report)
    if as_json:
        print_json({"report": report, "tx": tx.tx_hash})
    else:
        out.print(f"report {report} dismissed", highlight=False)
