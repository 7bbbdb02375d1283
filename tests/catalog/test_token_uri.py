"""tokenURI a wallet can fetch (issue 15, metadata): the deployer points DataNFT.tokenURI at
the catalog's /nft/, and what a wallet fetches there is ERC-721 metadata JSON."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import pytest
from eth_utils import keccak

from datagora.catalog.api import create_catalog_app
from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.ledger import Ledger
from datagora.ledger.errors import NotAuthorized
from datagora.node.inprocess import ThreadServer
from datagora.storage.metadata import build_metadata
from helpers import DEPLOYER, OTHER, publish

BATCH_METADATA_UPDATE = keccak(text="BatchMetadataUpdate(uint256,uint256)")


def test_token_uri_is_a_url_serving_erc721_metadata(ledger: Ledger, tmp_path: Path) -> None:
    raw = build_metadata(
        {
            "title": "Wallet-visible cohort",
            "description": "rows a wallet can describe",
            "license": "CC-BY-4.0",
            "creator": "test",
            "tags": ["medical"],
            "services": [{"id": 0, "type": "download"}],
        }
    ).to_bytes()
    indexer = Indexer(ledger, Database(f"sqlite:///{tmp_path / 'c.db'}"))
    indexer.put_metadata(raw)
    d = publish(ledger, metadata_hash=hashlib.sha256(raw).digest()).dataset
    nft = ledger.data_nft
    assert nft.token_uri(d) == "https://example.org/meta.json"  # no base URI: as recorded
    server = ThreadServer(lambda: create_catalog_app(indexer, poll_interval=0.05), "catalog")
    server.start()
    try:
        with pytest.raises(NotAuthorized):
            nft.set_base_uri(OTHER, "https://evil.example/")
        tx = nft.set_base_uri(DEPLOYER, f"{server.url}/nft/")
        receipt = ledger.chain.transaction_receipt(tx.tx_hash)
        assert any(bytes(log["topics"][0]) == BATCH_METADATA_UPDATE for log in receipt["logs"])
        uri = nft.token_uri(d)
        assert uri == f"{server.url}/nft/{d}"
        # What a wallet does: fetch the URI, read ERC-721 metadata JSON.
        deadline = time.monotonic() + 20
        while (response := httpx.get(uri)).status_code == 404:
            assert time.monotonic() < deadline, "the catalog never indexed the dataset"
            time.sleep(0.05)
        assert response.status_code == 200
        doc = response.json()
        assert doc["name"] == "Wallet-visible cohort"
        assert doc["description"] == "rows a wallet can describe"
        assert doc["external_url"] == f"{server.url}/datasets/{d}"
        assert {"trait_type": "license", "value": "CC-BY-4.0"} in doc["attributes"]
        assert {"trait_type": "tag", "value": "medical"} in doc["attributes"]
        assert doc["properties"]["metadata_hash"] == hashlib.sha256(raw).hexdigest()
        assert httpx.get(f"{server.url}/nft/{d + 1000}").status_code == 404
        assert httpx.get(f"{server.url}/nft/-1").status_code == 422
    finally:
        server.stop()
    nft.set_base_uri(DEPLOYER, "")
    assert nft.token_uri(d) == "https://example.org/meta.json"
