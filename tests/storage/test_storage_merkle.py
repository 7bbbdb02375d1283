"""RFC 6962 Merkle tree: compared with a literal transcription of the RFC."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datagora.storage.errors import IntegrityError
from datagora.storage.merkle import (
    MerkleProof,
    MerkleTree,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(leaves: list[bytes]) -> bytes:
    """MTH from RFC 6962 section 2.1, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = _split(len(leaves))
    return hashlib.sha256(b"\x01" + rfc_mth(leaves[:k]) + rfc_mth(leaves[k:])).digest()


def rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) from RFC 6962 section 2.1.1."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return [*rfc_path(m, leaves[:k]), rfc_mth(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), rfc_mth(leaves[:k])]


def leaves_of(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]


def test_hash_prefixes() -> None:
    assert leaf_hash(b"a") == hashlib.sha256(b"\x00a").digest()
    assert node_hash(b"l", b"r") == hashlib.sha256(b"\x01lr").digest()
    assert merkle_root([]) == hashlib.sha256(b"").digest()


def test_known_vector_from_rfc6962_test_data() -> None:
    # The 8-leaf tree of the certificate-transparency reference tests (leaves are
    # the raw byte strings below); its root is published with those tests.
    leaves = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        bytes(range(0x50, 0x58)),
        bytes(range(0x60, 0x70)),
    ]
    assert (
        merkle_root(leaves).hex()
        == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


@pytest.mark.parametrize("n", range(1, 71))
def test_root_and_every_proof_match_the_rfc(n: int) -> None:
    leaves = leaves_of(n)
    tree = MerkleTree(leaves)
    assert tree.size == n
    assert tree.root == rfc_mth(leaves)
    for m in range(n):
        proof = tree.proof(m)
        assert list(proof.path) == rfc_path(m, leaves)
        assert verify_inclusion(leaves[m], proof, tree.root)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 70])
def test_wrong_leaf_index_size_path_or_root_fail(n: int) -> None:
    leaves = leaves_of(n)
    tree = MerkleTree(leaves)
    for m in range(n):
        proof = tree.proof(m)
        assert not verify_inclusion(leaves[(m + 1) % n] + b"x", proof, tree.root)
        if n > 1:
            assert not verify_inclusion(leaves[(m + 1) % n], proof, tree.root)
            other = MerkleProof((m + 1) % n, n, proof.path)
            assert not verify_inclusion(leaves[m], other, tree.root)
        assert not verify_inclusion(leaves[m], MerkleProof(n, n, proof.path), tree.root)
        assert not verify_inclusion(
            leaves[m], MerkleProof(m, n, (*proof.path, bytes(32))), tree.root
        )
        if proof.path:
            assert not verify_inclusion(leaves[m], MerkleProof(m, n, proof.path[:-1]), tree.root)
        assert not verify_inclusion(leaves[m], proof, bytes(32))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_any_flipped_path_bit_fails(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n)
    tree = MerkleTree(leaves)
    m = data.draw(st.integers(0, n - 1))
    proof = tree.proof(m)
    if not proof.path:
        return
    which = data.draw(st.integers(0, len(proof.path) - 1))
    bit = data.draw(st.integers(0, 255))
    entry = bytearray(proof.path[which])
    entry[bit // 8] ^= 1 << (bit % 8)
    path = (*proof.path[:which], bytes(entry), *proof.path[which + 1 :])
    assert not verify_inclusion(leaves[m], MerkleProof(m, n, path), tree.root)


def test_tree_size_is_not_bound_by_the_root_alone() -> None:
    # Why verify_share takes the expected tree size: RFC 6962 proofs authenticate
    # the size only through a signed tree head, so leaf 2 of a 3-leaf tree also
    # "verifies" as leaf 1 of a 2-leaf tree with the same path.
    leaves = leaves_of(3)
    tree = MerkleTree(leaves)
    assert verify_inclusion(leaves[2], MerkleProof(1, 2, tree.proof(2).path), tree.root)


def test_proof_json_round_trip_and_bad_json() -> None:
    tree = MerkleTree(leaves_of(11))
    proof = tree.proof(6)
    assert MerkleProof.from_json(proof.to_json()) == proof
    with pytest.raises(IntegrityError, match="exactly"):
        MerkleProof.from_json({"leaf_index": 1})
    with pytest.raises(IntegrityError, match="types"):
        MerkleProof.from_json({"leaf_index": "1", "tree_size": 2, "path": []})
    with pytest.raises(IntegrityError, match="hex"):
        MerkleProof.from_json({"leaf_index": 1, "tree_size": 2, "path": ["zz" * 32]})
    with pytest.raises(IndexError):
        tree.proof(11)
