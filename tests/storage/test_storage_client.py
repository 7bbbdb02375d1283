"""The storage client against real storage nodes (uvicorn on loopback, in threads).

The multi-process behaviour (killed, slow and corrupt nodes) is in
``test_storage_network.py``; these are the fast round trips and error paths.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from storage_helpers import WRITER, ThreadNode

from datagora.crypto.aead import DataKey
from datagora.storage.client import StorageClient
from datagora.storage.errors import DownloadError, NoNodesError, StorageError
from datagora.storage.packs import stored_names
from datagora.storage.pipeline import EncodingParams, new_dataset_id

OWNER = X25519PrivateKey.generate()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[ThreadNode]]:
    started = [ThreadNode(tmp_path / f"node{i}") for i in range(5)]
    for node in started:
        node.start()
    yield started
    for node in started:
        node.stop()


def client_for(nodes: list[ThreadNode], **options: float) -> StorageClient:
    return StorageClient([n.url for n in nodes], signer=WRITER, **options)  # type: ignore[arg-type]


def shares_on(node: ThreadNode) -> set[str]:
    return stored_names(node.data_dir)


@pytest.mark.parametrize(("size", "chunk_size"), [(0, 64), (1, 64), (1000, 64), (4096, 1024)])
def test_round_trip(nodes: list[ThreadNode], tmp_path: Path, size: int, chunk_size: int) -> None:
    data = os.urandom(size)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    client = client_for(nodes)
    params = EncodingParams(new_dataset_id(), 3, chunk_size=chunk_size, k=2, n=4)
    key = DataKey.generate()
    up: list[tuple[int, int]] = []
    result = client.upload(
        src, params, key, OWNER.public_key(), progress=lambda d, t: up.append((d, t))
    )
    assert result.manifest_hash == result.manifest.digest()
    assert result.root == result.manifest.merkle_root
    assert up[-1] == (size, size) and all(d <= t for d, t in up)
    # Every chunk's shares sit on distinct nodes, and each node really holds them.
    for chunk in result.manifest.chunks:
        places = [result.placement.where(h) for h in chunk.shares]
        assert all(len(p) == 1 for p in places)
        assert len({p[0] for p in places}) == 4
        for h, (node_url,) in zip(chunk.shares, places, strict=True):
            (node,) = [n for n in nodes if n.url == node_url]
            assert h.hex() in shares_on(node)
    # The manifest and placement record are on every node.
    for node in nodes:
        assert {result.manifest_hash.hex(), result.placement_hash.hex()} <= shares_on(node)
    down: list[tuple[int, int]] = []
    dst = tmp_path / "out.bin"
    report = client.download(
        result.manifest_hash, key, dst, progress=lambda d, t: down.append((d, t))
    )
    assert dst.read_bytes() == data
    assert report.bad_nodes == {} and report.bytes_written == size
    assert report.shares_fetched == 2 * len(result.manifest.chunks)
    assert down[-1] == (size, size)
    # The owner's private key unwraps the data key from the manifest.
    client.download(result.manifest_hash, OWNER, tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == data


def test_upload_from_a_file_object_spreads_load(nodes: list[ThreadNode], tmp_path: Path) -> None:
    data = os.urandom(50 * 100)
    client = client_for(nodes)
    params = EncodingParams(new_dataset_id(), 0, chunk_size=100, k=2, n=3)
    result = client.upload(io.BytesIO(data), params, DataKey.generate(), OWNER.public_key())
    per_node = {n.url: 0 for n in nodes}
    for where in result.placement.locations.values():
        per_node[where[0]] += 1
    # 50 chunks x 3 shares over 5 nodes, starting node rotating: 30 each.
    assert sorted(per_node.values()) == [30] * 5
    assert result.placement.sequence == 0 and result.failed_nodes == {}


def test_no_plaintext_or_key_on_the_nodes(nodes: list[ThreadNode], tmp_path: Path) -> None:
    marker = b"PLAINTEXT-MARKER-4f1c"
    data = (marker + os.urandom(40)) * 30
    key = DataKey.generate()
    params = EncodingParams(new_dataset_id(), 1, chunk_size=256, k=2, n=3)
    client_for(nodes).upload(io.BytesIO(data), params, key, OWNER.public_key())
    for node in nodes:
        for path in node.data_dir.rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                assert marker not in blob and key.raw() not in blob
                assert key.raw().hex().encode() not in blob


def test_too_few_nodes_is_a_clear_error(nodes: list[ThreadNode]) -> None:
    params = EncodingParams(new_dataset_id(), 1, k=3, n=6)
    with pytest.raises(NoNodesError, match=r"need 6 distinct storage nodes .*; only 5"):
        StorageClient([n.url for n in nodes], happy=6, signer=WRITER).upload(
            io.BytesIO(b"x"), params, DataKey.generate(), OWNER.public_key()
        )
    with pytest.raises(StorageError, match="between k"):
        StorageClient([n.url for n in nodes], happy=2, signer=WRITER).upload(
            io.BytesIO(b"x"), params, DataKey.generate(), OWNER.public_key()
        )
    with pytest.raises(NoNodesError, match="no storage nodes"):
        StorageClient([])
    with pytest.raises(NoNodesError, match="base URL"):
        StorageClient(["127.0.0.1:8000"])


def test_unknown_manifest_and_wrong_key(nodes: list[ThreadNode], tmp_path: Path) -> None:
    client = client_for(nodes)
    with pytest.raises(DownloadError, match="no storage node holds a valid manifest"):
        client.download(hashlib.sha256(b"nothing").digest(), DataKey.generate(), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    params = EncodingParams(new_dataset_id(), 1, chunk_size=64, k=2, n=3)
    result = client.upload(io.BytesIO(b"y" * 200), params, DataKey.generate(), OWNER.public_key())
    from datagora.crypto.errors import DecryptionError

    with pytest.raises(DecryptionError):
        client.download(result.manifest_hash, DataKey.generate(), tmp_path / "y")
    assert list(tmp_path.glob("*y*")) == []  # no partial output, no temp file left


def test_a_node_refusing_a_batch_is_avoided_and_nothing_is_lost(
    nodes: list[ThreadNode], tmp_path: Path
) -> None:
    # A sixth node whose share cap is below every share: it refuses each batch.
    picky = ThreadNode(tmp_path / "picky", cap=64)
    picky.start()
    try:
        everyone = [picky, *nodes]
        data = os.urandom(40 * 300)
        params = EncodingParams(new_dataset_id(), 1, chunk_size=300, k=2, n=4)
        key = DataKey.generate()
        client = client_for(everyone)
        result = client.upload(io.BytesIO(data), params, key, OWNER.public_key())
        assert list(result.failed_nodes) == [picky.url]
        assert "refused a batch" in result.failed_nodes[picky.url]
        assert "larger than the cap" in result.failed_nodes[picky.url]
        assert shares_on(picky) == set()
        for chunk in result.manifest.chunks:
            places = [result.placement.where(h)[0] for h in chunk.shares]
            assert picky.url not in places and len(set(places)) == 4
        dst = tmp_path / "out.bin"
        report = client.download(result.manifest_hash, key, dst)
        assert dst.read_bytes() == data
        assert report.bytes_written == len(data)
    finally:
        picky.stop()
