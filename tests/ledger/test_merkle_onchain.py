"""Share inclusion proofs verify on chain exactly as they do in Python."""

from __future__ import annotations

import hashlib

from datagora.ledger import Ledger, Pricing
from datagora.storage.merkle import MerkleTree, verify_inclusion
from helpers import OWNER, h, publish


def _shares(n: int) -> list[bytes]:
    return [hashlib.sha256(f"share {i}".encode()).digest() for i in range(n)]


def test_every_proof_verifies_on_chain_for_many_tree_sizes(embedded_ledger: Ledger) -> None:
    verifier = embedded_ledger.merkle
    for size in (1, 2, 3, 5, 6, 7, 8, 13, 24, 33):
        leaves = _shares(size)
        tree = MerkleTree(leaves)
        for i in range(size):
            proof = tree.proof(i)
            assert verify_inclusion(leaves[i], proof, tree.root)
            assert verifier.verify(leaves[i], i, size, list(proof.path), tree.root)
            # Wrong leaf, wrong index, wrong root, truncated path: refused on chain too.
            assert not verifier.verify(h("other"), i, size, list(proof.path), tree.root)
            if size > 1:
                assert not verifier.verify(
                    leaves[i], (i + 1) % size, size, list(proof.path), tree.root
                )
                assert not verifier.verify(leaves[i], i, size, list(proof.path)[:-1], tree.root)
            assert not verifier.verify(leaves[i], i, size, list(proof.path), h("root"))
        assert not verifier.verify(leaves[0], size, size, [], tree.root)


def test_verify_against_the_root_on_the_ledger(ledger: Ledger) -> None:
    leaves = _shares(12)
    tree = MerkleTree(leaves)
    pub = publish(ledger, Pricing.NONE, merkle_root=tree.root)
    proof = tree.proof(5)
    assert ledger.merkle.verify_for_dataset(pub.dataset, leaves[5], 5, 12, list(proof.path))
    assert not ledger.merkle.verify_for_dataset(pub.dataset, leaves[4], 5, 12, list(proof.path))
    other = publish(ledger, Pricing.NONE, merkle_root=bytes(32))
    assert not ledger.merkle.verify_for_dataset(other.dataset, leaves[5], 5, 12, list(proof.path))
    assert ledger.data_nft.controller(pub.dataset) == OWNER.address
