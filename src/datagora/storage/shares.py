"""Share layout (``datagora.share.v2``, and v1), share addressing and verification.

A share is a 58-byte header followed by one erasure-coded block of an encrypted
chunk. Its address (name) commits to the whole share: for a v2 share (magic
``DGS2``) the Merkle root over its 1 KiB blocks (:mod:`datagora.storage.blocks`,
so one block can be proven on chain), for a v1 share (``DGS1``, older manifests)
its SHA-256. The header makes each
share self-describing (a repairer or node can tell what it holds without the
manifest) and globally unique, so equal blocks in two chunks or datasets never
collide on one address.

Bytes from the network become a :class:`VerifiedShare` only here, after their hash
and their position (Merkle proof or manifest entry) have been checked; decoding
accepts nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from datagora.storage.blocks import SHARE_MAGIC_V2, content_address
from datagora.storage.errors import IntegrityError
from datagora.storage.merkle import MerkleProof, verify_inclusion

__all__ = [
    "SHARE_HEADER_SIZE",
    "SHARE_MAGIC",
    "SHARE_MAGICS",
    "Share",
    "ShareHeader",
    "VerifiedShare",
    "parse_share_name",
    "share_name",
    "verify_share",
]

SHARE_MAGIC_V1: Final = b"DGS1"
SHARE_MAGIC: Final = SHARE_MAGIC_V2  # what new shares carry
SHARE_MAGICS: Final = (SHARE_MAGIC_V1, SHARE_MAGIC_V2)
_HEADER: Final = struct.Struct(">4s32sIQHHHI")
SHARE_HEADER_SIZE: Final = _HEADER.size  # 58


@dataclass(frozen=True, slots=True)
class ShareHeader:
    """Where a share belongs: dataset, version, chunk, block number, code, chunk size;
    ``share_format`` 2 (``DGS2``, block-root address) or 1 (``DGS1``, SHA-256)."""

    dataset_id: bytes
    version: int
    chunk_index: int
    share_index: int
    k: int
    n: int
    ciphertext_size: int
    share_format: int = 2

    def pack(self) -> bytes:
        """The 58-byte big-endian header (see ``docs/formats.md``)."""
        return _HEADER.pack(
            SHARE_MAGICS[self.share_format - 1],
            self.dataset_id,
            self.version,
            self.chunk_index,
            self.share_index,
            self.k,
            self.n,
            self.ciphertext_size,
        )

    @classmethod
    def unpack(cls, data: bytes) -> ShareHeader:
        """Parse the header at the start of ``data``; raises :class:`IntegrityError`."""
        if len(data) < SHARE_HEADER_SIZE:
            raise IntegrityError("share is shorter than its header")
        magic, dataset_id, version, chunk, share, k, n, size = _HEADER.unpack_from(data)
        if magic not in SHARE_MAGICS:
            raise IntegrityError("share does not start with a datagora share magic (DGS1, DGS2)")
        if not 1 <= k <= n or share >= n:
            raise IntegrityError("share header has impossible erasure parameters")
        return cls(dataset_id, version, chunk, share, k, n, size, SHARE_MAGICS.index(magic) + 1)


def share_name(data: bytes) -> str:
    """The address of a share as 64 lowercase hex digits (see :func:`content_address`)."""
    return content_address(data).hex()


def parse_share_name(name: str) -> bytes:
    """Turn a share address (64 lowercase hex digits) into its 32-byte hash."""
    if len(name) != 64 or name != name.lower():
        raise IntegrityError("a share name is 64 lowercase hex digits")
    try:
        return bytes.fromhex(name)
    except ValueError:
        raise IntegrityError("a share name is 64 lowercase hex digits") from None


@dataclass(frozen=True, slots=True)
class Share:
    """An encoded share as produced by the encoder: its bytes and their address
    (``sha256`` keeps its historical name; for a v2 share it is the block root)."""

    sha256: bytes
    data: bytes

    @classmethod
    def build(cls, header: ShareHeader, block: bytes | memoryview) -> Share:
        """Assemble header and block and hash the result."""
        data = header.pack() + block
        return cls(content_address(data), data)

    @property
    def name(self) -> str:
        """The share's address (hex SHA-256)."""
        return self.sha256.hex()

    def __repr__(self) -> str:
        return f"Share({self.name[:16]}…, {len(self.data)} bytes)"


_TOKEN: Final = object()


class VerifiedShare:
    """A share whose bytes matched its SHA-256 and whose position was proven.

    Made only by :func:`verify_share` or ``VerifiedManifest.verify_share``.
    """

    __slots__ = ("data", "header", "sha256")

    def __init__(self, token: object, sha256: bytes, header: ShareHeader, data: bytes) -> None:
        if token is not _TOKEN:
            raise TypeError("VerifiedShare is made only by verify_share / verify_manifest")
        self.sha256 = sha256
        self.header = header
        self.data = data

    @property
    def block(self) -> memoryview:
        """The erasure-coded block carried by the share (header stripped; a view, no copy)."""
        return memoryview(self.data)[SHARE_HEADER_SIZE:]

    @property
    def name(self) -> str:
        """The share's address (hex SHA-256)."""
        return self.sha256.hex()

    def __repr__(self) -> str:
        h = self.header
        return f"VerifiedShare(chunk={h.chunk_index}, share={h.share_index}, {self.name[:16]}…)"


def check_share_bytes(data: bytes, expected_sha256: bytes) -> ShareHeader:
    """Check ``data``'s address is ``expected_sha256`` and parse its header."""
    if content_address(data) != expected_sha256:
        raise IntegrityError(f"share {expected_sha256.hex()} does not match its address")
    return ShareHeader.unpack(data)


def _make_verified(sha256: bytes, header: ShareHeader, data: bytes) -> VerifiedShare:
    return VerifiedShare(_TOKEN, sha256, header, data)


def verify_share(
    data: bytes, expected_sha256: bytes, proof: MerkleProof, root: bytes, tree_size: int
) -> VerifiedShare:
    """Verify a share against a Merkle root and leaf count alone (no manifest needed).

    Checks that ``data`` hashes to ``expected_sha256``, that the proof places that
    hash under ``root`` in a tree of ``tree_size`` leaves (chunks × n; the root alone
    does not authenticate the size), and that the proof's leaf index is the one the
    share header claims (``chunk_index * n + share_index``). Raises
    :class:`IntegrityError`.
    """
    header = check_share_bytes(data, expected_sha256)
    if proof.tree_size != tree_size:
        raise IntegrityError(f"proof is for a tree of {proof.tree_size} leaves, not {tree_size}")
    if not verify_inclusion(expected_sha256, proof, root):
        raise IntegrityError(f"share {expected_sha256.hex()} is not proven under the root")
    if proof.leaf_index != header.chunk_index * header.n + header.share_index:
        raise IntegrityError(f"share {expected_sha256.hex()} sits at another leaf than it claims")
    return _make_verified(expected_sha256, header, data)
