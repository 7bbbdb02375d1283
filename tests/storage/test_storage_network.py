"""Storage over real node processes on loopback: failures, corruption, repair, secrecy.

Every node is a separate ``python -m datagora node --roles storage`` process
(:class:`LocalNodes`); nodes are killed (SIGKILL), paused (SIGSTOP: a slow node)
and have shares corrupted on disk while the client works.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from storage_helpers import WRITER

from datagora.crypto.aead import DataKey
from datagora.storage.client import StorageClient
from datagora.storage.errors import DownloadError, NoNodesError, UploadError
from datagora.storage.merkle import MerkleProof
from datagora.storage.packs import share_location, stored_names
from datagora.storage.pipeline import EncodingParams, new_dataset_id
from datagora.storage.repair import Repairer
from datagora.storage.shares import verify_share
from datagora.storage.upload import UploadResult
from datagora.testing.storage import LocalNode, LocalNodes

pytestmark = pytest.mark.slow

OWNER = X25519PrivateKey.generate()
CHUNK = 64 * 1024
MARKER = b"DATAGORA-PLAINTEXT-MARKER-7c2e"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalNodes]:
    """Seven fresh nodes, for tests that kill some."""
    with LocalNodes(7, tmp_path / "nodes") as nodes:
        yield nodes


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNodes]:
    """Seven nodes shared by the tests that leave every node running."""
    with LocalNodes(7, tmp_path_factory.mktemp("shared")) as nodes:
        yield nodes


def sample_file(tmp_path: Path, chunks: int = 24) -> tuple[Path, bytes]:
    data = b"".join(MARKER + os.urandom(CHUNK - len(MARKER)) for _ in range(chunks)) + b"tail"
    path = tmp_path / "dataset.bin"
    path.write_bytes(data)
    return path, data


def upload(
    client: StorageClient, src: Path, k: int = 3, n: int = 6, **kw: object
) -> tuple[UploadResult, DataKey]:
    key = DataKey.generate()
    params = EncodingParams(new_dataset_id(), 1, chunk_size=CHUNK, k=k, n=n)
    return client.upload(src, params, key, OWNER.public_key(), **kw), key  # type: ignore[arg-type]


def node_at(cluster: LocalNodes, url: str) -> LocalNode:
    (node,) = [n for n in cluster.nodes if n.url == url]
    return node


def stored(node: LocalNode) -> set[str]:
    return stored_names(node.storage_dir)


def test_publish_leaves_no_plaintext_or_key_on_any_node(shared: LocalNodes, tmp_path: Path) -> None:
    src, data = sample_file(tmp_path)
    assert data.count(MARKER) == 24
    before = sum(len(stored(n)) for n in shared.nodes)
    result, key = upload(StorageClient(shared.urls, signer=WRITER), src)
    scanned = 0
    for node in shared.nodes:
        # Everything the node wrote: shares, indexes, temporary files, its log.
        for path in node.data_dir.rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                assert MARKER not in blob
                assert key.raw() not in blob and key.raw().hex().encode() not in blob
                scanned += len(blob)
    # 25 chunks x 6 shares, plus the manifest and placement record on all 7 nodes.
    assert sum(len(stored(n)) for n in shared.nodes) - before == 25 * 6 + 2 * 7
    assert scanned > 2 * len(data) and result.failed_nodes == {}  # k=3, n=6: 2x the data


def test_download_survives_losing_n_minus_k_nodes(cluster: LocalNodes, tmp_path: Path) -> None:
    src, data = sample_file(tmp_path)
    client = StorageClient(cluster.urls, signer=WRITER, concurrency=4)
    result, key = upload(client, src, k=4, n=6)
    # The nodes holding primary shares of chunk 0: one dies before, one during.
    first = [result.placement.where(h)[0] for h in result.manifest.chunks[0].shares]
    before, during = node_at(cluster, first[0]), node_at(cluster, first[1])
    before.kill()
    killed: list[str] = []

    def kill_midway(done: int, total: int) -> None:
        if done >= total // 3 and not killed:
            during.kill()
            killed.append(during.url)

    dst = tmp_path / "copy.bin"
    report = client.download(result.manifest_hash, key, dst, progress=kill_midway)
    assert killed and dst.read_bytes() == data
    assert set(report.bad_nodes) <= {before.url, during.url}
    assert before.url in report.bad_nodes
    assert report.bytes_written == len(data)


def test_corrupt_share_on_disk_is_detected_and_reported(shared: LocalNodes, tmp_path: Path) -> None:
    src, data = sample_file(tmp_path)
    client = StorageClient(shared.urls, signer=WRITER)
    result, key = upload(client, src)
    share = result.manifest.chunks[5].shares[0]
    victim = node_at(shared, result.placement.where(share)[0])
    path, offset, length = share_location(victim.storage_dir, share.hex()) or (Path(), 0, 0)
    with path.open("r+b") as handle:
        handle.seek(offset + length // 2)
        flipped = handle.read(1)[0] ^ 0x01
        handle.seek(offset + length // 2)
        handle.write(bytes([flipped]))
    dst = tmp_path / "copy.bin"
    report = client.download(result.manifest_hash, key, dst)
    assert dst.read_bytes() == data
    assert list(report.bad_nodes) == [victim.url]
    assert "corrupt" in report.bad_nodes[victim.url][0]
    # k shares per chunk, plus the replacement for the corrupt one.
    assert report.shares_fetched == 25 * 3


def test_slow_node_times_out_and_other_shares_are_used(shared: LocalNodes, tmp_path: Path) -> None:
    src, data = sample_file(tmp_path, chunks=6)
    result, key = upload(StorageClient(shared.urls, signer=WRITER), src)
    slow = node_at(shared, result.placement.where(result.manifest.chunks[0].shares[0])[0])
    slow.pause()
    try:
        dst = tmp_path / "copy.bin"
        report = StorageClient(shared.urls, signer=WRITER, timeout=1.5).download(
            result.manifest_hash, key, dst
        )
    finally:
        slow.resume()
    assert dst.read_bytes() == data
    assert report.bad_nodes == {slow.url: ["timed out"]}


def test_node_killed_mid_upload(cluster: LocalNodes, tmp_path: Path) -> None:
    src, data = sample_file(tmp_path, chunks=40)
    victim = cluster.nodes[2]

    def kill_after_first_chunks(done: int, total: int) -> None:
        if done >= 4 * CHUNK and victim.alive:
            victim.kill()

    # Seven nodes for six shares: the victim's shares go to the spare node.
    client = StorageClient(cluster.urls, signer=WRITER, concurrency=8)
    result, key = upload(client, src, progress=kill_after_first_chunks)
    assert not victim.alive and victim.url in result.failed_nodes
    for chunk in result.manifest.chunks:
        places = [result.placement.where(h) for h in chunk.shares]
        assert all(len(p) == 1 for p in places) and len({p[0] for p in places}) == 6
    later = result.manifest.chunks[-1].shares
    assert victim.url not in {result.placement.where(h)[0] for h in later}
    # The killed node never serves a partial share: after a restart, every stored
    # file hashes to its name and the leftover temporary files are gone.
    victim.start()
    victim.wait_ready(deadline=float("inf"))
    for name in stored(victim):
        path, offset, length = share_location(victim.storage_dir, name) or (Path(), 0, 0)
        with path.open("rb") as handle:
            handle.seek(offset)
            assert hashlib.sha256(handle.read(length)).hexdigest() == name
    assert not (victim.storage_dir / "tmp").exists()
    dst = tmp_path / "copy.bin"
    client.download(result.manifest_hash, key, dst)
    assert dst.read_bytes() == data

    # With exactly n nodes and happy = n there is nowhere to move a share: a clean failure.
    six = StorageClient(cluster.urls[:6], signer=WRITER, concurrency=8, happy=6)
    victim2 = cluster.nodes[4]

    def kill_second(done: int, total: int) -> None:
        if done >= 4 * CHUNK and victim2.alive:
            victim2.kill()

    with pytest.raises(UploadError, match="nothing was published"):
        upload(six, src, progress=kill_second)


def test_repair_restores_full_redundancy(cluster: LocalNodes, tmp_path: Path) -> None:
    src, data = sample_file(tmp_path)
    client = StorageClient(cluster.urls, signer=WRITER)
    result, key = upload(client, src, k=3, n=5)
    repairer = Repairer(cluster.urls, timeout=5, signer=WRITER)
    assert repairer.check(result.manifest_hash).healthy
    # Lose two nodes and corrupt one share on a third.
    lost = [node_at(cluster, u) for u in (cluster.urls[0], cluster.urls[3])]
    for node in lost:
        node.kill()
    share = result.manifest.chunks[2].shares[1]
    holder = node_at(cluster, result.placement.where(share)[0])
    if not holder.alive:
        share = result.manifest.chunks[2].shares[2]
        holder = node_at(cluster, result.placement.where(share)[0])
    path, offset, _ = share_location(holder.storage_dir, share.hex()) or (Path(), 0, 0)
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"rotten")
    before = repairer.check(result.manifest_hash)
    assert not before.healthy
    assert any("corrupt" in p.reason for p in before.problems)
    assert {p.node for p in before.problems} >= {lost[0].url, lost[1].url}

    steps: list[tuple[int, int]] = []
    report = repairer.repair(result.manifest_hash, lambda done, total: steps.append((done, total)))
    chunks = len(result.manifest.chunks)
    assert steps == [(i, chunks) for i in range(1, chunks + 1)]  # one step per chunk
    assert report.rebuilt == len({(p.chunk_index, p.share_index) for p in before.problems})
    assert report.placement is not None and report.placement.sequence == 1
    after = Repairer(cluster.urls, timeout=5, signer=WRITER).check(result.manifest_hash)
    assert after.healthy and after.placement_hash == report.placement_hash
    live = {n.url for n in cluster.nodes if n.alive}
    for chunk in result.manifest.chunks:
        places = [after.placement.where(h) for h in chunk.shares]  # type: ignore[union-attr]
        assert all(len(p) == 1 and p[0] in live for p in places)
        assert len({p[0] for p in places}) == 5
    # Full redundancy means losing n - k more nodes is survivable again.
    for node in [n for n in cluster.nodes if n.alive][:2]:
        node.kill()
    dst = tmp_path / "copy.bin"
    client.download(result.manifest_hash, key, dst)
    assert dst.read_bytes() == data


def test_publish_with_nodes_down_meets_happiness_and_repair_tops_up(
    cluster: LocalNodes, tmp_path: Path
) -> None:
    """Two of six nodes down: the upload places the six shares of each chunk on the
    four that answer (happy = 4 for 4-of-6), the download is byte-identical, and once
    the two are back repair restores one share per node on six distinct nodes."""
    six = cluster.nodes[:6]
    urls = [n.url for n in six]
    down = [six[1], six[4]]
    for node in down:
        node.kill()
    src, data = sample_file(tmp_path, chunks=6)
    client = StorageClient(urls, signer=WRITER, timeout=5)
    result, key = upload(client, src, k=4, n=6)
    assert result.happy == 4 and result.needs_repair
    live = {n.url for n in six if n.alive}
    for chunk in result.manifest.chunks:
        recorded = [result.placement.where(h) for h in chunk.shares]
        holders = [w[0] for w in recorded if w] + [
            result.extra_shares[h] for h in chunk.shares if h in result.extra_shares
        ]
        assert len(holders) == 6 and set(holders) == live  # all four, none down
        assert len([w for w in recorded if w]) == 4  # one recorded share per node
    dst = tmp_path / "copy.bin"
    client.download(result.manifest_hash, key, dst)
    assert dst.read_bytes() == data
    # With a third node down too (below happiness) publishing refuses in one line.
    six[0].kill()
    with pytest.raises(NoNodesError, match=r"needs 4 storage nodes to answer .*only 3 of 6"):
        upload(client, src, k=4, n=6)
    for node in [*down, six[0]]:
        node.start()
        node.wait_ready(deadline=float("inf"))
    repairer = Repairer(urls, timeout=5, signer=WRITER)
    assert not repairer.check(result.manifest_hash).healthy
    report = repairer.repair(result.manifest_hash)
    assert report.healthy and report.rebuilt == 2 * len(result.manifest.chunks)
    after = repairer.check(result.manifest_hash)
    assert after.healthy and after.placement is not None
    for chunk in result.manifest.chunks:
        places = [after.placement.where(h) for h in chunk.shares]
        assert all(len(p) == 1 for p in places) and {p[0] for p in places} == set(urls)
    # Full placement: any two nodes may go again.
    for node in down:
        node.kill()
    again = tmp_path / "again.bin"
    client.download(result.manifest_hash, key, again)
    assert again.read_bytes() == data


def test_too_many_lost_nodes_fail_cleanly(cluster: LocalNodes, tmp_path: Path) -> None:
    src, _ = sample_file(tmp_path, chunks=4)
    client = StorageClient(cluster.urls[:6], signer=WRITER)
    result, key = upload(client, src, k=3, n=6)
    for node in cluster.nodes[:4]:
        node.kill()
    dst = tmp_path / "copy.bin"
    with pytest.raises(DownloadError, match="only 2 of the 3 shares") as caught:
        client.download(result.manifest_hash, key, dst)
    assert not dst.exists() and [p for p in tmp_path.iterdir() if "copy" in p.name] == []
    assert set(caught.value.report.bad_nodes) == set(cluster.urls[:4])  # type: ignore[attr-defined]


def test_proofs_from_a_node_process_verify_against_the_root(
    shared: LocalNodes, tmp_path: Path
) -> None:
    src, _ = sample_file(tmp_path, chunks=3)
    result, _ = upload(StorageClient(shared.urls, signer=WRITER), src)
    m = result.manifest
    for chunk in m.chunks:
        for share in chunk.shares:
            url = result.placement.where(share)[0]
            body = httpx.get(
                f"{url}/proofs/{share.hex()}?manifest={result.manifest_hash.hex()}",
                trust_env=False,
            ).json()
            proof = MerkleProof.from_json(body["proof"])
            raw = base64.b64decode(body["share"])
            verify_share(raw, share, proof, result.root, len(m.chunks) * m.n)
