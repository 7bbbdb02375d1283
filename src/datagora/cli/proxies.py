"""``datagora proxies``: a dataset's proxies and threshold, chosen on chain (ProxySets)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from datagora.cli.common import (
    AccountOption,
    JsonFlag,
    KeysOption,
    format_list,
    marketplace,
    out,
    print_fields,
    print_json,
)
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
