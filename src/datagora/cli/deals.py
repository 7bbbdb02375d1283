"""`datagora storage …`: paid storage deals — what an owner pays (`storage deals`),
what a node earns (`storage earnings`, also `node earnings`), opening and ending
deals, the detection odds of a deal's parameters, the prover a storage node runs
(`storage prove`) and the owner's repair watcher (`storage watch`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from datagora.cli.common import (
    AccountOption,
    JsonFlag,
    KeysOption,
    address_of,
    load_identity,
    marketplace,
    out,
    print_fields,
    print_json,
    tokens,
)
from datagora.errors import ConfigError

storage_app = typer.Typer(
    help="Paid storage deals: escrow per period, proofs of data possession, slashing.",
    no_args_is_help=True,
)
deal_app = typer.Typer(help="Open or end a storage deal; show its detection odds.")
storage_app.add_typer(deal_app, name="deal")


def _wei(amount: int | str) -> str:
    from datagora.display import format_amount

    return format_amount(int(amount))


@storage_app.command("deals")
def deals(
    owner: Annotated[
        str | None, typer.Option(help="Only this owner's deals (address or account name).")
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            help="Repair each dataset whose deal has a node that missed a period, was "
            "slashed or is leaving, onto the other storage nodes (as --account)."
        ),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(help="--repair: open a replacement deal (same terms) with the new nodes."),
    ] = False,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """What an owner pays: every deal, its escrow, what was paid and what is still owed;
    deal nodes in trouble (missed, slashed, leaving) and, with --repair, their repair.

    Example: datagora storage deals --repair --replace --account owner
    """
    from datagora.market.deals import deal_summaries, repair_deals, troubled_deals

    m = marketplace(account, keys, need_account=repair)
    who = address_of(owner, keys) if owner else None
    if repair:
        repaired = repair_deals(m, who, replace=replace)
        if as_json:
            print_json({"repairs": repaired})
            return
        if not repaired:
            out.print("no deal node is in trouble: nothing to repair")
        for r in repaired:
            out.print(
                f"dataset {r['dataset']}: moved off {len(r['left_out'])} node(s) of deal(s) "
                f"{', '.join(map(str, r['deals']))}; {r['rebuilt']} share(s) re-placed, "
                f"healthy={r['healthy']}"
                + (f"; replacement deal {r['replacement_deal']}" if r["replacement_deal"] else "")
            )
        return
    troubles = [t.to_json() for t in troubled_deals(m, who)]
    found = [s.to_json() for s in deal_summaries(m, who)]
    if as_json:
        print_json({"deals": found, "troubled": troubles})
        return
    if not found:
        out.print("no storage deals")
    for d in found:
        out.print(
            f"deal {d['deal']}: dataset {d['dataset']} v{d['version']}, "
            f"{len(d['nodes'])} node(s) × {d['periods']} periods at {_wei(d['price_per_period'])}; "
            f"escrowed {_wei(d['escrowed'])}, paid {_wei(d['paid'])}, owed {_wei(d['owed'])}; "
            f"catches 1 % loss with p={d['detect_p_1pct']}"
        )
    for t in troubles:
        out.print(
            f"deal {t['deal']}: node {t['node']} {t['reason']}; repair with "
            "`datagora storage deals --repair`"
        )


@storage_app.command("earnings")
def earnings(
    node: Annotated[str, typer.Argument(help="The node's address or account name.")],
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """What a storage node earned, proved and lost, per deal (`datagora node earnings`
    and `datagora storage earnings` are the same command).

    Example: datagora node earnings storage1
    """
    from datagora.market.deals import node_earnings

    m = marketplace(None, keys, need_account=False)
    rows = node_earnings(m, address_of(node, keys))
    total = {
        "earned": sum(int(r["earned"]) for r in rows),
        "slashed": sum(int(r["slashed"]) for r in rows),
    }
    if as_json:
        totals = {k: str(v) for k, v in total.items()}
        print_json({"node": address_of(node, keys), "deals": rows, **totals})
        return
    for r in rows:
        out.print(
            f"deal {r['deal']} (dataset {r['dataset']}): proven {r['proven']}, missed "
            f"{r['missed']}, earned {_wei(r['earned'])}, slashed {_wei(r['slashed'])}"
        )
    print_fields({"earned": _wei(total["earned"]), "slashed": _wei(total["slashed"])})


@deal_app.command("open")
def deal_open(
    dataset: Annotated[int, typer.Argument(help="Dataset id (you must control it).")],
    node: Annotated[
        list[str], typer.Option(help="URL=ADDRESS: a storage node and its account (repeat).")
    ],
    price: Annotated[str, typer.Option(help="MarketTokens per period per node.")],
    periods: Annotated[int, typer.Option(help="Number of periods.")] = 30,
    period_blocks: Annotated[int, typer.Option(help="Blocks per period (7200 ≈ a day).")] = 7200,
    grace_blocks: Annotated[int, typer.Option(help="Blocks a proof may come late.")] = 256,
    collateral: Annotated[str, typer.Option(help="MarketTokens each node posts.")] = "0",
    slash: Annotated[str, typer.Option(help="MarketTokens taken per missed period.")] = "0",
    challenges: Annotated[int, typer.Option(help="Blocks challenged per period (1..32).")] = 16,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Open a deal paying nodes per proven period for the shares they hold.

    Example: datagora storage deal open 3 --node http://host:7001=n1 --price 1
    """
    from datagora.ledger.deals import DealTerms
    from datagora.market.deals import open_deal
    from datagora.storage.deals import detection_probability

    nodes = {}
    for item in node:
        url, sep, address = item.rpartition("=")
        if not sep or not url:
            raise ConfigError(f"--node takes URL=ADDRESS, got {item!r}")
        nodes[url] = address_of(address, keys)
    terms = DealTerms(
        tokens(price, "--price"),
        tokens(collateral, "--collateral"),
        tokens(slash, "--slash"),
        periods,
        period_blocks,
        grace_blocks,
        challenges,
    )
    m = marketplace(account, keys)
    deal, tx = open_deal(m, dataset, nodes, terms)
    odds = detection_probability(0.01, challenges, periods)
    result = {"deal": deal, "tx": tx.tx_hash, "detect_p_1pct": round(odds, 4)}
    if as_json:
        print_json(result)
    else:
        out.print(
            f"opened deal {deal} ({tx.tx_hash}); a node that lost 1 % of its blocks is "
            f"caught within {periods} periods with probability {odds:.3f}"
        )


@deal_app.command("end")
def deal_end(
    deal: Annotated[int, typer.Argument(help="Deal id.")],
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """End a deal you opened: periods not yet started are refunded now.

    Example: datagora storage deal end 1 --account owner
    """
    from datagora.market.deals import end_deal

    tx = end_deal(marketplace(account, keys), deal)
    if as_json:
        print_json({"deal": deal, "tx": tx.tx_hash})
    else:
        out.print(f"ended deal {deal} ({tx.tx_hash})")


@deal_app.command("odds")
def deal_odds(
    lost: Annotated[float, typer.Option(help="Fraction of blocks the node lost.")] = 0.01,
    challenges: Annotated[int, typer.Option(help="Blocks challenged per period.")] = 16,
    periods: Annotated[int, typer.Option(help="Periods.")] = 30,
    as_json: JsonFlag = False,
) -> None:
    """The probability that a node which lost a fraction of its blocks is caught:
    1 - (1 - lost)^(challenges · periods).

    Example: datagora storage deal odds --lost 0.01 --challenges 5 --periods 30
    """
    from datagora.storage.deals import detection_probability, periods_to_detect

    if not 0.0 < lost < 1.0:
        raise ConfigError("--lost is a fraction strictly between 0 and 1")
    p = detection_probability(lost, challenges, periods)
    result: dict[str, Any] = {
        "lost": lost,
        "challenges": challenges,
        "periods": periods,
        "probability": round(p, 6),
        "periods_for_99pct": periods_to_detect(lost, challenges, 0.99),
    }
    if as_json:
        print_json(result)
    else:
        out.print(
            f"a node that lost {lost:.2%} of its blocks is caught within {periods} periods of "
            f"{challenges} challenges with probability {p:.4f} (99 % after "
            f"{result['periods_for_99pct']} periods)"
        )


@storage_app.command("prove")
def prove(
    data: Annotated[Path, typer.Option(help="The storage node's data directory (read only).")],
    deal: Annotated[list[int], typer.Option(help="A deal this node is part of (repeat).")],
    join: Annotated[bool, typer.Option(help="Check each deal and post its collateral.")] = False,
    loop: Annotated[bool, typer.Option(help="Keep proving each period until stopped.")] = False,
    every: Annotated[float, typer.Option(help="--loop: seconds between checks.")] = 12.0,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Answer this node's challenges in its deals, from the shares on its disk.

    Run it next to `datagora node --roles storage` with the node's account.
    Example: datagora storage prove --data ./node1 --deal 1 --account n1 --loop
    """
    from datagora.market.deals import node_prover

    m = marketplace(account, keys)
    prover = node_prover(m, data, load_identity(account, keys).account)
    if join:
        for d in deal:
            prover.join(d)
    while True:
        sent = prover.run_once(deal)
        rows = [{"deal": d, "period": p, "gas": g} for d, p, g in sent]
        if as_json:
            print_json({"proofs": rows, "answer_ms": round(prover.last_answer_ms, 1)})
        else:
            for r in rows:
                out.print(f"proved deal {r['deal']} period {r['period']} ({r['gas']:,} gas)")
        if not loop:
            return
        time.sleep(every)


def default_watch_state(owner: str) -> Path:
    """Where `storage watch` keeps its state: next to the network file's state (a
    `datagora up` network), else in ~/.datagora."""
    from datagora.cli.common import network_or_none

    net = network_or_none()
    base = Path(net.state_dir) if net is not None and net.state_dir else Path.home() / ".datagora"
    return base / f"repair-watch-{owner.lower()}.db"


@storage_app.command("watch")
def watch(
    state: Annotated[
        Path | None,
        typer.Option(
            help="SQLite file of the last block read and the repairs done "
            "(default: the network's state directory, else ~/.datagora)."
        ),
    ] = None,
    every: Annotated[float, typer.Option(help="Seconds between rounds.")] = 12.0,
    once: Annotated[bool, typer.Option(help="One round, then exit.")] = False,
    account: AccountOption = None,
    keys: KeysOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Repair your storage deals by yourself: follow the chain for deal nodes that leave
    the registry, are slashed, fall below the minimum stake or miss a period; move
    their shares onto a registered storage node holding nothing of the dataset,
    record the repair and open a replacement deal paying that node for the periods
    left. One line per action (--json: one JSON object per line; with --once one
    document); restarting never repairs twice. Runs until stopped.

    Example: datagora storage watch --account owner
    """
    from datagora.cli.common import err
    from datagora.errors import DatagoraError
    from datagora.market.repair_watch import RepairWatch

    m = marketplace(account, keys)
    file = state or default_watch_state(m.identity.address)

    def say(line: str) -> None:
        if not as_json:
            out.print(line, highlight=False, soft_wrap=True)

    watcher = RepairWatch(m, file, every=every, say=say)
    try:
        while True:
            try:
                actions = watcher.run_once()
            except DatagoraError as exc:  # the chain is away: the next round tries again
                if once:
                    raise
                err.print(f"repair watcher: {exc}", highlight=False, soft_wrap=True)
                actions = []
            if once:
                if as_json:
                    rows = [a.to_json() for a in actions]
                    print_json({"cursor": watcher.cursor, "actions": rows})
                elif not actions:
                    out.print(f"nothing to repair (read up to block {watcher.cursor})")
                return
            if as_json:  # one JSON object per line while it runs
                for action in actions:
                    sys.stdout.write(json.dumps(action.to_json(), sort_keys=True) + "\n")
                sys.stdout.flush()
            time.sleep(every)
    except KeyboardInterrupt:
        return
    finally:
        watcher.close()
