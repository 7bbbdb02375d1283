"""Sizes and the differential-privacy flag in the catalog: the size comes from the
version's manifest, fetched from a real storage node and checked against the on-chain
hash; a storage node that serves other bytes under the name is not believed."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi import FastAPI
from fastapi.responses import Response
from sqlalchemy import text

from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.catalog.resolver import MetadataResolver
from datagora.catalog.search import SearchQuery, search
from datagora.crypto.aead import DataKey
from datagora.crypto.sealed import wrap_data_key
from datagora.ledger import Ledger, dev_account
from datagora.node.apps import storage_app
from datagora.node.inprocess import ThreadServer
from datagora.storage.client import StorageClient
from datagora.storage.metadata import build_metadata
from datagora.storage.pipeline import EncodingParams, ManifestBuilder, encode_stream
from helpers import publish

WRITER = dev_account(1)


def manifest_bytes(size: int, version: int = 1) -> bytes:
    """The manifest of `size` random bytes (encoded for real; shares thrown away)."""
    params = EncodingParams(bytes(range(32)), version, chunk_size=4096, k=2, n=3)
    key = DataKey.generate()
    builder = ManifestBuilder(params)
    for chunk in encode_stream(io.BytesIO(os.urandom(size)), params, key):
        builder.add(chunk)
    wrapped = wrap_data_key(key, X25519PrivateKey.generate().public_key(), params.dataset_id, 1)
    return builder.build(wrapped).to_bytes()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[str]:
    node = ThreadServer(
        lambda: storage_app(tmp_path / "node", 1 << 24, grants={WRITER.address: 1 << 30}),
        "storage",
    ).start()
    try:
        yield node.url
    finally:
        node.stop()


def meta(**service: object) -> bytes:
    return build_metadata(
        {
            "title": "sized",
            "license": "CC0-1.0",
            "creator": "test",
            "services": [{"id": 0, "type": "compute", **service}],
        }
    ).to_bytes()


def test_the_size_comes_from_the_manifest_the_chain_names(
    embedded_ledger: Ledger, database: Database, storage: str
) -> None:
    first, second = manifest_bytes(10_000), manifest_bytes(30_001, version=2)
    client = StorageClient([storage], signer=WRITER)
    for raw in (first, second):
        client.put_blob(raw, "manifest")
    ix = Indexer(embedded_ledger, database, MetadataResolver([storage], allow_private=True))
    raw_meta = meta(differential_privacy=True)
    ix.put_metadata(raw_meta)
    dataset = publish(
        embedded_ledger,
        metadata_hash=hashlib.sha256(raw_meta).digest(),
        manifest_hash=hashlib.sha256(first).digest(),
    ).dataset
    ix.sync()
    (item,) = search(database, SearchQuery(service="dp")).items
    assert (item.id, item.size, item.differential_privacy) == (dataset, None, True)
    assert ix.retry_sizes() == 1
    assert search(database, SearchQuery(service="dp")).items[0].size == 10_000
    assert ix.retry_sizes() == 0  # known: not fetched again

    # A new version: its size is unknown until its own manifest is fetched.
    embedded_ledger.data_nft.update(
        dev_account(1), dataset, hashlib.sha256(raw_meta).digest(), "",
        hashlib.sha256(second).digest(), bytes(32),
    )  # fmt: skip
    ix.sync()
    assert search(database, SearchQuery()).items[0].size is None
    assert ix.retry_sizes() == 1
    assert search(database, SearchQuery()).items[0].size == 30_001


def test_a_node_serving_other_bytes_under_the_name_is_not_believed(
    embedded_ledger: Ledger, database: Database
) -> None:
    """A lying storage node answers the manifest's name with another manifest (of a
    bigger file): the catalog records no size rather than its size."""
    real, fake = manifest_bytes(1_000), manifest_bytes(9_999)
    liar = FastAPI()

    @liar.get("/shares/{name}")
    def share(name: str) -> Response:
        return Response(fake, media_type="application/octet-stream")

    node = ThreadServer(lambda: liar, "liar").start()
    try:
        ix = Indexer(embedded_ledger, database, MetadataResolver([node.url], allow_private=True))
        publish(embedded_ledger, manifest_hash=hashlib.sha256(real).digest())
        ix.sync()
        assert ix.retry_sizes() == 0
        assert search(database, SearchQuery(include_inactive=True)).items[0].size is None
    finally:
        node.stop()


def test_an_older_database_gains_the_new_columns(embedded_ledger: Ledger, tmp_path: Path) -> None:
    """A catalog database made before `dp` and `size` existed is brought up to date on
    opening: the DP flag from the metadata it holds, the size left to be fetched."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = Database(url)
    ix = Indexer(embedded_ledger, database)
    raw_meta = meta(differential_privacy=True)
    ix.put_metadata(raw_meta)
    publish(embedded_ledger, metadata_hash=hashlib.sha256(raw_meta).digest())
    ix.sync()
    with database.engine.begin() as conn:
        conn.execute(text("ALTER TABLE datasets DROP COLUMN dp"))
        conn.execute(text("ALTER TABLE datasets DROP COLUMN size"))
    database.engine.dispose()
    reopened = Database(url)
    try:
        (item,) = search(reopened, SearchQuery(service="dp")).items
        assert item.differential_privacy and item.size is None
    finally:
        reopened.engine.dispose()
