"""Helpers shared by the storage tests: encode a byte string into an in-memory store;
run storage nodes in threads; a network of registered nodes for storage deals."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount

from datagora.crypto.aead import DataKey
from datagora.crypto.sealed import wrap_data_key
from datagora.ledger import dev_account
from datagora.storage.auth import (
    DEFAULT_CHAIN_ID,
    QuotaBook,
    WritePolicy,
    WriteSigner,
    frame_index_digest,
)
from datagora.storage.manifest import Manifest, VerifiedManifest, verify_manifest
from datagora.storage.node import create_storage_app
from datagora.storage.pipeline import EncodingParams, ManifestBuilder, encode_stream

OWNER = X25519PrivateKey.generate()


@dataclass
class Encoded:
    params: EncodingParams
    key: DataKey
    manifest: Manifest
    verified: VerifiedManifest
    store: dict[bytes, bytes]

    def share(self, chunk: int, number: int) -> bytes:
        return self.store[self.manifest.chunks[chunk].shares[number]]


def encode_bytes(
    data: bytes,
    *,
    chunk_size: int = 64,
    k: int = 3,
    n: int = 5,
    version: int = 1,
    dataset_id: bytes = bytes(range(32)),
    key: DataKey | None = None,
) -> Encoded:
    params = EncodingParams(dataset_id, version, chunk_size=chunk_size, k=k, n=n)
    key = key or DataKey.generate()
    builder = ManifestBuilder(params)
    store: dict[bytes, bytes] = {}
    for chunk in encode_stream(io.BytesIO(data), params, key):
        builder.add(chunk)
        for share in chunk.shares:
            store[share.sha256] = share.data
    manifest = builder.build(wrap_data_key(key, OWNER.public_key(), dataset_id, version))
    return Encoded(
        params, key, manifest, verify_manifest(manifest.to_bytes(), manifest.digest()), store
    )


WRITER = dev_account(1)
"""The account the storage tests write as: it has a quota on every test node."""
QUOTA = 1 << 40


class SigningAuth(httpx.Auth):
    """Signs every PUT as ``account`` (a ``StorageWrite`` in ``x-datagora-write``), so a
    raw httpx client writes to a node as the storage client does."""

    requires_request_body = True

    def __init__(self, account: LocalAccount = WRITER, chain_id: int = DEFAULT_CHAIN_ID) -> None:
        self.signer = WriteSigner(account)
        self.chain_id = chain_id

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        if request.method == "PUT":
            body = request.content
            path = request.url.path
            if path.endswith("/shares"):
                content = frame_index_digest(frame_index(body))
            else:  # the name, as the storage client signs it (the node checks the body)
                last = path.rsplit("/", 1)[-1]
                try:
                    content = bytes.fromhex(last) if len(last) == 64 else b""
                except ValueError:
                    content = b""
                if len(content) != 32:
                    content = hashlib.sha256(body).digest()
            node = f"{request.url.scheme}://{request.url.netloc.decode()}"
            request.headers.update(
                self.signer.header(node, "PUT", path, content, len(body), self.chain_id)
            )
        yield request


def frame_index(body: bytes) -> list[tuple[bytes, int]]:
    """The (name, length) entries of a batch frame, as far as it parses."""
    entries: list[tuple[bytes, int]] = []
    at = 8
    while at + 36 <= len(body):
        name, length = body[at : at + 32], int.from_bytes(body[at + 32 : at + 36], "big")
        entries.append((name, length))
        at += 36 + length
    return entries


def grant(data_dir: Path, account: str = WRITER.address, amount: int = QUOTA) -> None:
    """Give ``account`` a quota on the node keeping its data in ``data_dir``."""
    book = QuotaBook.in_dir(data_dir)
    try:
        book.grant(account, amount)
    finally:
        book.close()


class ThreadNode:
    """A storage node app under a real uvicorn server on a loopback port, in a thread;
    :data:`WRITER` has a quota on it, and its ``with`` client signs as :data:`WRITER`."""

    def __init__(
        self, data_dir: Path, cap: int = 64 << 20, policy: WritePolicy | None = None
    ) -> None:
        self.data_dir = data_dir
        grant(data_dir)
        config = uvicorn.Config(
            create_storage_app(data_dir, cap, policy=policy),
            host="127.0.0.1",
            port=0,
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the storage node did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> httpx.Client:
        self.client = httpx.Client(base_url=self.start(), timeout=10, auth=SigningAuth())
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.stop()


@dataclass
class StoredDataset:
    """A dataset uploaded to some of a :class:`DealNetwork`'s nodes and published."""

    dataset: int
    payload: bytes
    key: DataKey
    manifest_hash: bytes
    holders: list[str]


class DealNetwork:
    """Storage nodes in threads, each registered in the NodeRegistry (storage role)
    with development account ``5 + i``, funded with market tokens, and an owner
    (:data:`WRITER`, development account 1) as an SDK :class:`~datagora.sdk.Market`
    with market tokens: the set-up of a storage deal test. Built by the
    ``deal_network`` fixture (tests/storage/conftest.py)."""

    def __init__(self, ledger: Any, base: Path, count: int) -> None:
        from datagora.ledger import Role
        from datagora.market import Endpoints
        from datagora.node.connect import dev_identity
        from datagora.node.registration import DevNode, register_dev_nodes
        from datagora.sdk import Market

        self.ledger = ledger
        self.base = base
        self.nodes = [ThreadNode(base / f"node{i}") for i in range(count)]
        for node in self.nodes:
            node.start()
        self.urls = [n.url for n in self.nodes]
        self.accounts = {url: dev_account(5 + i) for i, url in enumerate(self.urls)}
        register_dev_nodes(ledger, [DevNode(a, Role.STORAGE, u) for u, a in self.accounts.items()])
        for account in [*self.accounts.values(), WRITER]:
            ledger.market_token.mint(dev_account(0), account.address, 10**21)
        self.owner = Market(ledger, Endpoints(storage=self.urls), dev_identity(1))

    def node(self, url: str) -> ThreadNode:
        return self.nodes[self.urls.index(url)]

    def store(self, on: list[int], size: int = 40_000, k: int = 2, n: int = 3) -> StoredDataset:
        """Upload ``size`` random bytes to the nodes ``on`` (indexes) and publish them."""
        from datagora.ledger import Pricing, PublishParams
        from datagora.storage.client import StorageClient
        from datagora.storage.pipeline import new_dataset_id

        urls = [self.urls[i] for i in on]
        src = self.base / f"in-{len(list(self.base.glob('in-*')))}.bin"
        payload = os.urandom(size)
        src.write_bytes(payload)
        key = DataKey.generate()
        params = EncodingParams(new_dataset_id(), 1, chunk_size=8192, k=k, n=n)
        result = StorageClient(urls, signer=WRITER).upload(src, params, key, OWNER.public_key())
        published = self.ledger.factory.publish(
            WRITER,
            PublishParams(
                metadata_hash=hashlib.sha256(src.name.encode()).digest(),
                metadata_uri="https://example.org/meta.json",
                manifest_hash=result.manifest_hash,
                merkle_root=result.root,
                pricing=Pricing.NONE,
                price=0,
                market_fee_bps=0,
                market_fee_recipient=dev_account(3).address,
                dispenser_max_per_address=0,
            ),
        )
        holders = sorted({u for locs in result.placement.locations.values() for u in locs})
        return StoredDataset(published.dataset, payload, key, result.manifest_hash, holders)

    def open_deal(self, stored: StoredDataset, terms: Any) -> int:
        """A deal paying every node holding ``stored``; each joins (posts collateral)."""
        deal = self.owner.open_storage_deal(
            stored.dataset, {u: self.accounts[u].address for u in stored.holders}, terms
        )
        for url in stored.holders:
            self.prover(url).join(deal)
        return int(deal)

    def prover(self, url: str) -> Any:
        from datagora.market.deals import node_prover

        return node_prover(self.owner, self.node(url).data_dir, self.accounts[url])

    def advance_to(self, block: int) -> None:
        while self.ledger.chain.block_number < block:
            self.ledger.chain.advance_time(1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
