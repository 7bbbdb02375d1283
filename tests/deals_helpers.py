"""Helpers for storage-deal tests: a real encoded dataset published on the ledger,
nodes holding columns of its shares in memory, and a deal between them."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount

from datagora.crypto.aead import DataKey
from datagora.crypto.sealed import wrap_data_key
from datagora.ledger import Ledger, Pricing, Role, dev_account
from datagora.ledger.deals import DealTerms, StorageDeals
from datagora.storage.deals import DealProver, ShareList, deal_layout
from datagora.storage.manifest import VerifiedManifest, verify_manifest
from datagora.storage.pipeline import EncodingParams, ManifestBuilder, encode_stream
from helpers import OWNER, fund, h, publish

NODES = [dev_account(5), dev_account(6), dev_account(7)]
PRICE = 10**15
COLLATERAL = 10**17
SLASH = 10**16


@dataclass
class Held:
    """One node's shares, in memory; ``drop`` loses blocks silently."""

    shares: dict[bytes, bytes] = field(default_factory=dict)

    def read(self, address: bytes) -> bytes | None:
        return self.shares.get(address)

    def drop_block(self, address: bytes, block: int) -> None:
        data = bytearray(self.shares[address])
        data[block * 1024 : (block + 1) * 1024] = bytes(
            len(data[block * 1024 : (block + 1) * 1024])
        )
        self.shares[address] = bytes(data)


@dataclass
class Setup:
    ledger: Ledger
    deals: StorageDeals
    dataset: int
    verified: VerifiedManifest
    held: list[Held]
    provers: list[DealProver]
    lists: list[ShareList]


def encode(
    size: int = 20_000, chunk_size: int = 4096, k: int = 2, n: int = 3
) -> tuple[VerifiedManifest, dict[bytes, bytes]]:
    params = EncodingParams(bytes(range(32)), 1, chunk_size=chunk_size, k=k, n=n)
    key = DataKey.generate()
    builder = ManifestBuilder(params)
    store: dict[bytes, bytes] = {}
    for chunk in encode_stream(io.BytesIO(os.urandom(size)), params, key):
        builder.add(chunk)
        for share in chunk.shares:
            store[share.sha256] = share.data
    wrapped = wrap_data_key(key, X25519PrivateKey.generate().public_key(), params.dataset_id, 1)
    manifest = builder.build(wrapped)
    return verify_manifest(manifest.to_bytes(), manifest.digest()), store


def setup(ledger: Ledger, owner: LocalAccount = OWNER) -> Setup:
    """A published dataset whose share ``j`` of every chunk is held by node ``j``."""
    assert ledger.deals is not None
    verified, store = encode()
    m = verified.manifest
    dataset = publish(
        ledger,
        Pricing.NONE,
        owner=owner,
        manifest_hash=verified.digest,
        merkle_root=m.merkle_root,
        metadata_hash=h("deal metadata"),
    ).dataset
    held = [Held() for _ in NODES]
    for chunk in m.chunks:
        for j, address in enumerate(chunk.shares):
            held[j].shares[address] = store[address]
    provers = [
        DealProver(ledger.deals, node, held[j].read, lambda _info: verified)
        for j, node in enumerate(NODES)
    ]
    lists = [p.held_list(verified) for p in provers]
    for j, node in enumerate(NODES):
        fund(ledger, node.address)
        # A deal's nodes must be active storage nodes of the deployment's registry.
        if not ledger.registry.is_active(node.address, Role.STORAGE):
            ledger.registry.register(node, Role.STORAGE, f"http://deal-node-{j}.test:1", 10**19)
    fund(ledger, owner.address)
    return Setup(ledger, ledger.deals, dataset, verified, held, provers, lists)


def terms(**overrides: int) -> DealTerms:
    values = {
        "price": PRICE,
        "collateral": COLLATERAL,
        "slash": SLASH,
        "periods": 3,
        "period_blocks": 20,
        "grace_blocks": 10,
        "challenges": 16,
    }
    values.update(overrides)
    return DealTerms(**values)


def open_deal(s: Setup, t: DealTerms, owner: LocalAccount = OWNER) -> int:
    escrow = t.price * t.periods * len(NODES)
    s.ledger.market_token.approve(owner, s.deals.address, escrow)
    deal, _ = s.deals.open_deal(
        owner,
        s.dataset,
        s.ledger.data_nft.get_dataset(s.dataset).version,
        [(n.address, lst.root, lst.count) for n, lst in zip(NODES, s.lists, strict=True)],
        deal_layout(s.verified),
        t,
    )
    return deal


def mine_to(ledger: Ledger, block: int) -> None:
    """Mine empty blocks until the chain's head is ``block``."""
    while ledger.chain.block_number < block:
        ledger.chain.advance_time(1)
