"""The node registry (issue 16): who serves datagora, with a stake that can be slashed.

Each refusal is a node or a stranger trying its luck (registering twice, staking
less than the minimum, withdrawing before the unbonding delay, slashing a rival
without being an approved slasher, an endpoint that is not an http(s) URL) and
asserts that nothing moved.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from datagora.crypto.keys import import_account
from datagora.ledger import Chain, Ledger, NodeState, Role, dev_account
from datagora.ledger.anvil import Anvil
from datagora.ledger.errors import (
    InsufficientFunds,
    InvalidArgument,
    InvalidState,
    NotAuthorized,
    NotFound,
)
from datagora.ledger.registry import DEFAULT_MIN_STAKE, DEFAULT_UNBONDING_DELAY
from datagora.node.apps import storage_app
from datagora.node.inprocess import ServerGroup
from datagora.node.network import Network as NetworkFile
from datagora.node.network import dev_grants
from datagora.node.registration import STORAGE_ACCOUNT_BASE, DevNode, register_dev_nodes
from helpers import DEPLOYER, OTHER, OWNER, fund

NODE = dev_account(5)
NODE2 = dev_account(6)
SLASHER = dev_account(7)
PK = b"\x02" + bytes(range(32))
MIN = DEFAULT_MIN_STAKE


def register(ledger: Ledger, node=NODE, roles=Role.STORAGE, stake=MIN, endpoint="http://n1:1"):
    fund(ledger, node.address, 100 * MIN)
    return ledger.registry.register(node, roles, endpoint, stake, PK)


def test_register_update_and_list(ledger: Ledger) -> None:
    reg = ledger.registry
    mt = ledger.market_token
    tx = register(ledger, roles=Role.STORAGE | Role.PROXY, stake=2 * MIN)
    print(f"NodeRegistry.register gas: {tx.gas_used}")
    info = reg.node(NODE.address)
    assert info.roles == Role.STORAGE | Role.PROXY
    assert (info.endpoint, info.umbral_pk, info.stake) == ("http://n1:1", PK, 2 * MIN)
    assert info.state == NodeState.ACTIVE
    assert mt.balance_of(reg.address) == 2 * MIN
    assert reg.is_active(NODE.address, Role.STORAGE)
    assert reg.is_active(NODE.address, Role.PROXY)
    assert not reg.is_active(NODE.address, Role.COMPUTE)
    assert reg.stake_of(NODE.address) == 2 * MIN
    second = register(ledger, NODE2, Role.COMPUTE, endpoint="https://compute.example.org")
    print(f"NodeRegistry.register gas (a later node, no key): {second.gas_used}")
    # One slot holds a node's numbers: the first node pays for the registry's first
    # token balance and list slot too.
    assert tx.gas_used < 250_000 and second.gas_used < 215_000
    assert reg.endpoints(Role.STORAGE) == ["http://n1:1"]
    assert reg.endpoints(Role.COMPUTE) == ["https://compute.example.org"]
    assert [n.address for n in reg.nodes()] == [NODE.address, NODE2.address]

    reg.update(NODE, "https://n1.example.org:8443")
    assert reg.node(NODE.address).endpoint == "https://n1.example.org:8443"
    assert reg.node(NODE.address).umbral_pk == PK  # kept
    reg.update(NODE, "http://n1:2", b"")
    assert reg.node(NODE.address).umbral_pk == b""
    with pytest.raises(InvalidState, match="node not active"):
        reg.update(OTHER, "http://other:1", b"")  # a stranger cannot update
    with pytest.raises(NotFound):
        reg.node(OTHER.address)


def test_bad_registrations_are_refused_and_move_nothing(ledger: Ledger) -> None:
    reg = ledger.registry
    mt = ledger.market_token
    fund(ledger, NODE.address, 100 * MIN)
    before = mt.balance_of(NODE.address)
    with pytest.raises(InsufficientFunds, match="stake below minimum"):
        reg.register(NODE, Role.STORAGE, "http://n1:1", MIN - 1)
    with pytest.raises(InsufficientFunds, match="stake below minimum"):
        reg.register(NODE, Role.STORAGE | Role.COMPUTE, "http://n1:1", MIN)  # needs 2 MIN
    for endpoint in ("ftp://n1", "n1:8080", "http://", "http://a b", "http://u:p@h", ""):
        with pytest.raises(InvalidArgument, match="endpoint"):
            reg.register(NODE, Role.STORAGE, endpoint, MIN)
    with pytest.raises(InvalidArgument):
        reg.register(NODE, Role.STORAGE, "http://" + "a" * 300, MIN)
    with pytest.raises(InvalidArgument, match=r"(?i)umbral (public )?key"):
        reg.register(NODE, Role.STORAGE, "http://n1:1", MIN, b"\x04" + bytes(32))
    with pytest.raises(InvalidArgument, match="roles"):
        reg.register(NODE, 8, "http://n1:1", MIN)
    with pytest.raises(InvalidArgument, match="role"):
        Role.parse("storage,miner")
    assert Role.parse("storage, proxy") == Role.STORAGE | Role.PROXY
    assert mt.balance_of(NODE.address) == before

    # The contract checks on its own what a client that skips these checks sends.
    with pytest.raises(InvalidArgument, match="bad endpoint"):
        reg._transact(NODE, "register", 1, "ftp://n1.example", b"", MIN)
    with pytest.raises(InvalidArgument, match="unknown roles"):
        reg._transact(NODE, "register", 9, "http://n1", b"", MIN)
    with pytest.raises(InvalidArgument, match=r"(?i)umbral (public )?key"):
        reg._transact(NODE, "register", 1, "http://n1", b"\x02\x01", MIN)

    reg.register(NODE, Role.STORAGE, "http://n1:1", MIN)
    with pytest.raises(InvalidState, match="already registered"):
        reg.register(NODE, Role.PROXY, "http://n1:2", MIN)
    assert mt.balance_of(NODE.address) == before - MIN
    assert reg.node(NODE.address).roles == Role.STORAGE


def test_leave_unbonds_then_withdraws_the_stake_left(ledger: Ledger) -> None:
    reg = ledger.registry
    mt = ledger.market_token
    register(ledger, stake=3 * MIN)
    before = mt.balance_of(NODE.address)
    with pytest.raises(InvalidState, match="not leaving"):
        reg.withdraw(NODE)
    unbond_at, _ = reg.leave(NODE)
    assert unbond_at == ledger.chain.timestamp() + DEFAULT_UNBONDING_DELAY
    info = reg.node(NODE.address)
    assert (info.state, info.unbond_at) == (NodeState.LEAVING, unbond_at)
    assert not reg.is_active(NODE.address, Role.STORAGE)
    assert reg.endpoints(Role.STORAGE) == []  # a leaving node is not used
    with pytest.raises(InvalidState, match="node not active"):
        reg.leave(NODE)
    with pytest.raises(InvalidState, match="node not active"):
        reg.update(NODE, "http://n1:9")
    ledger.chain.advance_time(DEFAULT_UNBONDING_DELAY - 60)
    with pytest.raises(InvalidState, match="still unbonding"):
        reg.withdraw(NODE)
    assert mt.balance_of(NODE.address) == before
    ledger.chain.advance_time(120)
    amount, _ = reg.withdraw(NODE)
    assert amount == 3 * MIN
    assert mt.balance_of(NODE.address) == before + 3 * MIN
    assert reg.node(NODE.address).state == NodeState.GONE
    with pytest.raises(InvalidState):
        reg.withdraw(NODE)  # only once
    # A node that left may come back, with a fresh stake; it is listed once.
    reg.register(NODE, Role.PROXY, "http://n1:3", MIN)
    assert [n.address for n in reg.nodes(Role.PROXY)] == [NODE.address]
    assert reg.stake_of(NODE.address) == MIN


def test_only_approved_slashers_slash_even_while_unbonding(ledger: Ledger) -> None:
    reg = ledger.registry
    mt = ledger.market_token
    register(ledger, stake=2 * MIN)
    with pytest.raises(NotAuthorized, match="not a slasher"):
        reg.slash(OTHER, NODE.address, MIN, OTHER.address)
    with pytest.raises(NotAuthorized, match="owner"):
        reg.set_slasher(OTHER, OTHER.address, True)  # nobody approves itself
    assert reg.stake_of(NODE.address) == 2 * MIN

    reg.set_slasher(DEPLOYER, SLASHER.address, True)
    assert reg.is_slasher(SLASHER.address)
    taken, _ = reg.slash(SLASHER, NODE.address, MIN + 1, OTHER.address)
    assert taken == MIN + 1
    assert reg.stake_of(NODE.address) == MIN - 1
    # Below its minimum now: no longer used until it adds stake.
    assert not reg.is_active(NODE.address, Role.STORAGE)
    assert reg.endpoints(Role.STORAGE) == []
    reg.add_stake(NODE, 1)
    assert reg.endpoints(Role.STORAGE) == ["http://n1:1"]

    reg.leave(NODE)  # leaving does not escape a slash
    other_before = mt.balance_of(OTHER.address)
    taken, _ = reg.slash(SLASHER, NODE.address, 10 * MIN, OTHER.address)
    assert taken == MIN  # all that was left
    assert mt.balance_of(OTHER.address) == other_before + MIN
    with pytest.raises(NotFound):
        reg.slash(SLASHER, NODE2.address, 1, OTHER.address)  # not a node
    reg.set_slasher(DEPLOYER, SLASHER.address, False)
    with pytest.raises(NotAuthorized):
        reg.slash(SLASHER, NODE.address, 1, OTHER.address)
    ledger.chain.advance_time(DEFAULT_UNBONDING_DELAY)
    assert reg.withdraw(NODE)[0] == 0


def test_admin_sets_minimums_and_delay(ledger: Ledger) -> None:
    reg = ledger.registry
    register(ledger)
    with pytest.raises(NotAuthorized):
        reg.set_min_stake(OTHER, Role.STORAGE, 0)
    with pytest.raises(NotAuthorized):
        reg.set_unbonding_delay(OTHER, 0)
    reg.set_min_stake(DEPLOYER, Role.STORAGE, 2 * MIN)
    assert reg.required_stake(Role.STORAGE | Role.PROXY) == 3 * MIN
    assert reg.endpoints(Role.STORAGE) == []  # under-staked for the new minimum
    with pytest.raises(InvalidArgument, match="too far"):
        reg.set_unbonding_delay(DEPLOYER, 400 * 86_400)
    reg.set_unbonding_delay(DEPLOYER, 0)
    reg.leave(NODE)
    assert reg.withdraw(NODE)[0] == MIN


# -- discovery: clients find storage nodes in the registry ---------------------------------


@dataclass
class Discovery:
    ledger: Ledger
    deployment: Path
    network: Path
    keys: Path
    active: list[tuple[str, Path]]  # (url, data dir) of registered, active storage nodes
    unused: list[tuple[str, Path]]  # one that left, one never registered


PASSWORD = "registry-test"


def _files(root: Path) -> int:
    """Bytes a storage node holds (it packs shares into few files)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def discovery(anvil: Anvil, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Discovery]:
    """Eight storage servers on anvil: six registered and active, one registered that
    then left, one that serves but never registered; a network file naming none."""
    base = tmp_path_factory.mktemp("discovery")
    ledger = Ledger.deploy(Chain.rpc(anvil.url), DEPLOYER)
    deployment = base / "deployment.json"
    ledger.deployment.save(deployment)
    with ServerGroup() as servers:
        nodes = [
            (
                servers.start(
                    partial(
                        storage_app,
                        base / f"s{i}",
                        64 << 20,
                        chain_id=ledger.chain.chain_id,
                        grants=dev_grants(),
                    ),
                    f"s{i}",
                ).url,
                base / f"s{i}",
            )
            for i in range(8)
        ]
        register_dev_nodes(
            ledger,
            [
                DevNode(dev_account(STORAGE_ACCOUNT_BASE + 40 + i), Role.STORAGE, url)
                for i, (url, _) in enumerate(nodes[:7])
            ],
        )
        leaver = dev_account(STORAGE_ACCOUNT_BASE + 46)
        ledger.registry.leave(leaver)
        ledger.market_token.mint(DEPLOYER, OWNER.address, 100 * MIN)
        keys = base / "keys"
        import_account(keys, OWNER.key.hex(), PASSWORD, "owner", scrypt_n=2**4)
        network = base / "network.json"
        NetworkFile(anvil.url, ledger.deployment).save(network)  # no storage, no proxies
        yield Discovery(ledger, deployment, network, keys, nodes[:6], nodes[6:])


def _only_registered_nodes_hold_shares(d: Discovery, before: dict[Path, int]) -> None:
    gained = {p: _files(p) - n for p, n in before.items()}
    assert all(gained[p] > 0 for _, p in d.active), gained
    assert all(gained[p] == 0 for _, p in d.unused), gained


def test_a_cli_publish_stores_on_the_registered_nodes_only(discovery: Discovery) -> None:
    from typer.testing import CliRunner

    from datagora.cli.app import app

    d = discovery
    data = d.network.parent / "cohort.csv"
    data.write_text("radius,label\n" + "".join(f"{i}.5,{i % 2}\n" for i in range(2000)))
    env = {
        "DATAGORA_NETWORK": str(d.network),
        "DATAGORA_KEYS_DIR": str(d.keys),
        "DATAGORA_PASSWORD": PASSWORD,
        "DATAGORA_ACCOUNT": "",
    }
    before = {p: _files(p) for _, p in d.active + d.unused}
    result = CliRunner().invoke(
        app,
        ["publish", str(data), "--title", "Cohort", "--price", "1", "--account", "owner", "--json"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dataset"] >= 1
    _only_registered_nodes_hold_shares(d, before)

    listed = CliRunner().invoke(app, ["node", "list", "--all", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    states = {n["endpoint"]: n["state"] for n in json.loads(listed.stdout)}
    assert [states[u] for u, _ in d.active] == ["active"] * 6
    assert states[d.unused[0][0]] == "leaving"
    assert d.unused[1][0] not in states
    assert all(n["stake"] == str(MIN) for n in json.loads(listed.stdout))


def test_an_sdk_publish_stores_on_the_registered_nodes_only(discovery: Discovery) -> None:
    import datagora as dg

    d = discovery
    market = dg.connect(
        rpc=_rpc(d),
        deployment=d.deployment,
        account="owner",
        keys=d.keys,
        password=PASSWORD,
    )
    assert market.endpoints.storage == [u for u, _ in d.active]
    before = {p: _files(p) for _, p in d.active + d.unused}
    market.publish(
        io.BytesIO(b"x,y\n" + b"1,2\n" * 5000),
        {"title": "SDK", "license": "CC-BY-4.0", "creator": "me"},
        price=10**18,
    )
    _only_registered_nodes_hold_shares(d, before)


def test_nodes_that_call_storage_nodes_find_them_in_the_registry(discovery: Discovery) -> None:
    from datagora.node import NodeConfig

    d = discovery
    config = NodeConfig(data_dir=d.network.parent, rpc=_rpc(d), deployment=d.deployment)
    assert config.registered("storage") == [u for u, _ in d.active]
    assert config.registered("proxy") == []


def _rpc(d: Discovery) -> str:
    return str(json.loads(d.network.read_text())["chain_url"])


def test_a_node_registers_updates_and_leaves_with_the_cli(discovery: Discovery) -> None:
    from typer.testing import CliRunner

    from datagora.cli.app import app

    d = discovery
    node = dev_account(STORAGE_ACCOUNT_BASE + 50)
    d.ledger.chain.fund(node.address, 10**18)
    d.ledger.market_token.mint(DEPLOYER, node.address, 50 * MIN)
    if not (d.keys / "node").exists():
        import_account(d.keys, node.key.hex(), PASSWORD, "node", scrypt_n=2**4)
    env = {
        "DATAGORA_NETWORK": str(d.network),
        "DATAGORA_KEYS_DIR": str(d.keys),
        "DATAGORA_PASSWORD": PASSWORD,
        "DATAGORA_ACCOUNT": "node",
    }

    def cli(*args: str, ok: bool = True) -> Any:
        result = CliRunner().invoke(app, ["node", *args, "--json"], env=env)
        assert result.exit_code == (0 if ok else 1), result.output
        return json.loads(result.stdout) if ok else None

    # Bad input: one line saying what is wrong, and nothing happens.
    refused = subprocess.run(
        [sys.executable, "-m", "datagora", "node", "register", "--roles", "storage",
         "--endpoint", "ftp://n9"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert lines[0].startswith("error:") and "not an http(s) URL" in lines[0]
    cli("register", "--roles", "miner", "--endpoint", "http://n9", ok=False)
    cli("register", "--roles", "storage", "--endpoint", "http://n9", "--stake", "1", ok=False)
    assert d.ledger.registry.stake_of(node.address) == 0

    made = cli("register", "--roles", "storage,proxy", "--endpoint", "http://n9:1", "--stake", "25")
    assert made["roles"] == ["storage", "proxy"] and made["stake"] == str(25 * 10**18)
    assert len(bytes.fromhex(made["umbral_pk"])) == 33  # a proxy's key, from its account
    assert made["gas"] < 250_000
    assert cli("update", "--endpoint", "https://n9.example.org")["endpoint"] == (
        "https://n9.example.org"
    )
    assert "https://n9.example.org" in [n["endpoint"] for n in cli("list", "--role", "proxy")]
    left = cli("leave")
    assert left["unbond_at"] > 0
    listed = {n["address"]: n for n in cli("list", "--all")}
    assert listed[node.address]["state"] == "leaving"
    assert node.address not in {n["address"] for n in cli("list")}
    cli("withdraw", ok=False)  # still unbonding
    assert d.ledger.registry.stake_of(node.address) == 25 * 10**18


def test_a_development_network_registers_its_nodes_idempotently(embedded_ledger: Ledger) -> None:
    """`up` registers its nodes at every start: a new port updates the record, a node
    still unbonding is left alone, one that unbonded comes back with a fresh stake."""
    from datagora.node.registration import ensure_registered

    ledger = embedded_ledger
    reg = ledger.registry
    node = dev_account(STORAGE_ACCOUNT_BASE + 60)
    (info,) = register_dev_nodes(ledger, [DevNode(node, Role.STORAGE, "http://127.0.0.1:1")])
    assert (info.endpoint, info.stake, info.state) == ("http://127.0.0.1:1", MIN, NodeState.ACTIVE)
    (again,) = register_dev_nodes(ledger, [DevNode(node, Role.STORAGE, "http://127.0.0.1:2/")])
    assert (again.endpoint, again.stake) == ("http://127.0.0.1:2", MIN)
    reg.leave(node)
    assert ensure_registered(ledger, node, Role.STORAGE, "http://127.0.0.1:3") is None
    assert reg.node(node.address).state == NodeState.LEAVING
    ledger.chain.advance_time(DEFAULT_UNBONDING_DELAY)
    back = ensure_registered(ledger, node, Role.STORAGE, "http://127.0.0.1:3")
    assert back is not None and back.state == NodeState.ACTIVE and back.stake == MIN
    assert reg.endpoints(Role.STORAGE)[-1] == "http://127.0.0.1:3"
    assert [n.address for n in reg.nodes(active_only=False)].count(node.address) == 1


def test_proxies_found_in_the_registry_default_to_a_threshold_of_two(ledger: Ledger) -> None:
    """Endpoints with no proxies default to threshold 1; once several proxies come
    from the registry the default becomes 2 (1 of several is refused), while an
    explicit higher threshold stays. Before, a client discovering three proxies (the
    repair watcher `up` starts) was refused with "threshold 1 with 3 proxies"."""
    from datagora.market import Endpoints, discover

    for i, account in enumerate((NODE, NODE2, SLASHER)):
        register(ledger, account, Role.PROXY, endpoint=f"http://proxy{i}:1")
    found = discover(ledger, Endpoints(storage=["http://s:1"]))
    assert len(found.proxies) == 3 and found.threshold == 2
    assert discover(ledger, Endpoints(storage=["http://s:1"], threshold=3)).threshold == 3
    named = Endpoints(storage=["http://s:1"], proxies=["http://p:1"])
    assert discover(ledger, named).threshold == 1
