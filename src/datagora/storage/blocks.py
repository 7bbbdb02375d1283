"""Share addresses that commit to content block by block (``datagora.share.v2``).

A v2 share's address is the RFC 6962 tree head over its bytes cut into
:data:`BLOCK_SIZE`-byte blocks (the last may be shorter), so any one block can be
proven to belong to the share with a short audit path — which is what the
storage-deal contract checks each period. A v1 share (``DGS1``, manifests of
format version 2) is addressed by the plain SHA-256 of its bytes. Which rule
applies is read from the share's first four bytes. Format: ``docs/formats.md``,
"Shares and share addressing".
"""

from __future__ import annotations

import hashlib
from typing import Final

from datagora.storage.merkle import MerkleProof, MerkleTree, leaf_hash, root_of_hashes

__all__ = [
    "BLOCK_SIZE",
    "SHARE_MAGIC_V2",
    "AddressHasher",
    "block_count",
    "block_proof",
    "block_root",
    "content_address",
]

# 1 KiB: a proof carries the block as calldata (16 gas a byte: ~16k gas at 1 KiB,
# ~65k at 4 KiB) plus one 32-byte hash per tree level (~1k gas each); smaller
# blocks would save calldata but cost 4x the hashing on every upload and read.
BLOCK_SIZE: Final = 1024
SHARE_MAGIC_V2: Final = b"DGS2"


def block_count(length: int) -> int:
    """Blocks in a share of ``length`` bytes (at least one)."""
    return max(1, -(-length // BLOCK_SIZE))


def _blocks(data: bytes | memoryview) -> list[memoryview]:
    view = memoryview(data)
    return [view[i : i + BLOCK_SIZE] for i in range(0, max(len(view), 1), BLOCK_SIZE)]


def block_root(data: bytes | memoryview) -> bytes:
    """The RFC 6962 tree head over ``data``'s blocks."""
    return MerkleTree(_blocks(data)).root


def block_proof(data: bytes | memoryview, index: int) -> tuple[bytes, MerkleProof, bytes]:
    """Block ``index`` of ``data``, its audit path, and the :func:`block_root` it leads to."""
    blocks = _blocks(data)
    tree = MerkleTree(blocks)
    return bytes(blocks[index]), tree.proof(index), tree.root


def content_address(data: bytes | memoryview) -> bytes:
    """The address of a blob: the block root for a v2 share, else its SHA-256."""
    if bytes(data[:4]) == SHARE_MAGIC_V2:
        return block_root(data)
    return hashlib.sha256(data).digest()


class AddressHasher:
    """:func:`content_address` computed as the bytes stream in."""

    __slots__ = ("_head", "_leaves", "_pending", "_sha")

    def __init__(self) -> None:
        self._head = b""
        self._sha: hashlib._Hash | None = hashlib.sha256()
        self._leaves: list[bytes] | None = []
        self._pending = b""

    def update(self, data: bytes | memoryview) -> None:
        if len(self._head) < 4:
            self._head += bytes(data[: 4 - len(self._head)])
            if len(self._head) == 4:
                if self._head == SHARE_MAGIC_V2:
                    self._sha = None
                else:
                    self._leaves = None
        if self._sha is not None:
            self._sha.update(data)
        if self._leaves is not None:
            buf = self._pending + bytes(data) if self._pending else memoryview(data)
            whole = len(buf) - len(buf) % BLOCK_SIZE
            self._leaves.extend(
                leaf_hash(buf[i : i + BLOCK_SIZE]) for i in range(0, whole, BLOCK_SIZE)
            )
            self._pending = bytes(buf[whole:])

    def digest(self) -> bytes:
        if self._leaves is not None and self._head == SHARE_MAGIC_V2:
            leaves = self._leaves + ([leaf_hash(self._pending)] if self._pending else [])
            return root_of_hashes(leaves)
        assert self._sha is not None
        return self._sha.digest()
