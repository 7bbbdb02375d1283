"""The fair-exchange commands as a user runs them (real processes, real anvil): deploying
with an existing ERC-20 as the currency, and pointing tokenURI at a catalog."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import run

from datagora.ledger import Chain, Ledger, dev_account
from datagora.ledger.anvil import Anvil
from datagora.ledger.compiler import compile_contract


def test_deploy_with_an_existing_currency_and_set_the_base_uri(tmp_path: Path) -> None:
    deployer = dev_account(9)
    key = "0x" + bytes(deployer.key).hex()
    env = {"DATAGORA_PRIVATE_KEY": key}
    with Anvil() as node:
        chain = Chain.rpc(node.url)
        plain = compile_contract("PlainToken")
        token = chain.deploy(deployer, plain.abi, plain.bytecode, "Plain USD", "PUSD", 6)
        record = tmp_path / "d.json"
        bad = run("chain", "deploy", "--rpc", node.url, "--currency", "0x1234", env=env)
        assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
        assert "not an address" in bad.stderr
        deployed = run(
            "chain", "deploy", "--rpc", node.url, "--out", str(record), "--currency", token,
            "--json", env=env,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr
        data = json.loads(deployed.stdout)
        assert data["currency"] == token == data["contracts"]["MarketToken"]
        ledger = Ledger.connect(node.url, record)
        assert ledger.deployment.currency == token
        assert not ledger.market_token.supports_permit()
        refused = run(
            "chain", "base-uri", "--rpc", node.url, "--deployment", str(record),
            "--url", "ftp://catalog/nft/", env=env,
        )  # fmt: skip
        assert refused.returncode == 1 and "http(s) URL" in refused.stderr
        done = run(
            "chain", "base-uri", "--rpc", node.url, "--deployment", str(record),
            "--url", "https://catalog.example/nft/", "--json", env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert ledger.data_nft.base_uri() == "https://catalog.example/nft/"
        assert key[2:] not in deployed.stdout + deployed.stderr + done.stdout + done.stderr
