"""The owner's repair watcher (market/repair_watch.py) on the embedded chain with real
storage nodes: a deal node that leaves, or is slashed, has its shares moved onto a
registered node that held nothing of the dataset, paid by a replacement deal; a
restart never repairs twice; a dataset that cannot be repaired backs off without
holding up the others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from storage_helpers import DealNetwork

from datagora.ledger import dev_account
from datagora.ledger.deals import DealTerms, PeriodState
from datagora.market.repair_watch import RepairWatch


def _holders(net: DealNetwork, manifest_hash: bytes) -> set[str]:
    client = net.owner.storage()
    placement = client.fetch_placement(client.fetch_manifest(manifest_hash))
    assert placement is not None
    return {loc for locs in placement.locations.values() for loc in locs}


def test_a_leaving_deal_node_is_repaired_onto_a_fresh_node_exactly_once(
    deal_network: DealNetwork, tmp_path: Path
) -> None:
    net, ledger = deal_network, deal_network.ledger
    assert ledger.deals is not None
    stored = net.store(on=[0, 1, 2])
    assert set(stored.holders) == set(net.urls[:3])
    fresh = set(net.urls[3:])
    terms = DealTerms(10**15, 10**16, 10**15, 4, 40, 20, 4)
    deal = net.open_deal(stored, terms)
    lines: list[str] = []
    state = tmp_path / "watch.db"
    watch = RepairWatch(net.owner, state, page=7, say=lines.append)
    assert watch.run_once() == [] and watch.cursor == ledger.chain.block_number
    assert watch.troubles() == []

    leaver = stored.holders[0]
    ledger.registry.leave(net.accounts[leaver])
    net.node(leaver).stop()  # gone for good: its shares are rebuilt from the others
    (action,) = watch.run_once()
    assert action.action == "repaired", action
    assert action.deals == (deal,) and action.nodes == (net.accounts[leaver].address,)
    assert action.rebuilt > 0 and action.recorded_tx and action.replacement_deal
    assert lines == [action.line()] and "leaving" in watch.troubles()[0]["reason"]
    # The shares left the leaving node for nodes that held nothing of the dataset.
    now_at = _holders(net, stored.manifest_hash)
    assert leaver not in now_at and now_at & fresh
    # A new deal (the old one's node list is fixed on chain) pays exactly them, for
    # the periods the old deal had left.
    new = action.replacement_deal
    paid = {s.node for s in ledger.deals.slots(new)}
    assert paid == {net.accounts[u].address for u in now_at & fresh}
    old, replacement = ledger.deals.deal(deal), ledger.deals.deal(new)
    assert replacement.terms.periods == old.end_period - ledger.deals.current_period(deal)
    (recorded,) = ledger.storage_log.find_events("StorageRepaired", stored.dataset)
    assert recorded["shares_rebuilt"] == action.rebuilt

    # Restarted, and with a later event about the same node in the same deal (its
    # missed period 0 slashed by a stranger), it repairs nothing again.
    cursor = watch.cursor
    watch.close()
    deals_before = ledger.deals.deal_count()
    again = RepairWatch(net.owner, state, say=lines.append)
    assert again.cursor == cursor > 0
    net.advance_to(old.window_end(0))
    ledger.deals.slash_missed(dev_account(4), deal, net.accounts[leaver].address, 0)
    assert again.run_once() == [] and ledger.deals.deal_count() == deals_before
    assert len(lines) == 1 and again.troubles(pending_only=True) == []

    # The data downloads with the leaving node stopped, and the new node proves its deal.
    out = tmp_path / "back.bin"
    net.owner.storage().download(stored.manifest_hash, stored.key, out)
    assert out.read_bytes() == stored.payload
    (url,) = [u for u in now_at & fresh][:1]
    prover = net.prover(url)
    prover.join(new)
    net.advance_to(replacement.seed_block(0) + 1)
    assert (new, 0) in [(d, p) for d, p, _ in prover.run_once([new])]
    assert ledger.deals.state_of(new, net.accounts[url].address, 0) is PeriodState.PROVEN
    again.close()


def test_a_slashed_node_is_repaired_and_a_dataset_that_cannot_be_backs_off(
    deal_network: DealNetwork, tmp_path: Path
) -> None:
    net, ledger = deal_network, deal_network.ledger
    assert ledger.deals is not None
    a = net.store(on=[0, 1, 2])
    b = net.store(on=[0, 4, 5])  # nodes 4 and 5 stop: too few of its shares are left
    c = net.store(on=[0, 1, 2, 3])  # no node free of it is up: it stays on its own nodes
    assert len(c.holders) == 4
    # A missed period costs more than the collateral: the rest comes off the stake.
    terms = DealTerms(10**15, 10**16, 10**18, 4, 40, 20, 4)
    deal_a, deal_b, deal_c = (net.open_deal(x, terms) for x in (a, b, c))
    for url in net.urls[4:]:
        net.node(url).stop()
    clock = [1_000.0]
    lines: list[str] = []
    watch = RepairWatch(
        net.owner, tmp_path / "watch.db", retry_first=30, say=lines.append, clock=lambda: clock[0]
    )
    assert watch.run_once() == []
    sleeper = net.urls[0]
    node = net.accounts[sleeper].address
    info = ledger.deals.deal(deal_a)
    net.advance_to(info.window_end(0))
    ledger.deals.slash_missed(dev_account(4), deal_a, node, 0)
    assert ledger.registry.stake_of(node) < ledger.registry.required_stake(1)

    actions = {x.dataset: x for x in watch.run_once()}
    assert actions.keys() == {a.dataset, b.dataset, c.dataset}
    reasons = {t["deal"]: t["reason"] for t in watch.troubles()}
    assert reasons[deal_a].startswith("missed period 0 (slashed")
    assert "stake below the minimum" in reasons[deal_b] == reasons[deal_c]
    # a: onto the one node free of it that is up, paid by a new deal.
    assert actions[a.dataset].action == "repaired" and actions[a.dataset].replacement_deal
    assert _holders(net, a.manifest_hash) == {net.urls[1], net.urls[2], net.urls[3]}
    assert {s.node for s in ledger.deals.slots(actions[a.dataset].replacement_deal)} == {
        net.accounts[net.urls[3]].address
    }
    # c: onto its other nodes (redundancy first); its deal pays them already.
    assert actions[c.dataset].action == "repaired" and actions[c.dataset].rebuilt > 0
    assert actions[c.dataset].replacement_deal is None and "no replacement deal" in lines[-1]
    assert _holders(net, c.manifest_hash) == {net.urls[1], net.urls[2], net.urls[3]}
    out = tmp_path / "c.bin"
    net.owner.storage().download(c.manifest_hash, c.key, out)
    assert out.read_bytes() == c.payload
    # b fails and backs off: not tried again before its time, then tried again.
    assert actions[b.dataset].action == "failed" and "attempt 1" in actions[b.dataset].detail
    assert watch.run_once() == []
    clock[0] += 31
    (retry,) = watch.run_once()
    assert retry.dataset == b.dataset and retry.action == "failed"
    assert "attempt 2, next in 60 s" in retry.detail
    assert len(lines) == 4
    watch.close()


@pytest.mark.anvil
def test_storage_watch_repairs_on_anvil_from_the_cli_and_node_earnings_shows_it(
    anvil_deal_network: DealNetwork, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from datagora.cli.app import app
    from datagora.crypto.keys import import_account
    from datagora.node.network import Network

    net, ledger = anvil_deal_network, anvil_deal_network.ledger
    assert ledger.deals is not None
    stored = net.store(on=[0, 1, 2])
    deal = net.open_deal(stored, DealTerms(10**15, 10**16, 10**15, 4, 40, 20, 4))
    keys = tmp_path / "keys"
    import_account(keys, bytes(dev_account(1).key).hex(), "pw", "owner", scrypt_n=2**4)
    file = tmp_path / "network.json"
    Network(ledger.chain.url, ledger.deployment, storage=net.urls).save(file)
    env = {
        "DATAGORA_NETWORK": str(file),
        "DATAGORA_KEYS_DIR": str(keys),
        "DATAGORA_PASSWORD": "pw",
        "DATAGORA_ACCOUNT": "",
    }
    state = tmp_path / "watch.db"

    def cli(*args: str) -> Any:
        result = CliRunner().invoke(app, [*args, "--json"], env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    watch = ("storage", "watch", "--once", "--account", "owner", "--state", str(state))
    assert cli(*watch)["actions"] == []
    leaver = stored.holders[1]
    ledger.registry.leave(net.accounts[leaver])
    net.node(leaver).stop()
    (action,) = cli(*watch)["actions"]
    assert action["action"] == "repaired" and action["deals"] == [deal]
    assert action["nodes"] == [net.accounts[leaver].address] and action["replacement_deal"]
    assert cli(*watch)["actions"] == []  # a new process reads the same state: done already
    (fresh,) = set(net.urls) - set(stored.holders)
    assert fresh in _holders(net, stored.manifest_hash)
    address = net.accounts[fresh].address
    earned = cli("node", "earnings", address)
    assert earned == cli("storage", "earnings", address)
    assert [d["deal"] for d in earned["deals"]] == [action["replacement_deal"]]
    out = tmp_path / "back.bin"
    net.owner.storage().download(stored.manifest_hash, stored.key, out)
    assert out.read_bytes() == stored.payload


@pytest.mark.anvil
def test_up_runs_the_owner_watcher_and_the_network_heals_by_itself(
    anvil_deal_network: DealNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from datagora.node import launcher as launcher_module
    from datagora.node.launcher import Launcher, LaunchPlan

    net, ledger = anvil_deal_network, anvil_deal_network.ledger
    stored = net.store(on=[0, 1, 2])
    deal = net.open_deal(stored, DealTerms(10**15, 10**16, 10**15, 4, 40, 20, 4))
    monkeypatch.setattr(launcher_module, "REPAIR_EVERY", 0.2)
    said: list[str] = []
    launcher = Launcher(LaunchPlan(tmp_path / "up"), said.append)
    (launcher.dir / "logs").mkdir(parents=True)
    # What `up` does once every part answers: the watcher acts as the owner (account 1).
    launcher._start_repair_watch(ledger.chain.url, ledger.deployment)
    try:
        leaver = stored.holders[2]
        ledger.registry.leave(net.accounts[leaver])
        deadline = time.monotonic() + 120
        while not any("repaired" in line for line in said):
            assert time.monotonic() < deadline, said
            time.sleep(0.2)
    finally:
        launcher.stop()
    (line,) = said
    assert line.startswith(f"repair: dataset {stored.dataset}: repaired: moved off ")
    assert f"(deal(s) {deal})" in line
    assert line.split(" ", 1)[1] in (launcher.dir / "logs" / "repair.log").read_text()
    assert leaver not in _holders(net, stored.manifest_hash)
    assert ledger.deals.deal_count() == deal + 1


def test_a_raised_minimum_stake_queues_the_deal_nodes_it_leaves_below(
    deal_network: DealNetwork, tmp_path: Path
) -> None:
    from datagora.ledger import Role

    net, ledger = deal_network, deal_network.ledger
    stored = net.store(on=[0, 1, 2])
    deal = net.open_deal(stored, DealTerms(10**15, 10**16, 10**15, 4, 40, 20, 4))
    watch = RepairWatch(net.owner, tmp_path / "watch.db")
    assert watch.follow() == 0
    rich = net.accounts[stored.holders[0]]
    ledger.registry.add_stake(rich, 10**19)  # stays above the new minimum
    ledger.registry.set_min_stake(dev_account(0), Role.STORAGE, 2 * 10**19)
    assert watch.follow() == 2
    queued = {(t["deal"], t["node"], t["reason"]) for t in watch.troubles(pending_only=True)}
    assert queued == {
        (deal, net.accounts[u].address, "stake below the minimum") for u in stored.holders[1:]
    }
    assert watch.follow() == 0  # read once
    watch.close()
