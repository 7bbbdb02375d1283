"""RFC 6962 (Certificate Transparency) Merkle trees over share hashes.

Hashes: ``leaf = SHA-256(0x00 || leaf_bytes)`` and
``node = SHA-256(0x01 || left || right)``; a list of ``n > 1`` leaves is split at
the largest power of two smaller than ``n``. In datagora the leaf bytes are the
32-byte SHA-256 of a share, in chunk-major order (leaf ``chunk * n + share``).
Audit paths are ordered from the leaf's sibling up to the root's child and are
verified with the algorithm of RFC 9162 section 2.1.3.2, which is simple enough
to run on chain. Format details: ``docs/formats.md``, "Merkle tree and proofs".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from datagora.storage.errors import IntegrityError

__all__ = [
    "MerkleProof",
    "MerkleTree",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "root_of_hashes",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
_EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes | memoryview) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True, slots=True)
class MerkleProof:
    """An inclusion proof: the audit path of leaf ``leaf_index`` in a tree of ``tree_size``."""

    leaf_index: int
    tree_size: int
    path: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"leaf_index", "tree_size", "path": [hex, ...]}``."""
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "path": [h.hex() for h in self.path],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> MerkleProof:
        """Parse the dict form made by :meth:`to_json`; raises :class:`IntegrityError`."""
        if not isinstance(obj, Mapping) or set(obj) != {"leaf_index", "tree_size", "path"}:
            raise IntegrityError("a Merkle proof needs exactly leaf_index, tree_size and path")
        index, size, path = obj["leaf_index"], obj["tree_size"], obj["path"]
        if type(index) is not int or type(size) is not int or not isinstance(path, list):
            raise IntegrityError("Merkle proof fields have the wrong types")
        hashes = []
        for item in path:
            if not isinstance(item, str) or len(item) != 2 * HASH_SIZE:
                raise IntegrityError("Merkle proof path entries must be 64 hex digits")
            try:
                hashes.append(bytes.fromhex(item))
            except ValueError:
                raise IntegrityError("Merkle proof path entries must be hex") from None
        return cls(index, size, tuple(hashes))


class MerkleTree:
    """An RFC 6962 tree kept level by level, so that proofs cost O(log n).

    Building bottom-up and promoting an unpaired last node unchanged gives exactly
    RFC 6962's recursive split at the largest power of two.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaves: Sequence[bytes] | Sequence[memoryview]) -> None:
        level = [leaf_hash(leaf) for leaf in leaves]
        self._levels = [level]
        while len(level) > 1:
            nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self._levels.append(nxt)
            level = nxt

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    @property
    def root(self) -> bytes:
        """The tree head; ``SHA-256("")`` for an empty tree, as RFC 6962 defines."""
        return self._levels[-1][0] if self.size else _EMPTY_ROOT

    def proof(self, leaf_index: int) -> MerkleProof:
        """The audit path of ``leaf_index`` (RFC 6962 ``PATH``)."""
        if not 0 <= leaf_index < self.size:
            raise IndexError(f"leaf {leaf_index} is outside a tree of {self.size} leaves")
        path = []
        index = leaf_index
        for level in self._levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index >>= 1
        return MerkleProof(leaf_index, self.size, tuple(path))


def root_of_hashes(level: list[bytes]) -> bytes:
    """The RFC 6962 tree head over leaves already hashed with :func:`leaf_hash`."""
    if not level:
        return _EMPTY_ROOT
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 tree head of ``leaves``."""
    return MerkleTree(leaves).root


def verify_inclusion(leaf: bytes, proof: MerkleProof, root: bytes) -> bool:
    """True if ``leaf`` (the leaf bytes, not yet hashed) sits at ``proof.leaf_index``
    of a tree of ``proof.tree_size`` leaves whose head is ``root`` (RFC 9162 2.1.3.2)."""
    if not 0 <= proof.leaf_index < proof.tree_size:
        return False
    if any(len(h) != HASH_SIZE for h in proof.path):
        return False
    fn, sn = proof.leaf_index, proof.tree_size - 1
    r = leaf_hash(leaf)
    for p in proof.path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # Skip the levels where this node was promoted without a sibling.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
