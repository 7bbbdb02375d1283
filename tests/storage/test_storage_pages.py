"""Paged manifests (format 4, issue 16 part 5): a large dataset's share list is a
hash tree of manifest pages, so no document grows with the dataset.

Pages are made small here (a few share addresses each) so that a dataset of a
few hundred KiB needs two levels of pages; the 1 TiB figures are computed from
the real defaults without uploading anything. The liars: a node serving a
tampered page, and a page from another position.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from storage_helpers import WRITER, SigningAuth, ThreadNode, encode_bytes

from datagora.crypto.aead import DataKey
from datagora.storage.client import StorageClient
from datagora.storage.errors import DatasetTooLarge, DownloadError, IntegrityError
from datagora.storage.limits import (
    MAX_MANIFEST_BYTES,
    PLACEMENT_LEAVES,
    check_dataset_size,
    max_dataset_bytes,
    tree_sizes,
)
from datagora.storage.manifest import ChunkAssembler, verify_manifest
from datagora.storage.merkle import MerkleProof, MerkleTree, verify_inclusion
from datagora.storage.packs import PackStore, share_location, stored_names
from datagora.storage.pages import (
    DEFAULT_FANOUT,
    DEFAULT_LEAVES_PER_PAGE,
    PageRef,
    PageTree,
    TreeWriter,
    VerifiedPage,
    max_leaves,
    verify_page,
    walk_leaf_pages_sync,
)
from datagora.storage.pipeline import EncodingParams, new_dataset_id
from datagora.storage.repair import Repairer
from datagora.storage.retention import Retention

OWNER = X25519PrivateKey.generate()
CHUNK, K, N = 1024, 2, 3
# 4 addresses a leaf page, 4 pages an index page: 64 leaves = 21 chunks at most.
SMALL = {"leaves_per_page": 4, "fanout": 4}


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[ThreadNode]]:
    running = [ThreadNode(tmp_path / f"node{i}", cap=1 << 20) for i in range(3)]
    for node in running:
        node.start()
    yield running
    for node in running:
        node.stop()


def _params(**overrides: int) -> EncodingParams:
    fields = {"chunk_size": CHUNK, "k": K, "n": N} | SMALL | overrides
    return EncodingParams(new_dataset_id(), 1, **fields)


class _Recorded:
    def __init__(self, manifests: set[bytes]) -> None:
        self.manifests = manifests
        self.documents: set[bytes] = set()

    def refresh(self) -> int:
        return 1


def test_page_tree_root_is_the_rfc6962_root_of_every_share() -> None:
    """The on-chain root still covers every chunk: pages align with subtrees, so the
    entries' roots combine to the root over all share addresses, at any size."""
    for per_page, fanout in ((2, 2), (4, 2), (4, 4)):
        for count in range(1, max_leaves(per_page, fanout) + 1):
            leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(count)]
            pages: dict[bytes, bytes] = {}
            writer = TreeWriter(b"\x07" * 32, 2, per_page, fanout, pages.__setitem__)
            for leaf in leaves:
                writer.add(leaf)
            depth, entries = writer.finish()
            tree = PageTree(b"\x07" * 32, 2, count, per_page, fanout, depth, entries)
            tree.check(MerkleTree(leaves).root)
            assert tree.page_count == len(pages)
            assert all(len(raw) <= 54 + 64 * fanout for raw in pages.values())
            walked = walk_leaf_pages_sync(tree, _reader(pages, tree))
            assert b"".join(bytes(p.leaves()) for p in walked) == b"".join(leaves)


def test_multi_page_manifest_round_trips_upload_download_repair_retention(
    nodes: list[ThreadNode], tmp_path: Path
) -> None:
    data = os.urandom(20 * CHUNK + 77)  # 21 chunks, 63 shares: 16 leaf pages, 4 index pages
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    client = StorageClient([n.url for n in nodes], signer=WRITER)
    result = client.upload(src, _params(), DataKey.generate(), OWNER.public_key())
    m = result.manifest
    assert m.format_version == 4 and m.tree is not None and m.tree.depth == 2
    assert (len(m.tree.entries), m.tree.page_count) == (4, 16 + 4)
    raw = m.to_bytes()
    assert b'"chunks"' not in raw and len(raw) < 8192
    # Its placement record is positional (version 2): 2 bytes a share.
    assert result.placement.format_version == 2 and len(result.placement.holders) == 2 * 63
    # The root on chain is the root over every share address.
    verified = client.fetch_manifest(result.manifest_hash)
    assert verified.paged and verified.manifest.merkle_root == result.root
    # Every node holds the manifest and every page (stored like the manifest).
    for node in nodes:
        held = stored_names(node.data_dir)
        assert result.manifest_hash.hex() in held
        assert sum(1 for name in held if _is_page(node, name)) == 20

    out = tmp_path / "out.bin"
    client.download(result.manifest_hash, OWNER, out)
    assert out.read_bytes() == data

    # A node loses everything but the documents: repair rebuilds its shares.
    victim = nodes[0]
    shares = _share_names(victim)
    assert shares
    victim.stop()
    store = PackStore(victim.data_dir)
    try:
        store.delete(shares)
    finally:
        store.close()
    nodes[0] = ThreadNode(victim.data_dir, cap=1 << 20)
    nodes[0].start()
    urls = [n.url for n in nodes]
    repairer = Repairer(urls, signer=WRITER)
    report = repairer.repair(result.manifest_hash)
    assert report.healthy and report.rebuilt >= len(shares)
    assert report.placement is not None
    assert (report.placement.format_version, report.placement.sequence) == (2, 1)
    assert StorageClient(urls).fetch_placement(verified) == report.placement
    assert Repairer(urls, signer=WRITER).check(result.manifest_hash).healthy
    StorageClient(urls, signer=WRITER).download(result.manifest_hash, OWNER, out)
    assert out.read_bytes() == data

    # Retention on a node keeps the recorded version: manifest, pages and shares.
    node = nodes[1]
    node.stop()
    store = PackStore(node.data_dir)
    try:
        before = {e.name for e in store.entries()}
        sweep = Retention(_Recorded({result.manifest_hash}), grace=0)  # type: ignore[arg-type]
        sweep.sweep(store)
        after = {e.name for e in store.entries()}
        placements = {r for r, _ in store.placements(result.manifest_hash)}
        assert after == before, "retention deleted part of a recorded paged dataset"
        # ...and an unrecorded one goes, pages included.
        Retention(_Recorded(set()), grace=0).sweep(store)  # type: ignore[arg-type]
        assert {e.name for e in store.entries()} <= placements
    finally:
        store.close()
    nodes[1] = ThreadNode(node.data_dir, cap=1 << 20)
    nodes[1].start()


def test_a_node_refuses_a_positional_placement_that_doubles_up(
    nodes: list[ThreadNode], tmp_path: Path
) -> None:
    """The liar writes a version-2 placement putting two shares of one chunk on one
    node (so losing it loses both), or one for another number of shares: 422."""
    client = StorageClient([n.url for n in nodes], signer=WRITER)
    result = client.upload(
        _write(tmp_path / "src.bin", os.urandom(4 * CHUNK)), _params(), DataKey.generate(),
        OWNER.public_key(),
    )  # fmt: skip
    good = result.placement
    assert good.format_version == 2
    doubled = bytes([0, 1, 0, 1]) + good.holders[4:]
    short = good.holders[:-2]
    with httpx.Client(base_url=nodes[0].url, timeout=10, auth=SigningAuth()) as http:
        for holders, reason in (
            (doubled, "holds two shares"),
            (short, "list 11 shares, the manifest 12"),
        ):
            bad = dataclasses.replace(good, sequence=1, holders=holders)
            raw = bad.to_bytes()
            answer = http.put(f"/placements/{bad.digest().hex()}", content=raw)
            assert answer.status_code == 422, answer.text
            assert reason in answer.json()["detail"]
        listed = http.get("/placements", params={"manifest": result.manifest_hash.hex()})
        assert [r["sequence"] for r in listed.json()["records"]] == [0]


def test_proofs_and_audits_read_through_the_pages(nodes: list[ThreadNode], tmp_path: Path) -> None:
    """Every share of a two-level paged manifest gets a proof to the on-chain root,
    from a node (GET /proofs, its leaf from the share's header) and from an auditor
    reading only the pages on its path; the paths equal the whole tree's."""
    from datagora.audit.verify import Status, _Fetcher, _verify_paged_share

    client = StorageClient([n.url for n in nodes], signer=WRITER)
    result = client.upload(
        _write(tmp_path / "src.bin", os.urandom(20 * CHUNK)), _params(), DataKey.generate(),
        OWNER.public_key(),
    )  # fmt: skip
    verified = client.fetch_manifest(result.manifest_hash)
    tree = verified.manifest.tree
    assert tree is not None and tree.depth == 2
    leaves = tree.leaf_count
    fetcher = _Fetcher(10)
    try:
        with httpx.Client(timeout=10) as http:
            for leaf in range(leaves):
                (where,) = result.placement.where_leaf(leaf)
                audit = _verify_paged_share(
                    fetcher, 1, verified, leaf, result.root, [n.url for n in nodes]
                )
                assert [c.status for c in audit] == [Status.OK], audit
                share = bytes.fromhex(audit[0].subject.removeprefix("share "))
                answer = http.get(
                    f"{where}/proofs/{share.hex()}",
                    params={"manifest": result.manifest_hash.hex()},
                )
                assert answer.status_code == 200, answer.text
                proof = MerkleProof.from_json(answer.json()["proof"])
                assert (proof.leaf_index, proof.tree_size) == (leaf, leaves)
                assert verify_inclusion(share, proof, result.root)
            # A share of another dataset on the same node is not under this manifest.
            other = client.upload(
                _write(tmp_path / "other.bin", os.urandom(3 * CHUNK)),
                EncodingParams(new_dataset_id(), 1, chunk_size=CHUNK, k=K, n=N),
                DataKey.generate(), OWNER.public_key(),
            )  # fmt: skip
            name = other.manifest.chunks[0].shares[0].hex()
            (stranger,) = other.placement.where(bytes.fromhex(name))
            refused = http.get(
                f"{stranger}/proofs/{name}", params={"manifest": result.manifest_hash.hex()}
            )
            assert refused.status_code == 422 and "not listed" in refused.json()["detail"]
    finally:
        fetcher.close()


def test_a_tampered_page_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    """A node serving a page that is not the one the manifest names: refused on its
    hash, the download fails saying which page, and nothing is written."""
    lying = ThreadNode(tmp_path / "liar", cap=1 << 20)
    lying.start()
    try:
        client = StorageClient([lying.url], signer=WRITER)
        params = _params(k=1, n=1)
        data = os.urandom(9 * CHUNK)
        result = client.upload(
            _write(tmp_path / "src.bin", data), params, DataKey.generate(), OWNER.public_key()
        )
        assert result.manifest.format_version == 4
        tree = result.manifest.tree
        assert tree is not None
        victim = tree.entries[0].address
        raw = _read(lying, victim.hex())
        tampered = raw[:-1] + bytes([raw[-1] ^ 1])
        where = share_location(lying.data_dir, victim.hex())
        assert where is not None
        with where[0].open("r+b") as segment:  # the node's disk now holds other bytes
            segment.seek(where[1] + where[2] - 1)
            segment.write(tampered[-1:])
        out = tmp_path / "out.bin"
        with pytest.raises(DownloadError) as refused:
            StorageClient([lying.url], signer=WRITER).download(result.manifest_hash, OWNER, out)
        message = str(refused.value)
        assert f"manifest page {victim.hex()}" in message
        assert "does not match its hash" in message
        assert not out.exists()
        # The pure check says the same, and a page at the wrong position is refused too.
        with pytest.raises(IntegrityError, match="does not match its hash"):
            verify_page(tampered, tree.entries[0], tree, 0, 0, 4)
        with pytest.raises(IntegrityError, match="another position"):
            verify_page(raw, tree.entries[0], tree, 0, 4, 4)
    finally:
        lying.stop()


def test_an_old_format_3_manifest_still_reads(nodes: list[ThreadNode], tmp_path: Path) -> None:
    """A small dataset keeps a single-document manifest (format 3); one written by the
    code before pages existed still verifies and downloads."""
    sample = encode_bytes(os.urandom(5000), chunk_size=CHUNK, k=K, n=N)
    assert sample.manifest.format_version == 3
    assert verify_manifest(sample.manifest.to_bytes(), sample.manifest.digest()).paged is False
    data = os.urandom(3 * CHUNK)
    client = StorageClient([n.url for n in nodes], signer=WRITER)
    result = client.upload(
        _write(tmp_path / "small.bin", data),
        EncodingParams(new_dataset_id(), 1, chunk_size=CHUNK, k=K, n=N),
        DataKey.generate(), OWNER.public_key(),
    )  # fmt: skip
    assert result.manifest.format_version == 3  # 9 shares: far below one page
    out = tmp_path / "out.bin"
    client.download(result.manifest_hash, OWNER, out)
    assert out.read_bytes() == data
    # The switch: one share address more than a leaf page holds makes it paged.
    per_page = SMALL["leaves_per_page"]
    assert not tree_sizes(CHUNK, CHUNK, N, per_page).paged  # 3 leaves
    assert tree_sizes(2 * CHUNK, CHUNK, N, per_page).paged  # 6 leaves > 4


def test_a_tebibyte_at_the_defaults_fits_in_small_documents() -> None:
    """The 1 TiB manifest, from the real defaults, without uploading 1 TiB."""
    tib, mib = 1 << 40, 1 << 20
    check_dataset_size(tib, mib, 4, 6)  # accepted before any share
    sizes = tree_sizes(tib, mib, 6)
    print(f"1 TiB at 1 MiB chunks, 4-of-6: {sizes}")
    assert sizes.paged and sizes.leaves == (tib // mib) * 6 == 6_291_456
    assert sizes.depth == 1
    assert sizes.leaf_pages == 6_291_456 // DEFAULT_LEAVES_PER_PAGE == 192
    assert sizes.index_pages == 0
    assert sizes.largest_page_bytes == 54 + 32 * DEFAULT_LEAVES_PER_PAGE  # 1 MiB + 54
    assert sizes.manifest_bytes < 64 << 10  # the manifest itself: under 64 KiB
    assert max(sizes.manifest_bytes, sizes.largest_page_bytes) < MAX_MANIFEST_BYTES
    # Its placement record (version 2, 2 bytes a share): about 17 MB.
    assert sizes.placement_bytes < 18 << 20
    # The new ceiling: the placement record's 24,769,536 shares (the page tree's
    # 2^43 would allow far more).
    assert max_leaves(DEFAULT_LEAVES_PER_PAGE, DEFAULT_FANOUT) > PLACEMENT_LEAVES
    most = max_dataset_bytes(mib, 6)
    assert most == (PLACEMENT_LEAVES // 6) * mib == 4_328_790_163_456
    print(f"largest dataset at 1 MiB chunks, 4-of-6: {most} bytes (~{most / 2**40:.2f} TiB)")
    assert most > 1 << 40
    biggest = tree_sizes(most, mib, 6)
    assert biggest.placement_bytes <= MAX_MANIFEST_BYTES
    assert biggest.manifest_bytes < 128 << 10 and biggest.leaf_pages == 756
    # Two levels of pages, exercised above with small pages, start past 2^29 shares.
    assert tree_sizes(1 << 40, 1024, 1).depth == 2
    with pytest.raises(DatasetTooLarge, match=f"at most {most} bytes"):
        check_dataset_size(most + 1, mib, 4, 6)


def test_a_dataset_past_the_tree_is_refused_before_any_share(
    nodes: list[ThreadNode], tmp_path: Path
) -> None:
    params = _params(leaves_per_page=2, fanout=2)  # 8 leaves: 2 chunks at 3 shares
    most = max_dataset_bytes(CHUNK, N, 2, 2)
    assert most == 2 * CHUNK
    client = StorageClient([n.url for n in nodes], signer=WRITER)
    with pytest.raises(DatasetTooLarge, match="Nothing was uploaded"):
        client.upload(
            _write(tmp_path / "big.bin", os.urandom(most + 1)),
            params, DataKey.generate(), OWNER.public_key(),
        )  # fmt: skip
    assert all(stored_names(n.data_dir) == set() for n in nodes)


def test_chunks_spanning_two_pages_assemble_in_order(tmp_path: Path) -> None:
    """3 shares a chunk, 4 addresses a page: most chunks straddle two pages."""
    sample = encode_bytes(os.urandom(10 * CHUNK), chunk_size=CHUNK, k=K, n=N)
    leaves = [h for c in sample.manifest.chunks for h in c.shares]
    pages: dict[bytes, bytes] = {}
    writer = TreeWriter(
        sample.manifest.dataset_id, sample.manifest.version, 4, 4, pages.__setitem__
    )
    for leaf in leaves:
        writer.add(leaf)
    depth, entries = writer.finish()
    from datagora.storage.manifest import Manifest

    m = sample.manifest
    paged = Manifest.create_paged(
        dataset_id=m.dataset_id, version=m.version, plaintext_size=m.plaintext_size,
        chunk_size=m.chunk_size, k=m.k, n=m.n, leaves_per_page=4, fanout=4, depth=depth,
        entries=entries, wrapped_key=m.wrapped_key,
    )  # fmt: skip
    assert paged.merkle_root == m.merkle_root
    verified = verify_manifest(paged.to_bytes(), paged.digest())
    tree = verified.manifest.tree
    assert tree is not None
    assembler = ChunkAssembler(verified, hold=False)
    got = [
        item
        for page in walk_leaf_pages_sync(
            tree, lambda ref, lv, f, c: verify_page(pages[ref.address], ref, tree, lv, f, c)
        )
        for item in assembler.feed(page)
    ]
    assert got == list(enumerate(m.chunks))


def _reader(pages: dict[bytes, bytes], tree: PageTree) -> Callable[..., VerifiedPage]:
    def read(ref: PageRef, level: int, first: int, count: int) -> VerifiedPage:
        return verify_page(pages[ref.address], ref, tree, level, first, count)

    return read


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _read(node: ThreadNode, name: str) -> bytes:
    where = share_location(node.data_dir, name)
    assert where is not None
    with where[0].open("rb") as segment:
        segment.seek(where[1])
        return segment.read(where[2])


def _is_page(node: ThreadNode, name: str) -> bool:
    return _read(node, name).startswith(b"DGMP")


def _share_names(node: ThreadNode) -> list[bytes]:
    return [
        bytes.fromhex(name)
        for name in stored_names(node.data_dir)
        if _read(node, name).startswith(b"DGS2")
    ]
