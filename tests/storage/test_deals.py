"""Block-root share addresses, the format-2 manifests that still read, the
detection arithmetic (and a simulation of a node that silently lost blocks), and
a deal proven end to end from shares uploaded to real storage nodes."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from storage_helpers import ThreadNode

from datagora.crypto.aead import DataKey
from datagora.ledger import Ledger, Pricing, dev_account
from datagora.ledger.deals import DealTerms, PeriodState
from datagora.storage.blocks import (
    BLOCK_SIZE,
    AddressHasher,
    block_count,
    block_proof,
    block_root,
    content_address,
)
from datagora.storage.client import StorageClient
from datagora.storage.deals import (
    DealProver,
    challenge_indexes,
    deal_layout,
    detection_probability,
    periods_to_detect,
    share_lists,
)
from datagora.storage.merkle import verify_inclusion
from datagora.storage.packs import PackStore
from datagora.storage.pipeline import EncodingParams, new_dataset_id
from helpers import OWNER, fund, h, publish

WRAP_OWNER = X25519PrivateKey.generate()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[ThreadNode]]:
    started = [ThreadNode(tmp_path / f"node{i}") for i in range(4)]
    for node in started:
        node.start()
    yield started
    for node in started:
        node.stop()


@pytest.mark.parametrize("size", [58, 1023, 1024, 1025, 3 * 1024, 10_000])
def test_block_roots_stream_and_prove(size: int) -> None:
    data = b"DGS2" + os.urandom(size - 4)
    root = block_root(data)
    assert content_address(data) == root != hashlib.sha256(data).digest()
    rng = random.Random(size)
    for _ in range(5):  # any split of the stream gives the same address
        hasher = AddressHasher()
        at = 0
        while at < len(data):
            step = rng.randint(1, 3000)
            hasher.update(memoryview(data)[at : at + step])
            at += step
        assert hasher.digest() == root
    for index in range(block_count(size)):
        block, proof, top = block_proof(data, index)
        assert top == root and block == data[index * BLOCK_SIZE : (index + 1) * BLOCK_SIZE]
        assert verify_inclusion(block, proof, root)
    # Not a v2 share: the plain SHA-256, streamed or not.
    other = b"DGS1" + data[4:]
    hasher = AddressHasher()
    hasher.update(other[:2])
    hasher.update(other[2:])
    assert hasher.digest() == content_address(other) == hashlib.sha256(other).digest()


def test_format_2_manifests_still_upload_read_and_download(
    nodes: list[ThreadNode], tmp_path: Path
) -> None:
    client = StorageClient([n.url for n in nodes])
    results = {}
    for share_format in (1, 2):
        data = os.urandom(5000)
        src = tmp_path / f"in{share_format}.bin"
        src.write_bytes(data)
        params = EncodingParams(
            new_dataset_id(), 1, chunk_size=2048, k=2, n=4, share_format=share_format
        )
        key = DataKey.generate()
        result = client.upload(src, params, key, WRAP_OWNER.public_key())
        results[share_format] = result
        dst = tmp_path / f"out{share_format}.bin"
        client.download(result.manifest_hash, key, dst)
        assert dst.read_bytes() == data
    old, new = results[1].manifest, results[2].manifest
    assert (old.format_version, new.format_version) == (2, 3)
    assert b'"share_format":"datagora.share.v1"' in old.to_bytes()
    assert b'"block_size":1024' in new.to_bytes() and b"block_size" not in old.to_bytes()
    # Old shares are named by SHA-256, new ones by block root, on the same nodes.
    store = PackStore(nodes[0].data_dir)  # a second reader of the node's files
    try:
        for manifest, magic in ((old, b"DGS1"), (new, b"DGS2")):
            for address in manifest.share_hashes():
                data = store.read(address)
                if data is not None:
                    assert data[:4] == magic and content_address(data) == address
    finally:
        store.close()
    with pytest.raises(Exception, match="format 3"):
        from datagora.storage.manifest import verify_manifest

        deal_layout(verify_manifest(old.to_bytes(), old.digest()))


def test_detection_probability_matches_the_anchors() -> None:
    # Filecoin PDP: 5 challenges a day, 1 % lost, 30 days.
    assert round(detection_probability(0.01, 5, 30), 3) == 0.779
    assert detection_probability(0.01, 16, 30) > 0.99
    assert periods_to_detect(0.01, 16, 0.99) == 29
    assert detection_probability(0.0, 16, 30) == 0.0


@pytest.mark.parametrize(("lost", "challenges", "periods"), [(0.05, 4, 5), (0.01, 16, 6)])
def test_a_node_that_silently_dropped_blocks_is_caught_as_predicted(
    lost: float, challenges: int, periods: int
) -> None:
    # 60 shares of 20 blocks; the node silently lost `lost` of the 1200 blocks.
    rng = random.Random(16)
    shares, blocks = 60, 20
    everything = [(s, b) for s in range(shares) for b in range(blocks)]
    dropped = set(rng.sample(everything, round(lost * len(everything))))
    node = dev_account(5).address
    trials, caught = 600, 0
    for trial in range(trials):
        for period in range(periods):
            seed = rng.randbytes(32)
            named = challenge_indexes(seed, trial, node, period, challenges, shares)
            if any((entry, selector % blocks) in dropped for entry, selector in named):
                caught += 1
                break
    predicted = detection_probability(lost, challenges, periods)
    sigma = (predicted * (1 - predicted) / trials) ** 0.5
    assert abs(caught / trials - predicted) < 4 * sigma + 0.01, (caught / trials, predicted)


def test_a_deal_on_shares_uploaded_to_real_nodes_is_proven_from_their_stores(
    nodes: list[ThreadNode], tmp_path: Path, embedded_ledger: Ledger
) -> None:
    ledger = embedded_ledger
    assert ledger.deals is not None
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(40_000))
    params = EncodingParams(new_dataset_id(), 1, chunk_size=8192, k=2, n=4)
    result = StorageClient([n.url for n in nodes]).upload(
        src, params, DataKey.generate(), WRAP_OWNER.public_key()
    )
    dataset = publish(
        ledger,
        Pricing.NONE,
        manifest_hash=result.manifest_hash,
        merkle_root=result.root,
        metadata_hash=h("real"),
    ).dataset
    from datagora.storage.manifest import verify_manifest

    verified = verify_manifest(result.manifest.to_bytes(), result.manifest_hash)
    lists = share_lists(verified, result.placement.locations)
    accounts = {n.url: dev_account(5 + i) for i, n in enumerate(nodes)}
    for account in accounts.values():
        fund(ledger, account.address)
    fund(ledger, OWNER.address)
    terms = DealTerms(10**15, 10**16, 10**15, 2, 40, 20, 16)
    ledger.market_token.approve(OWNER, ledger.deals.address, 10**15 * 2 * len(nodes))
    deal, _ = ledger.deals.open_deal(
        OWNER,
        dataset,
        ledger.data_nft.get_dataset(dataset).version,
        [(accounts[url].address, lst.root, lst.count) for url, lst in lists.items()],
        deal_layout(verified),
        terms,
    )
    for node in nodes:
        node.stop()  # the prover reads the node's own pack store
    read: list[bytes] = []
    for node in nodes:
        store = PackStore(node.data_dir)

        def reader(address: bytes, store: PackStore = store) -> bytes | None:
            if store.size(address) is None:
                return None
            read.append(address)
            return store.read(address)

        prover = DealProver(
            ledger.deals,
            accounts[node.url],
            reader,
            lambda _i: verified,
            holds=lambda address, store=store: store.size(address) is not None,  # type: ignore[misc]
        )
        prover.join(deal)
        info = ledger.deals.deal(deal)
        while ledger.chain.block_number <= info.seed_block(0):
            ledger.chain.advance_time(1)
        assert prover.due([deal]) == [(deal, 0)]
        read.clear()
        answers = prover.answers(deal, 0)
        # Only the challenged shares were read (at most one per challenge).
        assert len(read) <= terms.challenges
        gas = ledger.deals.prove(accounts[node.url], deal, 0, answers).gas_used
        assert gas < 1_500_000 and prover.last_answer_ms < 2000
        assert ledger.deals.state_of(deal, accounts[node.url].address, 0) is PeriodState.PROVEN
        assert prover.due([deal]) == []
        store.close()


def test_an_owner_and_nodes_use_deals_through_the_sdk(
    nodes: list[ThreadNode], tmp_path: Path, embedded_ledger: Ledger
) -> None:
    from datagora.market import Endpoints
    from datagora.market.deals import node_prover
    from datagora.market.errors import DealError
    from datagora.node.connect import dev_identity
    from datagora.sdk import Market

    ledger = embedded_ledger
    urls = [n.url for n in nodes]
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(30_000))
    params = EncodingParams(new_dataset_id(), 1, chunk_size=8192, k=2, n=4)
    result = StorageClient(urls).upload(src, params, DataKey.generate(), WRAP_OWNER.public_key())
    dataset = publish(
        ledger,
        Pricing.NONE,
        manifest_hash=result.manifest_hash,
        merkle_root=result.root,
        metadata_hash=h("sdk"),
    ).dataset
    owner = Market(ledger, Endpoints(storage=urls), dev_identity(1))
    accounts = {url: dev_account(5 + i) for i, url in enumerate(urls)}
    for account in accounts.values():
        fund(ledger, account.address)
    fund(ledger, OWNER.address)
    price = 10**15
    terms = DealTerms(price, 10**16, 10**15, 3, 40, 20, 8)
    with pytest.raises(DealError, match="holds no share"):
        owner.open_storage_deal(dataset, {"http://127.0.0.1:1": accounts[urls[0]].address}, terms)
    deal = owner.open_storage_deal(dataset, {url: a.address for url, a in accounts.items()}, terms)
    for node in nodes:
        node.stop()
    provers = [node_prover(owner, n.data_dir, accounts[n.url]) for n in nodes]
    for prover in provers:
        prover.join(deal)
    info = ledger.deals.deal(deal)  # type: ignore[union-attr]
    while ledger.chain.block_number <= info.seed_block(0):
        ledger.chain.advance_time(1)
    for prover in provers[:3]:  # the fourth node sleeps through period 0
        assert [(d, p) for d, p, _ in prover.run_once([deal])] == [(deal, 0)]
    (summary,) = owner.storage_deals(owner=OWNER.address)
    assert summary["deal"] == deal and summary["paid"] == str(3 * price)
    assert summary["escrowed"] == str(3 * 4 * price) and summary["owed"] == str(9 * price)
    earned = owner.node_earnings(accounts[urls[0]].address)
    assert [(e["deal"], e["proven"], e["earned"]) for e in earned] == [(deal, 1, str(price))]
    owner.end_storage_deal(deal)  # during period 0: periods 1 and 2 refunded
    (summary,) = owner.storage_deals()
    assert summary["end_period"] == 1 and summary["owed"] == str(price)


def test_the_cli_prints_the_detection_odds() -> None:
    import json

    from typer.testing import CliRunner

    from datagora.cli.app import app

    runner = CliRunner()
    result = runner.invoke(app, ["storage", "deal", "odds", "--challenges", "5", "--json"])
    assert result.exit_code == 0, result.output
    odds = json.loads(result.stdout)
    assert round(odds["probability"], 3) == 0.779 and odds["periods_for_99pct"] == 92
    bad = runner.invoke(app, ["storage", "deal", "odds", "--lost", "2"])
    assert bad.exit_code == 1 and "strictly between 0 and 1" in str(bad.exception)
