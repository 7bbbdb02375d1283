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
from eth_account.signers.local import LocalAccount
from storage_helpers import DealNetwork, ThreadNode

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
    placement_share_lists,
    share_lists,
)
from datagora.storage.merkle import verify_inclusion
from datagora.storage.packs import PackStore
from datagora.storage.pipeline import EncodingParams, new_dataset_id
from helpers import OWNER, fund, h, publish

WRAP_OWNER = X25519PrivateKey.generate()


def register(ledger: Ledger, accounts: dict[str, LocalAccount]) -> None:
    """Register each storage node (URL -> account) in the NodeRegistry: deals need it."""
    from datagora.ledger import Role
    from datagora.node.registration import DevNode, register_dev_nodes

    register_dev_nodes(ledger, [DevNode(a, Role.STORAGE, u) for u, a in accounts.items()])


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
    client = StorageClient([n.url for n in nodes], signer=OWNER)
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


@pytest.mark.parametrize("paged", [False, True], ids=["format-3", "paged"])
def test_a_deal_on_shares_uploaded_to_real_nodes_is_proven_from_their_stores(
    nodes: list[ThreadNode], tmp_path: Path, embedded_ledger: Ledger, paged: bool
) -> None:
    ledger = embedded_ledger
    assert ledger.deals is not None
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(40_000))
    # Paged: 20 share addresses in pages of 4, 4 pages an index page (two levels);
    # the prover reads its paths through the pages on its node's disk.
    pages = {"leaves_per_page": 4, "fanout": 4} if paged else {}
    params = EncodingParams(new_dataset_id(), 1, chunk_size=8192, k=2, n=4, **pages)
    result = StorageClient([n.url for n in nodes], signer=OWNER).upload(
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
    assert verified.paged is paged
    lists = placement_share_lists(verified, result.placement)
    accounts = {n.url: dev_account(5 + i) for i, n in enumerate(nodes)}
    register(ledger, accounts)
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
            data = store.read(address)
            if data is not None and not data.startswith(b"DGMP"):  # a share, not a page
                read.append(address)
            return data

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
    result = StorageClient(urls, signer=OWNER).upload(
        src, params, DataKey.generate(), WRAP_OWNER.public_key()
    )
    dataset = publish(
        ledger,
        Pricing.NONE,
        manifest_hash=result.manifest_hash,
        merkle_root=result.root,
        metadata_hash=h("sdk"),
    ).dataset
    owner = Market(ledger, Endpoints(storage=urls), dev_identity(1))
    accounts = {url: dev_account(5 + i) for i, url in enumerate(urls)}
    register(ledger, accounts)
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


def test_an_open_deal_grants_its_owner_quota_on_its_nodes_only(
    tmp_path: Path, embedded_ledger: Ledger
) -> None:
    import httpx
    from storage_helpers import SigningAuth, grant

    from datagora.storage.deals import DealQuotas, deal_bytes
    from datagora.storage.node import default_policy

    ledger = embedded_ledger
    assert ledger.deals is not None
    accounts = [dev_account(5 + i) for i in range(3)]
    started = []
    for i, account in enumerate(accounts):
        policy = default_policy(tmp_path / f"node{i}")
        quotas = DealQuotas(ledger.deals, lambda a=account: [a.address], ttl=0.0)  # type: ignore[misc]
        policy.quotas.sources.append(quotas)
        started.append(ThreadNode(tmp_path / f"node{i}", policy=policy))
        started[-1].start()
    try:
        urls = [n.url for n in started]
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(30_000))
        params = EncodingParams(new_dataset_id(), 1, chunk_size=8192, k=2, n=3)
        result = StorageClient(urls, signer=OWNER).upload(
            src, params, DataKey.generate(), WRAP_OWNER.public_key()
        )
        dataset = publish(
            ledger,
            Pricing.NONE,
            manifest_hash=result.manifest_hash,
            merkle_root=result.root,
            metadata_hash=h("quota"),
        ).dataset
        # The operators take back their grants: only a deal can give quota now.
        for node in started:
            grant(node.data_dir, amount=0)
        blob = b"new version data" * 100
        digest = hashlib.sha256(blob).hexdigest()
        with httpx.Client(timeout=10, auth=SigningAuth(OWNER)) as client:
            for url in urls:
                refused = client.put(f"{url}/shares/{digest}", content=blob)
                assert refused.status_code == 403, refused.text
            from datagora.storage.manifest import verify_manifest

            verified = verify_manifest(result.manifest.to_bytes(), result.manifest_hash)
            lists = share_lists(verified, result.placement.locations)
            fund(ledger, OWNER.address)
            terms = DealTerms(10**15, 0, 0, 2, 40, 20, 4)
            ledger.market_token.approve(OWNER, ledger.deals.address, 10**15 * 2 * 2)
            chosen = [
                (accounts[i].address, lists[urls[i]].root, lists[urls[i]].count) for i in (0, 1)
            ]
            deal, _ = ledger.deals.open_deal(
                OWNER,
                dataset,
                ledger.data_nft.get_dataset(dataset).version,
                chosen,
                deal_layout(verified),
                terms,
            )
            size = deal_bytes(ledger.deals.deal(deal).layout)
            for url in urls[:2]:  # the deal's nodes take the owner's writes
                ok = client.put(f"{url}/shares/{digest}", content=blob)
                assert ok.status_code in (200, 201), ok.text
            other = client.put(f"{urls[2]}/shares/{digest}", content=blob)
            assert other.status_code == 403, other.text
        # Another account gets nothing from the owner's deal.
        with httpx.Client(timeout=10, auth=SigningAuth(dev_account(2))) as stranger:
            blob2 = b"someone else" * 10
            d2 = hashlib.sha256(blob2).hexdigest()
            assert stranger.put(f"{urls[0]}/shares/{d2}", content=blob2).status_code == 403
        # Beyond the deal's size (plus its margin) the owner is refused with 413.
        big = os.urandom(size + size // 8 + (1 << 20) + 1)
        with httpx.Client(timeout=30, auth=SigningAuth(OWNER)) as client:
            over = client.put(f"{urls[0]}/shares/{hashlib.sha256(big).hexdigest()}", content=big)
            assert over.status_code == 413, over.text
            # Once the deal is ended and over, the grant stops.
            ledger.deals.end_deal(OWNER, deal)
            info = ledger.deals.deal(deal)
            while ledger.chain.block_number < info.window_end(max(0, info.end_period - 1)):
                ledger.chain.advance_time(1)
            blob3 = b"after the deal" * 10
            late = client.put(
                f"{urls[0]}/shares/{hashlib.sha256(blob3).hexdigest()}", content=blob3
            )
            assert late.status_code == 403, late.text
    finally:
        for node in started:
            node.stop()


@pytest.mark.anvil
def test_nodes_join_and_prove_their_deals_by_themselves_on_anvil(
    nodes: list[ThreadNode], tmp_path: Path, _anvil_ledger: Ledger
) -> None:
    import time

    from datagora.storage.deals import DealWatcher
    from datagora.storage.manifest import verify_manifest

    ledger = _anvil_ledger
    assert ledger.deals is not None
    snapshot = ledger.chain.snapshot()
    watchers: list[DealWatcher] = []
    try:
        urls = [n.url for n in nodes[:2]]
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(20_000))
        params = EncodingParams(new_dataset_id(), 1, chunk_size=8192, k=1, n=2)
        result = StorageClient(urls, signer=OWNER).upload(
            src, params, DataKey.generate(), WRAP_OWNER.public_key()
        )
        dataset = publish(
            ledger,
            Pricing.NONE,
            manifest_hash=result.manifest_hash,
            merkle_root=result.root,
            metadata_hash=h("auto"),
        ).dataset
        verified = verify_manifest(result.manifest.to_bytes(), result.manifest_hash)
        lists = share_lists(verified, result.placement.locations)
        accounts = [dev_account(7 + i) for i in range(2)]
        from datagora.ledger import Role
        from datagora.node.registration import DevNode, register_dev_nodes

        register_dev_nodes(
            ledger, [DevNode(a, Role.STORAGE, u) for a, u in zip(accounts, urls, strict=True)]
        )
        for account in accounts:
            fund(ledger, account.address)
        fund(ledger, OWNER.address)
        price = 10**15
        terms = DealTerms(price, 10**16, 10**15, 2, 20, 10, 4)
        ledger.market_token.approve(OWNER, ledger.deals.address, price * 2 * 2)
        deal, _ = ledger.deals.open_deal(
            OWNER,
            dataset,
            ledger.data_nft.get_dataset(dataset).version,
            [(accounts[i].address, lists[u].root, lists[u].count) for i, u in enumerate(urls)],
            deal_layout(verified),
            terms,
        )
        # A node that does not accept deals does not join; one that does, does.
        idle = DealWatcher(
            ledger.deals,
            accounts[0],
            nodes[0].data_dir,
            lambda d: ledger.data_nft.get_dataset(d).manifest_hash,
        )
        assert idle.run_once() == [] and not ledger.deals.slot_of(deal, accounts[0].address).joined
        for account, node in zip(accounts, nodes[:2], strict=True):
            watchers.append(
                DealWatcher(
                    ledger.deals,
                    account,
                    node.data_dir,
                    lambda d: ledger.data_nft.get_dataset(d).manifest_hash,
                    accept=True,
                    every=0.1,
                ).start()
            )
        info = ledger.deals.deal(deal)
        deadline = time.monotonic() + 60
        # Nobody calls prove: the chain only moves on (evm_increaseTime + evm_mine).
        while any(ledger.deals.slot_of(deal, a.address).proven < 1 for a in accounts):
            assert time.monotonic() < deadline, [w.refused for w in watchers]
            if ledger.chain.block_number < info.window_end(0) - 2:
                ledger.chain.advance_time(1)
            time.sleep(0.05)
        for account in accounts:
            slot = ledger.deals.slot_of(deal, account.address)
            assert slot.joined and slot.missed == 0 and slot.earned >= price
        assert all(w.proofs and w.refused == {} for w in watchers)
    finally:
        for watcher in watchers:
            watcher.stop()
        ledger.chain.revert(snapshot)


def test_an_owner_repairs_away_from_slashed_and_leaving_deal_nodes(
    tmp_path: Path, deal_network: DealNetwork
) -> None:
    from datagora.market.deals import repair_deals, troubled_deals

    net, ledger, owner = deal_network, deal_network.ledger, deal_network.owner
    assert ledger.deals is not None
    stored = net.store(on=[0, 1, 2, 3, 4], size=60_000)
    assert stored.holders == sorted(net.urls[:5])
    holding, accounts = stored.holders, net.accounts
    price = 10**15
    terms = DealTerms(price, 10**16, 10**15, 4, 40, 20, 4)
    deal = net.open_deal(stored, terms)
    provers = {u: net.prover(u) for u in holding}
    assert troubled_deals(owner) == []
    info = ledger.deals.deal(deal)
    net.advance_to(info.seed_block(0) + 1)
    sleeper, leaver = holding[0], holding[1]
    for url, prover in provers.items():
        if url != sleeper:  # it sleeps through period 0
            assert [p for _, p, _ in prover.run_once([deal])] == [0]
    net.advance_to(info.window_end(0))
    (missed,) = troubled_deals(owner)
    assert missed.node == accounts[sleeper].address and "missed a period" in missed.reason
    ledger.registry.leave(accounts[leaver])
    troubles = {t.node: t.reason for t in troubled_deals(owner)}
    assert troubles.keys() == {accounts[sleeper].address, accounts[leaver].address}
    assert "leaving in the registry" in troubles[accounts[leaver].address]
    # Another owner's view has no trouble: the deal is not theirs.
    assert troubled_deals(owner, dev_account(2).address) == []

    (row,) = repair_deals(owner, replacement=terms)
    assert row["dataset"] == stored.dataset and row["deals"] == [deal]
    assert row["rebuilt"] > 0 and row["healthy"] and row["recorded_tx"]
    verified = owner.storage().fetch_manifest(stored.manifest_hash)
    placement = owner.storage().fetch_placement(verified)
    assert placement is not None
    now_at = {loc for locs in placement.locations.values() for loc in locs}
    assert sleeper not in now_at and leaver not in now_at
    new = row["replacement_deal"]
    assert new is not None and new != deal
    named = {s.node for s in ledger.deals.slots(new)}
    assert named and named.isdisjoint({accounts[sleeper].address, accounts[leaver].address})
    out = tmp_path / "back.bin"
    owner.storage().download(stored.manifest_hash, stored.key, out)
    assert out.read_bytes() == stored.payload
