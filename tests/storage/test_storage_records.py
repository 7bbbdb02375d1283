"""Key/value records on the embedded ledger, large values through real storage nodes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from storage_helpers import WRITER, ThreadNode

from datagora.crypto.errors import DecryptionError
from datagora.ledger import Ledger, dev_account
from datagora.storage.client import StorageClient
from datagora.storage.errors import IntegrityError, RecordNotFound, StorageError
from datagora.storage.records import (
    MAX_ON_CHAIN,
    KVStore,
    decode_record,
    encode_record,
    key_hash,
)

OWNER_KEY = X25519PrivateKey.generate()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[str]]:
    started = [ThreadNode(tmp_path / f"node{i}") for i in range(3)]
    urls = [node.start() for node in started]
    yield urls
    for node in started:
        node.stop()


def test_record_format_round_trip_and_binding() -> None:
    kh = key_hash("profile")
    record = encode_record(kh, b"secret value", OWNER_KEY)
    assert b"secret value" not in record and record.startswith(b"DGKV\x01")
    assert decode_record(record, kh, OWNER_KEY) == b"secret value"
    with pytest.raises(IntegrityError, match="another key"):
        decode_record(record, key_hash("other"), OWNER_KEY)
    with pytest.raises(DecryptionError):
        decode_record(record, kh, X25519PrivateKey.generate())
    flipped = bytearray(record)
    flipped[-1] ^= 1
    with pytest.raises(DecryptionError):
        decode_record(bytes(flipped), kh, OWNER_KEY)
    with pytest.raises(IntegrityError, match="not a datagora"):
        decode_record(b"DGKV\x01short", kh, OWNER_KEY)


def test_small_values_live_on_chain_with_history(embedded_ledger: Ledger) -> None:
    store = KVStore(embedded_ledger, dev_account(5), None, OWNER_KEY)
    assert store.put("model/threshold", b"0.75") == 1
    assert store.put("model/threshold", b"0.80") == 2
    assert store.get("model/threshold") == b"0.80"
    assert store.get("model/threshold", 1) == b"0.75"
    assert store.remove("model/threshold") == 3
    with pytest.raises(RecordNotFound, match="no record"):
        store.get("model/threshold")
    with pytest.raises(RecordNotFound, match="removed at version 3"):
        store.get("model/threshold", 3)
    with pytest.raises(RecordNotFound, match="no version 9"):
        store.get("model/threshold", 9)
    with pytest.raises(RecordNotFound):
        store.remove("model/threshold")
    history = store.history("model/threshold")
    assert [(h.version, h.removed) for h in history] == [(1, False), (2, False), (3, True)]
    # The chain holds only the key's hash and ciphertext, never the plaintext.
    onchain = embedded_ledger.kv.get(dev_account(5).address, key_hash("model/threshold"))
    assert onchain.version == 3 and not onchain.exists
    assert store.history("never-set") == []
    # Another account's namespace is separate, and a fresh reader sees the same history.
    other = KVStore(embedded_ledger, dev_account(6), None, OWNER_KEY)
    with pytest.raises(RecordNotFound):
        other.get("model/threshold")
    fresh = KVStore(embedded_ledger, dev_account(5), None, OWNER_KEY)
    assert fresh.get("model/threshold", 2) == b"0.80"


def test_large_values_go_through_the_storage_nodes(
    embedded_ledger: Ledger, nodes: list[str]
) -> None:
    client = StorageClient(nodes, signer=WRITER)
    store = KVStore(embedded_ledger, dev_account(7), client, OWNER_KEY, k=2, n=3)
    small = os.urandom(100)
    large = os.urandom(MAX_ON_CHAIN + 1)
    store.put("blob", small)
    records_before = embedded_ledger.ciphertexts.record_count()
    store.put("blob", large)
    assert embedded_ledger.ciphertexts.record_count() == records_before  # not on chain
    content = embedded_ledger.kv.get(dev_account(7).address, key_hash("blob")).content_hash
    manifest = client.fetch_manifest(content)  # the content hash is a manifest hash
    assert manifest.manifest.plaintext_size == len(large)
    assert store.get("blob") == large and store.get("blob", 1) == small
    without_nodes = KVStore(embedded_ledger, dev_account(7), None, OWNER_KEY)
    with pytest.raises(StorageError, match="configure storage nodes"):
        without_nodes.get("blob")
    with pytest.raises(StorageError, match="too large"):
        without_nodes.put("other", large)
