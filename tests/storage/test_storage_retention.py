"""On-chain retention: a storage node keeps only what the ledger records.

Real parts throughout: the embedded chain with the deployed contracts, a node's
pack store on disk, real encoded versions. Time is the only thing moved by hand
(the sweep's clock), so the grace period need not be waited out.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from storage_helpers import WRITER, grant

from datagora.crypto.aead import DataKey
from datagora.crypto.sealed import wrap_data_key
from datagora.ledger import Chain, Ledger, dev_account
from datagora.ledger.anvil import Anvil
from datagora.node.inprocess import ServerGroup
from datagora.storage.auth import QuotaBook
from datagora.storage.client import StorageClient
from datagora.storage.errors import StorageError
from datagora.storage.manifest import verify_manifest
from datagora.storage.node import create_storage_app
from datagora.storage.packs import PackStore, stored_names
from datagora.storage.pipeline import EncodingParams, ManifestBuilder, encode_stream, new_dataset_id
from datagora.storage.placement import PlacementRecord
from datagora.storage.retention import OnChainReferences, Retention
from helpers import OWNER, h, publish

GRACE = 100.0


@dataclass
class Version:
    manifest: bytes
    root: bytes
    shares: list[bytes]
    placement: bytes


def _put(
    store: PackStore, name: bytes, data: bytes, placement: PlacementRecord | None = None
) -> None:
    with store.writer() as batch:
        batch.start(name, store.holding(name))
        batch.write(data)
        assert batch.finish()
        batch.commit(
            [] if placement is None else [(placement.manifest_hash, name, placement.sequence)]
        )


def _store_version(store: PackStore, payload: bytes) -> Version:
    """Encode ``payload`` as a fresh dataset version and store all of it, as an upload does."""
    params = EncodingParams(new_dataset_id(), 1, chunk_size=4096, k=2, n=3)
    key = DataKey.generate()
    builder = ManifestBuilder(params)
    shares: list[bytes] = []
    for chunk in encode_stream(io.BytesIO(payload), params, key):
        builder.add(chunk)
        for share in chunk.shares:
            _put(store, share.sha256, share.data)
            shares.append(share.sha256)
    owner = X25519PrivateKey.generate().public_key()
    manifest = builder.build(wrap_data_key(key, owner, params.dataset_id, params.version))
    raw = manifest.to_bytes()
    verified = verify_manifest(raw, manifest.digest())
    _put(store, manifest.digest(), raw)
    where = {s: [f"http://127.0.0.1:{1 + i % 3}"] for i, s in enumerate(shares)}
    record = PlacementRecord.create(verified, where)
    _put(store, record.digest(), record.to_bytes(), record)  # as PUT /placements does
    return Version(manifest.digest(), manifest.merkle_root, shares, record.digest())


def _put_blob(store: PackStore, data: bytes) -> bytes:
    name = hashlib.sha256(data).digest()
    _put(store, name, data)
    return name


def _held(store: PackStore) -> set[bytes]:
    return {e.name for e in store.entries()}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PackStore]:
    opened = PackStore(tmp_path / "node")
    yield opened
    opened.close()


def test_unrecorded_data_goes_after_the_grace_period_recorded_data_stays(
    embedded_ledger: Ledger, store: PackStore
) -> None:
    published = _store_version(store, os.urandom(20_000))
    orphan = _store_version(store, os.urandom(9_000))  # its transaction never came
    mock = _put_blob(store, b"a,b\n1,2\n")
    metadata = _put_blob(store, json.dumps({"mock": {"uri": "x", "sha256": mock.hex()}}).encode())
    junk = _put_blob(store, b"anyone's free storage")
    # A placement record of the published version stored as a plain blob (not through
    # the checks of PUT /placements): it must not pin itself.
    raw_manifest = store.read(published.manifest)
    assert raw_manifest is not None
    verified = verify_manifest(raw_manifest, published.manifest)
    lookalike = _put_blob(store, PlacementRecord.create(verified, {}, 7).to_bytes())
    publish(
        embedded_ledger,
        manifest_hash=published.manifest,
        merkle_root=published.root,
        metadata_hash=metadata,
    )
    now = [max(e.stored_at for e in store.entries())]
    retention = Retention(OnChainReferences.of(embedded_ledger), GRACE, clock=lambda: now[0])

    early = retention.sweep(store)
    assert early.error is None and early.deleted == 0
    # The orphan's shares, manifest and placement, the junk, and the published
    # version's placement record (placement records are only read once past grace).
    assert early.pending == len(orphan.shares) + 5
    everything = _held(store)

    now[0] += GRACE + 1
    report = retention.sweep(store)
    unrecorded = {*orphan.shares, orphan.manifest, orphan.placement, junk, lookalike}
    assert report.deleted == len(unrecorded)
    assert _held(store) == everything - unrecorded
    for name in unrecorded:
        assert store.read(name) is None
    kept = {*published.shares, published.manifest, published.placement, metadata, mock}
    assert kept <= _held(store)
    assert retention.sweep(store).deleted == 0  # a second pass finds nothing more


def test_updates_and_key_value_records_keep_every_recorded_version(
    embedded_ledger: Ledger, store: PackStore
) -> None:
    first = _store_version(store, os.urandom(5_000))
    second = _store_version(store, os.urandom(6_000))
    value = _store_version(store, os.urandom(7_000))
    dataset = publish(embedded_ledger, manifest_hash=first.manifest, merkle_root=first.root).dataset
    embedded_ledger.data_nft.update(
        OWNER, dataset, h("metadata v2"), "https://example.org/2", second.manifest, second.root
    )
    embedded_ledger.kv.set(OWNER, h("model/weights"), value.manifest)
    now = [max(e.stored_at for e in store.entries()) + GRACE + 1]
    retention = Retention(OnChainReferences.of(embedded_ledger), GRACE, clock=lambda: now[0])
    before = _held(store)
    report = retention.sweep(store)
    assert report.error is None and report.deleted == 0 and _held(store) == before


@pytest.mark.anvil
def test_nothing_is_deleted_when_the_chain_cannot_be_read(store: PackStore) -> None:
    _store_version(store, os.urandom(3_000))
    with Anvil() as node:
        references = OnChainReferences.of(Ledger.deploy(Chain.rpc(node.url), dev_account(0)))
    # The chain is gone: a sweep must keep everything rather than guess.
    now = [max(e.stored_at for e in store.entries()) + GRACE + 1]
    retention = Retention(references, GRACE, clock=lambda: now[0])
    before = _held(store)
    report = retention.sweep(store)
    assert report.error is not None and "nothing deleted" in report.error
    assert report.deleted == 0 and _held(store) == before


def used(data_dir: Path, account: str = WRITER.address) -> int:
    """The bytes ``account`` stores on the node keeping its data in ``data_dir``."""
    book = QuotaBook.in_dir(data_dir)
    try:
        return book.used(account)
    finally:
        book.close()


def test_a_node_sweeps_by_itself_and_reports_it(embedded_ledger: Ledger, tmp_path: Path) -> None:
    """Three node apps with retention on (grace 5 s, a sweep every 0.2 s): a recorded
    upload stays readable, an unrecorded one disappears from every node.

    The grace must outlast one upload and its publish: with 1 s, a loaded machine
    (a CI run beside other work) swept the first upload before it was recorded."""

    def node(i: int) -> Any:
        policy = Retention(OnChainReferences.of(embedded_ledger), grace=5.0, every=0.2)
        grant(tmp_path / f"node{i}")
        return create_storage_app(tmp_path / f"node{i}", 1 << 20, retention=policy)

    with ServerGroup() as group:
        urls = [group.start(partial(node, i), f"storage-{i}").url for i in range(3)]
        client = StorageClient(urls, signer=WRITER)
        owner = X25519PrivateKey.generate().public_key()
        uploads = []
        for payload in (os.urandom(30_000), os.urandom(30_000)):
            params = EncodingParams(new_dataset_id(), 1, chunk_size=8192, k=2, n=3)
            key = DataKey.generate()
            uploads.append((client.upload(io.BytesIO(payload), params, key, owner), key, payload))
            if len(uploads) == 1:  # recorded at once, well inside the grace
                first = uploads[0][0]
                publish(embedded_ledger, manifest_hash=first.manifest_hash, merkle_root=first.root)
                used_after_first = [used(tmp_path / f"node{i}") for i in range(3)]
        grown = [used(tmp_path / f"node{i}") for i in range(3)]
        assert all(g > u for g, u in zip(grown, used_after_first, strict=True))
        (recorded, key, payload), (orphan, _, _) = uploads
        orphaned = {orphan.manifest_hash.hex()} | {
            s.hex() for c in orphan.manifest.chunks for s in c.shares
        }
        deadline = time.monotonic() + 30
        while any(orphaned & stored_names(tmp_path / f"node{i}") for i in range(3)):
            assert time.monotonic() < deadline, "the nodes never swept the unrecorded upload"
            time.sleep(0.2)
        for url in urls:
            last = httpx.get(f"{url}/health").json()["retention"]["last_sweep"]
            assert last["error"] is None and last["kept"] >= 1
        # What retention deleted no longer counts against the writer's quota.
        while [used(tmp_path / f"node{i}") for i in range(3)] != used_after_first:
            assert time.monotonic() < deadline, "the deleted bytes were never released"
            time.sleep(0.2)
        out = tmp_path / "back.bin"
        client.download(recorded.manifest_hash, key, out)
        assert out.read_bytes() == payload
        with pytest.raises(StorageError):
            client.download(orphan.manifest_hash, key, tmp_path / "orphan.bin")
