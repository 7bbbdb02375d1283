"""Proxies from the NodeRegistry, and a dataset's proxies chosen on chain, on a real
network (anvil, three proxy processes, the owner's agent).

- The agent and a consumer use a registered proxy only if it serves the account and
  Umbral key it registered: a proxy whose registered key differs is not used.
- The owner chooses two of the three proxies (2-of-2) on chain: the agent delegates to
  those two only, and the consumer opens the key from them with that threshold.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sharing_helpers import PASSWORD, Network, wait_until
from typer.testing import CliRunner

from datagora.cli.app import app
from datagora.crypto.keys import Identity, PublicIdentity, export_public, import_account
from datagora.crypto.pre import dataset_scope, wrap_key
from datagora.ledger import Pricing, Role
from datagora.ledger.errors import InvalidArgument, InvalidState, NotController
from datagora.market import Endpoints, Marketplace
from datagora.node.network import Network as NetworkFile
from datagora.ports import free_port
from datagora.sharing import (
    SharingError,
    delegate,
    fetch_data_key,
    fetch_data_key_report,
    report_fault,
)
from datagora.sharing.answers import answer_digest, recover_answer, sign_answer
from datagora.sharing.directory import RegistryProxyDirectory, dataset_proxies
from datagora.sharing.errors import ProxyUnavailable
from datagora.sharing.wire import Domain, ReencryptBody
from datagora.testing.sharing import agent_delegations
from datagora.testing.storage import LocalNodes
from helpers import fund, publish

pytestmark = pytest.mark.anvil

STAKE = 10 * 10**18
_META = {
    "title": "Evidence cohort",
    "license": "CC-BY-4.0",
    "creator": "tests",
    "services": [{"id": 0, "type": "download", "price": str(10**18)}],
}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    network = Network(tmp_path_factory.mktemp("registry-proxies"))
    try:
        network.start()
        for ident, service in zip(network.proxy_ids, network.proxies, strict=True):
            fund(network.ledger, ident.address)
            network.ledger.registry.register(
                ident.account, Role.PROXY, service.url, STAKE, ident.umbral_public_key
            )
        yield network
    finally:
        network.stop()


def _dataset(net: Network) -> tuple[int, int, bytes, object]:
    published = publish(net.ledger)
    version = net.ledger.data_nft.get_dataset(published.dataset).version
    scope = dataset_scope(published.dataset, version)
    key = os.urandom(32)
    wrapped = wrap_key(key, net.owner.delegating_public_key(scope), scope=scope)
    return published.dataset, version, key, wrapped


def _consumer(net: Network) -> Identity:
    ident = Identity.generate()
    net.ledger.chain.fund(ident.address, 10**19)
    fund(net.ledger, ident.address)
    return ident


def test_a_proxy_whose_registered_key_differs_is_not_used(net: Network) -> None:
    # No fallback: registered proxies only; ttl 0: the registry is read at every lookup.
    directory = RegistryProxyDirectory(net.ledger, ttl=0)
    assert directory.lookup(net.proxy_urls[2]).address == net.proxy_ids[2].address
    first = directory.lookup(net.proxy_urls[0])
    assert first.address == net.proxy_ids[0].address
    assert first.umbral_public_key == net.proxy_ids[0].umbral_public_key
    with pytest.raises(ProxyUnavailable, match="no active registered proxy"):
        directory.lookup("http://127.0.0.1:9")
    # Proxy 2's record now names another key than the one it serves.
    liar = net.proxy_ids[2]
    other_key = Identity.generate().umbral_public_key
    net.ledger.registry.update(liar.account, net.proxy_urls[2], other_key)
    try:
        fresh = directory  # the same directory sees the change
        with pytest.raises(ProxyUnavailable, match="not used"):
            fresh.lookup(net.proxy_urls[2])
        dataset, version, _, _ = _dataset(net)
        who = _consumer(net)
        result = delegate(
            net.ledger, net.owner, dataset, version, who.address,
            who.consumer_key(net.ledger.chain.chain_id).public_key, net.proxy_urls, 2,
            directory=fresh,
        )  # fmt: skip
        assert sorted(result.accepted) == sorted(net.proxy_urls[:2])
        assert "not used" in result.failed[net.proxy_urls[2]]
    finally:
        net.ledger.registry.update(liar.account, net.proxy_urls[2], liar.umbral_public_key)
    assert directory.lookup(net.proxy_urls[2]).umbral_public_key == liar.umbral_public_key


def test_the_owner_chooses_the_datasets_proxies_on_chain(net: Network) -> None:
    ledger = net.ledger
    assert ledger.proxy_sets is not None
    dataset, version, key, wrapped = _dataset(net)
    assert dataset_proxies(ledger, dataset) is None  # none chosen: the agent's own
    chosen = [net.proxy_ids[0].address, net.proxy_ids[1].address]
    ledger.proxy_sets.set_proxies(net.owner.account, dataset, chosen, 2)
    assert dataset_proxies(ledger, dataset) == (net.proxy_urls[:2], 2)
    who = _consumer(net)
    ckey = who.consumer_key(ledger.chain.chain_id).public_key
    ledger.exchange.buy_and_order(
        who.account, dataset, ledger.datatoken(dataset), consumer_key=ckey
    )
    wait_until(lambda: net.delegated(dataset, who.address), "the agent's delegation")
    rows = agent_delegations(net.agent.url)
    (row,) = [r for r in rows if r["dataset"] == dataset and r["consumer"] == who.address]
    assert sorted(row["accepted"]) == sorted(net.proxy_urls[:2])  # not proxy 2
    owner_public = PublicIdentity.from_json(export_public(net.owner))
    proxies, threshold = dataset_proxies(ledger, dataset) or ([], 0)
    opened = fetch_data_key(
        ledger, who, owner_public, wrapped, dataset, version, proxies, threshold, timeout=30
    )  # type: ignore[arg-type]
    assert opened == key
    # Proxy 2 holds no fragment for this consumer: with it, one chosen proxy is not enough.
    with pytest.raises(SharingError):
        fetch_data_key(
            ledger, who, owner_public, wrapped, dataset, version,
            [net.proxy_urls[0], net.proxy_urls[2]], 2, timeout=30,
        )  # type: ignore[arg-type]  # fmt: skip


def test_datagora_proxies_set_and_show(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI: `proxies set` by the controller (JSON shape of docs/cli.md), `proxies show`
    for anyone; threshold 1 of several and a stranger are refused in one line."""
    file = tmp_path / "network.json"
    NetworkFile(
        net.anvil.url, net.ledger.deployment, storage=[], proxies=net.proxy_urls, threshold=2
    ).save(file)
    for key, value in {
        "DATAGORA_NETWORK": str(file),
        "DATAGORA_KEYS_DIR": str(net.keys),
        "DATAGORA_PASSWORD": PASSWORD,
        "DATAGORA_ACCOUNT": "",
    }.items():
        monkeypatch.setenv(key, value)
    dataset, _, _, _ = _dataset(net)
    a, b, c = (p.address for p in net.proxy_ids)
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, list(args))

    def refused(result: Any) -> str:
        # In process, the refusal is the exception `datagora` prints as one line.
        assert result.exit_code == 1 and result.exception is not None
        return str(result.exception)

    result = cli("proxies", "set", str(dataset), "--proxy", a, "--proxy", b, "--proxy", c,
                 "--threshold", "1", "--account", net.owner.address)  # fmt: skip
    assert "threshold 1" in refused(result)
    stranger = net.agent_id.address  # in the keystore, not the controller
    result = cli("proxies", "set", str(dataset), "--proxy", a, "--proxy", b,
                 "--account", stranger)  # fmt: skip
    assert "controller" in refused(result)
    result = cli("proxies", "set", str(dataset), "--proxy", a, "--proxy", b, "--proxy", c,
                 "--threshold", "2", "--account", net.owner.address, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["threshold"] == 2 and shown["chosen"] and shown["tx"].startswith("0x")
    assert [p["address"] for p in shown["proxies"]] == [a, b, c]
    assert [p["endpoint"] for p in shown["proxies"]] == net.proxy_urls
    result = cli("proxies", "show", str(dataset), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {k: v for k, v in shown.items() if k not in
                                          ("tx", "block", "gas")}  # fmt: skip
    result = cli("proxies", "show", str(dataset))
    assert "2 of 3" in result.output


# -------------------------------------------------- signed answers and ProxyFaults (last:
# it slashes proxy 0)


def _signing_liar(net: Network) -> FastAPI:
    """Proxy 0 turned liar: relays to its honest self, flips a bit of each fragment and
    signs the tampered fragment with its own (registered) key, as a lying proxy would."""
    app = FastAPI()
    upstream, key = net.proxy_urls[0], bytes(net.proxy_ids[0].account.key)
    faults = net.ledger.deployment.contracts["ProxyFaults"]

    @app.post("/reencrypt")
    async def reencrypt(request: Request) -> JSONResponse:
        raw_body = await request.body()
        body = ReencryptBody.from_json(json.loads(raw_body))
        req = body.signed.request
        async with httpx.AsyncClient(trust_env=False) as client:
            honest = await client.post(f"{upstream}/reencrypt", content=raw_body)
        payload = honest.json()
        for answer in payload.get("cfrags", []):
            raw = bytearray(bytes.fromhex(answer["cfrag"]))
            raw[len(raw) // 2] ^= 0x01
            answer["cfrag"] = bytes(raw).hex()
            digest = answer_digest(
                net.ledger.chain.chain_id, faults, req.dataset, req.version,
                req.signer_address, body.signed.digest(), bytes(raw),
            )  # fmt: skip
            answer["signature"] = sign_answer(key, digest).hex()
        return JSONResponse(payload, status_code=honest.status_code)

    return app


def test_a_proxy_signing_a_bad_fragment_is_reported_and_slashed(net: Network) -> None:
    ledger = net.ledger
    assert ledger.proxy_faults is not None
    dataset, version, key, wrapped = _dataset(net)
    who = _consumer(net)
    ckey = who.consumer_key(ledger.chain.chain_id).public_key
    token = ledger.datatoken(dataset)
    ledger.exchange.buy_and_order(who.account, dataset, token, consumer_key=ckey)
    wait_until(lambda: net.delegated(dataset, who.address), "the agent's delegation")
    owner_public = PublicIdentity.from_json(export_public(net.owner))
    # An honest proxy signs every fragment it returns: the signature names it.
    body = ReencryptBody.build(who, Domain.of(ledger), dataset, version, wrapped.capsule)
    answer = httpx.post(
        f"{net.proxy_urls[1]}/reencrypt", json=body.to_json(), timeout=30, trust_env=False
    ).json()["cfrags"][0]
    digest = answer_digest(
        ledger.chain.chain_id, ledger.proxy_faults.address, dataset, version, who.address,
        body.signed.digest(), bytes.fromhex(answer["cfrag"]),
    )  # fmt: skip
    assert recover_answer(digest, bytes.fromhex(answer["signature"])) == net.proxy_ids[1].address

    liar_address = net.proxy_ids[0].address
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_signing_liar(net), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the liar")
    liar = f"http://127.0.0.1:{port}"
    try:
        report = fetch_data_key_report(
            ledger, who, owner_public, wrapped, dataset, version,
            [liar, *net.proxy_urls[1:]], 2, wait_all=True, timeout=30,
        )  # fmt: skip
    finally:
        server.should_exit = True
        thread.join()
    assert report.data_key == key and report.misbehaved == [liar]
    evidence = report.evidence[liar]
    assert evidence.proxy == liar_address  # recovered from its own signature

    # Only the consumer who asked can report it (the digest names the consumer).
    stranger = _consumer(net)
    with pytest.raises(InvalidArgument, match="registered proxy"):
        ledger.proxy_faults.report(
            stranger.account, dataset, version, evidence.request_digest, evidence.cfrag,
            evidence.signature,
        )  # fmt: skip
    # An honest answer's evidence altered (another fragment under its signature): refused.
    with pytest.raises(InvalidArgument):
        ledger.proxy_faults.report(
            who.account, dataset, version, body.signed.digest(), evidence.cfrag,
            bytes.fromhex(answer["signature"]),
        )  # fmt: skip
    report_id = report_fault(ledger, who, evidence)
    assert ledger.proxy_faults.report_of(report_id) == (liar_address, who.address, dataset, 1)
    with pytest.raises(InvalidState, match="already reported"):
        report_fault(ledger, who, evidence)
    with pytest.raises(NotController):  # the owner arbitrates, nobody else
        ledger.proxy_faults.confirm(who.account, report_id, 10**18)
    stake = ledger.registry.stake_of(liar_address)
    balance = ledger.market_token.balance_of(who.address)
    slashed, _ = ledger.proxy_faults.confirm(net.owner.account, report_id, 10**18)
    assert slashed == 10**18
    assert ledger.registry.stake_of(liar_address) == stake - 10**18
    assert ledger.market_token.balance_of(who.address) == balance + 10**18
    assert ledger.proxy_faults.report_of(report_id)[3] == 2
    with pytest.raises(InvalidState, match="no open report"):
        ledger.proxy_faults.confirm(net.owner.account, report_id, 10**18)


def test_the_cli_files_a_lying_proxys_evidence_and_the_owner_confirms(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end with a lying proxy on loopback: `datagora download` fails (the liar's
    fragment does not verify and only one honest proxy is listed) and keeps the liar's
    signed answer; `proxies report` files it as the consumer; `proxies faults` lists it;
    the owner confirms and the liar's stake goes to the consumer. A stranger cannot
    file it, and altered evidence is refused before anything is sent."""
    ledger = net.ledger
    assert ledger.proxy_faults is not None
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_signing_liar(net), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the liar")
    liar = f"http://127.0.0.1:{port}"
    evidence_dir = tmp_path / "evidence"
    try:
        with LocalNodes(6, tmp_path / "storage") as nodes:
            proxies = [liar, net.proxy_urls[1]]  # the liar and one honest proxy, 2-of-2
            endpoints = Endpoints(nodes.urls, proxies, 2)
            source = tmp_path / "data.csv"
            source.write_bytes(b"id,value\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(500)))
            dataset = (
                Marketplace(ledger, endpoints, net.owner)
                .publish(source, _META, pricing=Pricing.FIXED, price=10**18)
                .dataset
            )
            who = _consumer(net)
            import_account(net.keys, who.account.key.hex(), PASSWORD, scrypt_n=2**4)
            Marketplace(ledger, endpoints, who).buy_and_order(dataset)
            wait_until(lambda: net.delegated(dataset, who.address), "the agent's delegation")
            file = tmp_path / "network.json"
            NetworkFile(
                net.anvil.url, ledger.deployment, storage=nodes.urls, proxies=proxies, threshold=2
            ).save(file)
            for key, value in {
                "DATAGORA_NETWORK": str(file),
                "DATAGORA_KEYS_DIR": str(net.keys),
                "DATAGORA_PASSWORD": PASSWORD,
                "DATAGORA_ACCOUNT": "",
                "DATAGORA_EVIDENCE_DIR": str(evidence_dir),
            }.items():
                monkeypatch.setenv(key, value)
            runner = CliRunner()
            out = tmp_path / "out.csv"
            result = runner.invoke(
                app, ["download", str(dataset), "-o", str(out), "--account", who.address]
            )
    finally:
        server.should_exit = True
        thread.join()
    assert result.exit_code == 1 and not out.exists()
    (kept,) = evidence_dir.iterdir()
    assert str(kept) in str(result.exception) and liar in str(result.exception)

    def cli(*args: str) -> Any:
        return runner.invoke(app, list(args))

    liar_address = net.proxy_ids[0].address
    # Altered evidence (another fragment under the liar's signature) is refused locally.
    altered = json.loads(kept.read_text())
    altered["cfrag"] = altered["cfrag"][:-2] + ("00" if altered["cfrag"][-2:] != "00" else "01")
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(altered))
    result = cli("proxies", "report", str(forged), "--account", who.address)
    assert result.exit_code == 1 and "proves nothing" in str(result.exception)
    # Only the consumer who asked can file it.
    result = cli("proxies", "report", str(kept), "--account", net.owner.address)
    assert result.exit_code == 1 and "only that consumer" in str(result.exception)
    assert cli("proxies", "faults", "--dataset", str(dataset), "--json").stdout.strip() == "[]"

    result = cli("proxies", "report", str(kept), "--account", who.address, "--json")
    assert result.exit_code == 0, result.output
    filed = json.loads(result.stdout)
    assert filed["proxy"] == liar_address and filed["dataset"] == dataset
    listed = json.loads(cli("proxies", "faults", "--dataset", str(dataset), "--json").stdout)
    assert listed == [
        {"report": filed["report"], "proxy": liar_address, "dataset": dataset,
         "version": filed["version"], "reporter": who.address, "state": "open"}
    ]  # fmt: skip
    result = cli("proxies", "confirm", str(filed["report"]), "--amount", "1",
                 "--account", who.address)  # fmt: skip
    assert result.exit_code == 1 and "controller" in str(result.exception)
    stake = ledger.registry.stake_of(liar_address)
    balance = ledger.market_token.balance_of(who.address)
    result = cli("proxies", "confirm", str(filed["report"]), "--amount", "1",
                 "--account", net.owner.address, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["slashed"] == str(10**18)
    assert ledger.registry.stake_of(liar_address) == stake - 10**18
    assert ledger.market_token.balance_of(who.address) == balance + 10**18
    listed = json.loads(cli("proxies", "faults", "--proxy", liar_address, "--json").stdout)
    assert [r["state"] for r in listed if r["report"] == filed["report"]] == ["confirmed"]
    assert "confirmed" in cli("proxies", "faults", "--dataset", str(dataset)).output
