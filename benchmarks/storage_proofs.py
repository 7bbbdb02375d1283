"""What a proof of data possession costs: one period's proof for one node, on the
embedded chain, answered by :class:`datagora.storage.deals.DealProver` from a
really encoded dataset (at most ``_MAX_MB`` MB of it, in memory: each doubling of
the dataset adds one hash to each challenge's path, about 1.2k gas a challenge).
"""

from __future__ import annotations

import io
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from datagora.crypto.aead import DataKey
from datagora.crypto.sealed import wrap_data_key
from datagora.ledger import Ledger, PublishParams, dev_account
from datagora.ledger.deals import DealTerms
from datagora.storage.deals import (
    DEFAULT_CHALLENGES,
    DealProver,
    ShareList,
    deal_layout,
    detection_probability,
)
from datagora.storage.manifest import verify_manifest
from datagora.storage.pipeline import EncodingParams, ManifestBuilder, encode_stream, new_dataset_id

_MB = 1 << 20
_MAX_MB = 32


def measure_proofs(
    size_mb: int, chunk_size: int, k: int, n: int, challenges: int = DEFAULT_CHALLENGES
) -> dict[str, Any]:
    """Returns ``{"proof_gas", "proof_ms", "challenge_blocks",
    "detect_p_1pct_30_periods", "proof_dataset_mb"}``."""
    dataset_mb = max(1, min(size_mb, _MAX_MB))
    params = EncodingParams(new_dataset_id(), 1, chunk_size=chunk_size, k=k, n=n)
    key = DataKey.generate()
    builder = ManifestBuilder(params)
    store: dict[bytes, bytes] = {}
    for chunk in encode_stream(io.BytesIO(os.urandom(dataset_mb * _MB)), params, key):
        builder.add(chunk)
        store[chunk.shares[0].sha256] = chunk.shares[0].data  # node 0: share 0 of each
    owner_key = X25519PrivateKey.generate().public_key()
    manifest = builder.build(wrap_data_key(key, owner_key, params.dataset_id, 1))
    verified = verify_manifest(manifest.to_bytes(), manifest.digest())
    from datagora.ledger import Role
    from datagora.node.registration import DevNode, register_dev_nodes

    ledger = Ledger.embedded()
    assert ledger.deals is not None
    owner, node = dev_account(1), dev_account(5)
    # A deal's nodes must be active storage nodes in the NodeRegistry.
    register_dev_nodes(ledger, [DevNode(node, Role.STORAGE, "http://127.0.0.1:7001")])
    published = ledger.factory.publish(
        owner,
        PublishParams(
            metadata_hash=bytes(32 * [1]),
            manifest_hash=verified.digest,
            merkle_root=manifest.merkle_root,
        ),
    )
    prover = DealProver(ledger.deals, node, store.get, lambda _info: verified)
    held: ShareList = prover.held_list(verified)
    terms = DealTerms(10**15, 0, 0, 1, 10, 10, challenges)
    ledger.market_token.mint(dev_account(0), owner.address, 10**18)
    ledger.market_token.approve(owner, ledger.deals.address, terms.price)
    deal, _ = ledger.deals.open_deal(
        owner,
        published.dataset,
        1,
        [(node.address, held.root, held.count)],
        deal_layout(verified),
        terms,
    )
    prover.join(deal)
    info = ledger.deals.deal(deal)
    while ledger.chain.block_number <= info.seed_block(0):
        ledger.chain.advance_time(1)
    answers = prover.answers(deal, 0)
    answer_ms = prover.last_answer_ms
    gas = ledger.deals.prove(node, deal, 0, answers).gas_used
    return {
        "proof_gas": gas,
        "proof_ms": round(answer_ms, 1),
        "challenge_blocks": challenges,
        "detect_p_1pct_30_periods": round(detection_probability(0.01, challenges, 30), 4),
        "proof_dataset_mb": dataset_mb,
    }
