"""`--json` against one real network (anvil, a proxy, the owner's agent, storage nodes and
a catalog, all processes): a representative set of commands prints one JSON document
each, in the shape docs/cli.md documents; and the faucet (`fund`) and `transfer` let a
new account buy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from datagora.cli.app import app
from datagora.crypto.keys import import_account
from datagora.ledger import Chain, Ledger, dev_account
from datagora.ledger.anvil import find_anvil
from datagora.node.network import Network as NetworkFile
from datagora.ports import free_port
from datagora.testing.sharing import PASSWORD, Network, wait_until
from datagora.testing.storage import LocalNodes

TOKEN = 10**18


@dataclass
class Net:
    env: dict[str, str]
    file: Path
    keys: Path
    owner: str
    base: Path
    sharing: Network


def run(net: Net, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `datagora ARGS --json` in this process; its stdout parsed as JSON."""
    result = CliRunner().invoke(app, [*args, "--json"], env=env or net.env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    base = tmp_path_factory.mktemp("json")
    sharing = Network(base / "sharing", proxies=1, threshold=1).start()
    catalog: subprocess.Popen[bytes] | None = None
    try:
        with LocalNodes(6, base / "storage") as storage:
            port = free_port()
            catalog = subprocess.Popen(
                [sys.executable, "-m", "datagora", "node", "--roles", "catalog",
                 "--port", str(port), "--data", str(base / "catalog"),
                 "--rpc", sharing.anvil.url, "--deployment", str(sharing.deployment),
                 *[a for u in storage.urls for a in ("--storage-node", u)]],
            )  # fmt: skip
            catalog_url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(catalog_url + "/health", get=True), "the catalog")
            file = base / "network.json"
            NetworkFile(
                sharing.anvil.url,
                sharing.ledger.deployment,
                storage=storage.urls,
                proxies=sharing.proxy_urls,
                threshold=1,
                agent=sharing.agent.url,
                catalog=catalog_url,
            ).save(file)
            env = {
                "DATAGORA_NETWORK": str(file),
                "DATAGORA_KEYS_DIR": str(sharing.keys),
                "DATAGORA_PASSWORD": PASSWORD,
                "DATAGORA_ACCOUNT": "",
            }
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)  # the in-process CLI reads the environment
            try:
                yield Net(env, file, sharing.keys, sharing.owner.address, base, sharing)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    finally:
        if catalog is not None:
            catalog.terminate()
            catalog.wait(timeout=30)
        sharing.stop()


def test_a_new_account_funded_on_a_development_chain_can_buy(net: Net) -> None:
    made = run(net, "account", "new", "--name", "alice")
    alice = made["address"]
    assert run(net, "account", "list")[0]["address"] in {alice, net.owner}

    # The lie: a new account has nothing; `buy` must fail before `fund`.
    data = net.base / "cohort.csv"
    data.write_text("radius,label\n1.5,0\n2.5,1\n")
    published = run(
        net, "publish", str(data), "--title", "Cohort", "--price", "1.5", "--tag", "medical",
        "--tag", "cohort", "--account", net.owner,
    )  # fmt: skip
    paid = published["dataset"]
    assert published["price"] == str(15 * TOKEN // 10)
    assert published["tx"].startswith("0x") and len(published["tx"]) == 66
    # The estimate shown before sending: the transaction's gas (an estimate is never
    # below what the transaction used) × the fee per gas then.
    estimate = published["gas_estimate"]
    assert published["gas"] <= estimate["gas"] < 2 * published["gas"]
    assert int(estimate["wei"]) == estimate["gas"] * int(estimate["wei_per_gas"]) > 0
    poor = CliRunner().invoke(app, ["buy", str(paid), "--account", "alice"], env=net.env)
    assert poor.exit_code != 0

    funded = run(net, "fund", "alice", "10")
    assert funded == {**funded, "to": alice, "amount": str(10 * TOKEN), "balance": str(10 * TOKEN)}
    assert int(funded["gas_wei"]) > 0  # a new account also needs ether for gas

    bought = run(net, "buy", str(paid), "--account", "alice", "--max-price", "1.5")
    assert bought["dataset"] == paid and bought["consumer"] == alice
    assert bought["gas"] <= bought["gas_estimate"]["gas"] < 2 * bought["gas"]
    assert bought["expires_at"] > time.time()
    sent = run(net, "transfer", net.owner, "1.25", "--account", "alice")
    assert sent["from"] == alice and sent["amount"] == str(125 * TOKEN // 100)

    # Human output: tokens with the currency symbol.
    human = CliRunner().invoke(app, ["fund", "alice", "0.5"], env=net.env)
    assert human.exit_code == 0 and "0.5 DGM" in human.stdout and "7.75 DGM" in human.stdout

    # A person buying again sees the gas estimate (one line, stderr) before anything is
    # sent; --yes does not ask (nor would the test's non-terminal stdin).
    again = CliRunner().invoke(app, ["buy", str(paid), "--account", "alice", "--yes"], env=net.env)
    assert again.exit_code == 0, again.output
    (line,) = [x for x in again.stderr.splitlines() if x.startswith("gas estimate for")]
    assert "Exchange.buy_and_order" in line and line.endswith(" ETH")
    assert "ordered dataset" in again.stdout


def test_fund_refuses_a_chain_that_is_not_for_development(net: Net, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [find_anvil(), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "10",
         "--silent"],
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url), "anvil with chain id 10", timeout=30)
        ledger = Ledger.deploy(Chain.rpc(url), dev_account(0))
        file = tmp_path / "mainnet-like.json"
        NetworkFile(url, ledger.deployment).save(file)
        env = {**net.env, "DATAGORA_NETWORK": str(file)}
        address = dev_account(7).address
        result = CliRunner().invoke(app, ["fund", address, "5"], env=env)
        assert result.exit_code != 0
        assert "not a development chain" in str(result.exception)
        assert "datagora transfer" in str(result.exception)
        assert ledger.market_token.balance_of(address) == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(url: str, get: bool = False) -> bool:
    try:
        if get:
            return httpx.get(url, timeout=2, trust_env=False).is_success
        ask = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
        return httpx.post(url, json=ask, timeout=2, trust_env=False).is_success
    except httpx.HTTPError:
        return False


def test_json_of_the_everyday_commands(net: Net, tmp_path: Path) -> None:
    import_account(net.keys, dev_account(2).key.hex(), PASSWORD, "bob", scrypt_n=2**4)
    owner = ["--account", net.owner]
    bob = ["--account", "bob"]
    data = tmp_path / "cohort.csv"
    data.write_text("radius,label\n1.5,0\n2.5,1\n3.5,0\n")
    paid = run(net, "publish", str(data), "--title", "Paid", "--price", "2", "--tag", "x", *owner)
    free = run(net, "publish", str(data), "--title", "Free", "--free", *owner)["dataset"]
    approval = run(net, "publish", str(data), "--title", "Asked", "--approval", *owner)["dataset"]

    # The catalog: amounts in base units (decimal strings), lists as lists.
    wait_until(lambda: run(net, "search", "Paid")["total"] >= 1, "the catalog indexes")
    shown = run(net, "show", str(paid["dataset"]))
    assert shown["price"] == str(2 * TOKEN) and shown["tags"] == ["x"]
    assert shown["manifest_hash"] == paid["manifest_hash"] or len(shown["manifest_hash"]) >= 64

    run(net, "fund", "bob", "20")
    assert run(net, "buy", str(paid["dataset"]), *bob)["dataset"] == paid["dataset"]
    ordered = run(net, "order", str(free), *bob)
    assert ordered["dataset"] == free and ordered["gas"] > 0
    first = run(net, "request", str(approval), "--purpose", "a classifier", *bob)
    second = run(net, "request", str(approval), "--purpose", "resale", *bob)
    pending = run(net, "requests", *owner)
    assert {p["request"] for p in pending} >= {first["request"], second["request"]}
    assert run(net, "grant", str(first["request"]), "--days", "1", *owner)["days"] == 1
    denied = run(net, "deny", str(second["request"]), "--reason", "no resale", *owner)
    assert denied["reason"] == "no resale"

    target = tmp_path / "copy.csv"
    got = run(net, "download", str(paid["dataset"]), "-o", str(target), *bob)
    assert got["bytes"] == data.stat().st_size == target.stat().st_size
    assert run(net, "revoke", str(first["request"]), *owner)["request"] == first["request"]

    # An access condition the proxies check: bob's order no longer opens the data
    # before the window opens; a malformed condition is refused and stores nothing.
    later = int(time.time()) + 10 * 86_400
    ds = str(paid["dataset"])
    bad = CliRunner().invoke(app, ["conditions", "set", ds, "order AND (", *owner], env=net.env)
    assert bad.exit_code != 0 and "ends too early" in str(bad.exception)
    assert run(net, "conditions", "show", ds)["condition"] is None
    gated = run(net, "conditions", "set", ds, f"order AND after:{later}", *owner)
    assert gated["condition"].startswith("order AND after:") and gated["gas"] > 0
    assert run(net, "conditions", "show", ds)["encoded"] == gated["encoded"]
    wait_until(
        lambda: (
            [c["condition"] for c in run(net, "show", ds)["conditions"]] == [gated["condition"]]
        ),
        "the catalog shows the condition",
    )
    refused = CliRunner().invoke(
        app, ["download", ds, "-o", str(tmp_path / "gated.csv"), *bob], env=net.env
    )
    why = refused.output + str(refused.exception)
    assert refused.exit_code != 0 and "not open before" in why, why
    assert run(net, "conditions", "set", ds, "--clear", *owner)["condition"] is None
    again = run(net, "download", ds, "-o", str(tmp_path / "again.csv"), *bob)
    assert again["bytes"] == data.stat().st_size

    meta = tmp_path / "meta.json"
    service = {"id": 0, "type": "download", "price": str(2 * TOKEN), "policy": "automatic"}
    doc = {"title": "Paid v2", "license": "CC-BY-4.0", "creator": "me", "description": ""}
    meta.write_text(json.dumps({**doc, "tags": ["x"], "services": [service]}))
    assert run(net, "update", str(paid["dataset"]), "--metadata", str(meta), *owner)["gas"] > 0
    assert run(net, "rotate", str(free), *owner)["tx"].startswith("0x")

    assert run(net, "kv", "put", "notes/1", "--value", "hello", *bob)["version"] == 1
    value = run(net, "kv", "get", "notes/1", *bob)
    assert value["value"] == "hello" and value["bytes"] == 5
    assert len(run(net, "kv", "history", "notes/1", *bob)) == 1
    assert run(net, "kv", "remove", "notes/1", *bob)["removed"] is True

    audit = run(net, "audit", str(paid["dataset"]))
    sale = next(e for e in audit["events"] if e["event"] == "Bought")
    assert sale["args"]["total"] == str(2 * TOKEN)  # base units, whole
    assert sale["time"].endswith("Z") and len(sale["tx"]) == 66
    repaired = run(net, "repair", str(paid["dataset"]), "--check")
    assert repaired["healthy"] is True and repaired["recorded_tx"] is None
    assert run(net, "chain", "info", "--rpc", net.sharing.anvil.url, "--deployment",
               str(net.sharing.deployment))["datasets"] >= 3  # fmt: skip
    assert {p["part"] for p in run(net, "status")["parts"]} >= {"chain", "catalog"}


def human(net: Net, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={**net.env, "COLUMNS": "80"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def test_people_read_tokens_lists_yes_no_and_short_hashes(net: Net, tmp_path: Path) -> None:
    import re

    owner = ["--account", net.owner]
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    published = run(net, "publish", str(data), "--title", "Tagged", "--price", "1.5",
                    "--tag", "medical", "--tag", "cohort", *owner)  # fmt: skip
    dataset = str(published["dataset"])
    carol = dev_account(3).address
    run(net, "fund", carol, "5")
    import_account(net.keys, dev_account(3).key.hex(), PASSWORD, "carol", scrypt_n=2**4)
    run(net, "buy", dataset, "--account", "carol")
    wait_until(lambda: run(net, "show", dataset)["orders"] >= 1, "the catalog sees the order")

    shown = human(net, "show", dataset)
    assert re.search(r"tags:\s+cohort, medical", shown), shown
    assert re.search(r"price:\s+1\.5 DGM", shown), shown
    assert "1500000000000000000" not in shown and "['" not in shown
    assert re.search(r"manifest hash:\s+0x[0-9a-f]{4}…[0-9a-f]{4}", shown), shown

    found = human(net, "search", "Tagged", "--max-price", "1.5 DGM")
    assert "1.5 DGM" in found and "cohort, medical" in found, found
    assert run(net, "search", "Tagged", "--max-price", "1.4")["total"] == 0

    audit = human(net, "audit", dataset)
    assert max(len(line) for line in audit.splitlines()) <= 80, audit
    assert not re.search(r"[0-9a-fA-F]{9}", audit.replace("│", "").replace("\n", "")), audit
    assert "for 1.5 DGM" in audit.replace("\n", " ") or "1.5 DGM" in audit, audit

    repaired = human(net, "repair", dataset, "--check")
    assert re.search(r"healthy:\s+yes", repaired), repaired
    assert "True" not in repaired and "None" not in repaired, repaired


def test_publish_with_a_mock_then_anyone_reads_it_back(net: Net, tmp_path: Path) -> None:
    owner = ["--account", net.owner]
    data = tmp_path / "cohort.csv"
    data.write_text("radius,label\n1.5,0\n2.5,1\n3.5,0\n")
    synthetic = tmp_path / "synthetic.csv"
    synthetic.write_text("radius,label\n2.0,1\n3.0,0\n")

    def refused(mock: Path) -> str:
        args = ["publish", str(data), "--title", "M", "--free", "--mock", str(mock), *owner]
        result = CliRunner().invoke(app, args, env=net.env)
        assert result.exit_code != 0 and not isinstance(result.exception, AssertionError)
        message = str(result.exception) if result.exception else result.output
        assert "\n" not in message.strip()
        return message

    before = net.sharing.ledger.data_nft.dataset_count()
    # The lie: the real rows published as "mock" data (public to all) are refused.
    leaky = tmp_path / "leaky.csv"
    leaky.write_text("radius,label\n9.0,1\n2.5,1\n")
    assert "contains line 3" in refused(leaky) and "make_mock" in refused(leaky)
    other_columns = tmp_path / "other.csv"
    other_columns.write_text("label,radius\n1,2.0\n")
    assert "keeps the data's columns" in refused(other_columns)
    assert "is not a file" in refused(tmp_path / "missing.csv")
    assert net.sharing.ledger.data_nft.dataset_count() == before  # nothing published

    published = run(
        net, "publish", str(data), "--title", "Mocked", "--free", "--mock", str(synthetic), *owner
    )
    assert published["mock"] is True
    target = tmp_path / "got.csv"
    got = run(net, "mock", str(published["dataset"]), "-o", str(target))
    assert got["bytes"] == synthetic.stat().st_size
    assert target.read_bytes() == synthetic.read_bytes()
