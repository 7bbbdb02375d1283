"""The Python ledger client: compiler cache, deployment records, events, nonces, reverts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagora.errors import ConfigError
from datagora.ledger import Chain, Deployment, Ledger, Pricing, compiler, dev_account
from datagora.ledger.anvil import Anvil
from datagora.ledger.errors import ChainError, ContractRuleError, InsufficientFunds, NotController
from datagora.ports import free_port
from helpers import BUYER, ON_EVERY_NODE, OTHER, OWNER, fund, h, publish


def test_compiler_cache_is_keyed_by_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAGORA_CACHE", str(tmp_path))
    compiler.compile_contract.cache_clear()
    first = compiler.compile_contract("KeyValueStore")
    (cached,) = (tmp_path / "contracts").glob("KeyValueStore-*.json")
    assert bytes.fromhex(json.loads(cached.read_text())["bytecode"]) == first.bytecode
    # A corrupt cache entry is ignored and rewritten, never used.
    cached.write_text("{not json")
    compiler.compile_contract.cache_clear()
    assert compiler.compile_contract("KeyValueStore").bytecode == first.bytecode
    assert json.loads(cached.read_text())["abi"] == first.abi
    # Changing any source changes the key, so a stale artifact cannot be picked up.
    compiler._sources_digest.cache_clear()
    digest = compiler._sources_digest()
    extra = compiler.CONTRACTS_DIR / "ZzzProbe.vy"
    extra.write_text("# pragma version ~=0.4.3\n")
    try:
        compiler._sources_digest.cache_clear()
        assert compiler._sources_digest() != digest
    finally:
        extra.unlink()
        compiler._sources_digest.cache_clear()
        compiler.compile_contract.cache_clear()


def test_unknown_contract() -> None:
    with pytest.raises(ConfigError):
        compiler._compile("NoSuchContract")


def test_deployment_record_round_trip(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "net" / "deployment.json"
    ledger.deployment.save(path)
    loaded = Deployment.load(path)
    assert loaded == ledger.deployment
    assert loaded.chain_id == ledger.chain.chain_id
    assert loaded.start_block >= 1


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("nope", "not valid JSON"),
        ("{}", "unknown format"),
        (
            '{"format": 1, "chain_id": 1, "start_block": 0, "deployer": "x", "contracts": {}}',
            "missing",
        ),
    ],
)
def test_bad_deployment_records(text: str, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        Deployment.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        Deployment.load(tmp_path / "missing.json")


def test_connect_through_a_deployment_record(
    anvil: Anvil, _anvil_ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "deployment.json"
    _anvil_ledger.deployment.save(path)
    other_process_view = Ledger.connect(anvil.url, path)
    assert other_process_view.data_nft.address == _anvil_ledger.data_nft.address
    assert other_process_view.market_token.symbol() == "DGM"


def test_deployment_for_another_chain_is_refused(anvil: Anvil, _embedded_ledger: Ledger) -> None:
    with pytest.raises(ConfigError, match="chain"):
        Ledger.connect(anvil.url, _embedded_ledger.deployment)


def test_unreachable_chain_is_a_clear_error() -> None:
    with pytest.raises(ChainError, match="cannot reach"):
        Chain.rpc(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConfigError):
        Chain.rpc("ftp://example.org")


def test_several_transactions_in_flight(ledger: Ledger) -> None:
    fund(ledger, OWNER.address, 1000)
    token, chain = ledger.market_token, ledger.chain
    start = token.balance_of(BUYER.address)
    pending = [
        chain.send(OWNER, token.prepare("transfer", BUYER.address, i + 1), "transfer", gas=80_000)
        for i in range(20)
    ]
    receipts = chain.wait_all(pending)
    assert len({r["transactionHash"] for r in receipts}) == 20
    assert token.balance_of(BUYER.address) == start + sum(range(1, 21))


@ON_EVERY_NODE
def test_a_mined_revert_names_its_rule(ledger: Ledger) -> None:
    # With gas given, nothing is estimated, so the failing transaction is mined;
    # its receipt fails and the reason is recovered by replaying it.
    pub = publish(ledger, Pricing.NONE)
    tx = ledger.data_nft.prepare("update", pub.dataset, h("m"), "", h("a"), h("b"))
    pending = ledger.chain.send(OTHER, tx, "DataNFT.update", gas=200_000)
    with pytest.raises(NotController, match="not controller"):
        pending.receipt()
    # The nonce manager stays in step after a failure.
    ledger.data_nft.update(OWNER, pub.dataset, h("m2"), "")


@ON_EVERY_NODE
def test_revert_messages_say_what_to_do(ledger: Ledger) -> None:
    pub = publish(ledger)
    with pytest.raises(InsufficientFunds) as info:
        ledger.exchange.buy_and_order(BUYER, pub.dataset, ledger.datatoken(pub.dataset))
    message = str(info.value)
    assert message.startswith("FixedRateExchange.buy_and_order refused")
    assert isinstance(info.value, ContractRuleError) and info.value.reason


def test_events_paginate_and_learn_datatokens(ledger: Ledger) -> None:
    start = ledger.chain.block_number + 1
    pubs = [publish(ledger, Pricing.NONE) for _ in range(3)]
    for p in pubs:
        ledger.datatoken(p.dataset).mint(OWNER, BUYER.address, 1)
    events = list(ledger.events(start))
    from datagora.ledger.events import EventReader

    paged = list(EventReader(ledger.chain, ledger.deployment.contracts).read(start, page=1))
    assert [(e.tx_hash, e.log_index) for e in paged] == [(e.tx_hash, e.log_index) for e in events]
    created = [e for e in events if e.name == "DatasetCreated"]
    assert [e["dataset"] for e in created] == [p.dataset for p in pubs]
    mints = [e for e in events if e.contract == "Datatoken" and e.name == "Transfer"]
    assert {e.address for e in mints} == {p.datatoken for p in pubs}
    order = [(e.block_number, e.log_index) for e in events]
    assert order == sorted(order)


def test_foreign_clone_events_are_ignored(ledger: Ledger) -> None:
    # Someone clones the datatoken template outside the Factory (EIP-1167 init code
    # around the template's address). The clone cannot be initialised, and its
    # events are never read as a datatoken's.
    template = ledger.deployment.address("Datatoken")
    init = bytes.fromhex(
        "3d602d80600a3d3981f3363d3d373d3d3d363d73"
        + template[2:].lower()
        + "5af43d82803e903d91602b57fd5bf3"
    )
    receipt = ledger.chain.transact(OTHER, {"data": "0x" + init.hex()}, "clone")
    clone = receipt["contractAddress"]
    assert ledger.chain.w3.eth.get_code(clone)
    token = ledger.datatoken(publish(ledger, Pricing.NONE).dataset)
    approve = token.prepare("approve", BUYER.address, 5)
    mined = ledger.chain.transact(OTHER, {"to": clone, "data": approve["data"]}, "approve")
    assert mined["logs"], "the clone did emit an Approval"
    seen = {e.address for e in ledger.events(receipt["blockNumber"])}
    assert clone not in seen
    assert token.address in seen


def test_threads_share_the_embedded_chain(embedded_ledger: Ledger) -> None:
    # In-process nodes (the demo) send from several threads, even from one account.
    import threading

    token = embedded_ledger.market_token
    start = [token.balance_of(a.address) for a in (BUYER, OTHER)]
    errors: list[BaseException] = []

    def work(to: str) -> None:
        try:
            for _ in range(8):
                token.mint(dev_account(0), to, 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a.address,)) for a in (BUYER, OTHER, BUYER)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [token.balance_of(a.address) for a in (BUYER, OTHER)] == [start[0] + 16, start[1] + 8]


def test_another_process_using_the_account_does_not_break_sends(
    anvil: Anvil, _anvil_ledger: Ledger
) -> None:
    """Two clients (two processes in real life) send from one account: the one whose
    cached nonce went stale re-reads it and sends again instead of failing."""
    first = _anvil_ledger
    snapshot = first.chain.snapshot()
    try:
        second = Ledger.connect(anvil.url, first.deployment)
        first.market_token.mint(dev_account(0), OTHER.address, 1)  # caches the nonce
        second.market_token.mint(dev_account(0), OTHER.address, 2)  # the other client
        before = first.market_token.balance_of(OTHER.address)
        first.market_token.mint(dev_account(0), OTHER.address, 4)  # stale: retried
        assert first.market_token.balance_of(OTHER.address) == before + 4
    finally:
        first.chain.revert(snapshot)
