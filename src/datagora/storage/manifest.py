"""The dataset-version manifest (``datagora.manifest``, format version 3; 2 still read).

Version 3 lists ``datagora.share.v2`` shares, addressed by the Merkle root over
their 1 KiB blocks (so the dataset root commits to every block, and a block can be
proven on chain); version 2 lists ``datagora.share.v1`` shares addressed by SHA-256.

A manifest describes one encoded dataset version: sizes, chunking, cipher, erasure
code, the share hashes of every chunk, their Merkle root, and the data key wrapped
for the owner. Where shares are placed is *not* in it (placement changes on repair,
the manifest hash on chain never does): see :mod:`datagora.storage.placement`.
It is serialised as canonical JSON (sorted keys, no whitespace, ASCII only,
integers only) so that its SHA-256 — its address and the hash recorded on chain —
is stable. Parsing is strict: unknown or missing fields, duplicate keys,
non-canonical bytes and inconsistent sizes are all refused. The schema is in
``docs/formats.md``, "Manifest".

Code downstream takes a :class:`VerifiedManifest`, which only
:func:`verify_manifest` makes, after checking the bytes against an expected hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from datagora.crypto import pre
from datagora.crypto.aead import DATASET_ID_SIZE, MAX_VERSION, TAG_SIZE
from datagora.crypto.sealed import WRAP_SCHEME, WrappedKey
from datagora.errors import DatagoraError
from datagora.storage.blocks import BLOCK_SIZE
from datagora.storage.canonical import (
    canonical_json,
    check_fields,
    check_hex,
    check_int,
    loads_strict,
)
from datagora.storage.erasure import check_parameters
from datagora.storage.errors import ErasureError, IntegrityError, ManifestError
from datagora.storage.merkle import MerkleProof, MerkleTree
from datagora.storage.shares import (
    ShareHeader,
    VerifiedShare,
    _make_verified,
    check_share_bytes,
)

__all__ = [
    "CHUNK_FORMAT",
    "CIPHER",
    "CODEC",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_CHUNK_SIZE",
    "MAX_MANIFEST_BYTES",
    "MERKLE_SCHEME",
    "SHARE_FORMAT",
    "ChunkRecord",
    "Manifest",
    "VerifiedManifest",
    "chunk_count",
    "verify_manifest",
]

# The data key in a manifest is wrapped either to the owner's X25519 key (sealed
# box) or, for datasets shared through proxies, with Umbral to the owner's
# delegating key for this version (docs/sharing.md).
UMBRAL_WRAP_SCHEME: Final = "umbral-pre-v1"
AnyWrappedKey = WrappedKey | pre.WrappedKey

FORMAT: Final = "datagora.manifest"
FORMAT_VERSION: Final = 3
READ_VERSIONS: Final = (2, 3)
CIPHER: Final = "AES-256-GCM"
CHUNK_FORMAT: Final = "datagora.chunk.v1"
CODEC: Final = "zfec"
SHARE_FORMAT: Final = "datagora.share.v2"
SHARE_FORMATS: Final = {2: "datagora.share.v1", 3: "datagora.share.v2"}
MERKLE_SCHEME: Final = "rfc6962-sha256"
MAX_CHUNK_SIZE: Final = 256 * 1024 * 1024
MAX_MANIFEST_BYTES: Final = 64 * 1024 * 1024


def chunk_count(plaintext_size: int, chunk_size: int) -> int:
    """Chunks in a version: ``ceil(size / chunk_size)``, and 1 for an empty file
    (an empty final chunk still carries the end-of-stream authentication)."""
    return max(1, -(-plaintext_size // chunk_size))


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One chunk in a manifest: its ciphertext size and its ``n`` share hashes (in order)."""

    ciphertext_size: int
    shares: tuple[bytes, ...]


@dataclass(frozen=True)
class Manifest:
    """A dataset-version manifest. Build with :meth:`create`, which derives the root
    and checks consistency; parse untrusted bytes with :func:`verify_manifest`."""

    dataset_id: bytes
    version: int
    plaintext_size: int
    chunk_size: int
    k: int
    n: int
    chunks: tuple[ChunkRecord, ...]
    merkle_root: bytes
    wrapped_key: AnyWrappedKey
    format_version: int = FORMAT_VERSION
    _index: dict[bytes, tuple[int, int]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        try:
            self._validate()
        except (ErasureError, IntegrityError) as exc:
            raise ManifestError(str(exc)) from None

    @classmethod
    def create(
        cls,
        *,
        dataset_id: bytes,
        version: int,
        plaintext_size: int,
        chunk_size: int,
        k: int,
        n: int,
        chunks: Sequence[ChunkRecord],
        wrapped_key: AnyWrappedKey,
        format_version: int = FORMAT_VERSION,
    ) -> Manifest:
        """Make a manifest, computing the Merkle root over the share addresses."""
        root = MerkleTree([h for c in chunks for h in c.shares]).root
        return cls(
            dataset_id=dataset_id,
            version=version,
            plaintext_size=plaintext_size,
            chunk_size=chunk_size,
            k=k,
            n=n,
            chunks=tuple(chunks),
            merkle_root=root,
            wrapped_key=wrapped_key,
            format_version=format_version,
        )

    @property
    def share_format(self) -> int:
        """The share format this manifest lists: 2 (block roots) or 1 (SHA-256)."""
        return 1 if self.format_version == 2 else 2

    def _validate(self) -> None:
        if self.format_version not in READ_VERSIONS:
            raise ManifestError(f"manifest format_version {self.format_version} is not supported")
        if not isinstance(self.dataset_id, bytes) or len(self.dataset_id) != DATASET_ID_SIZE:
            raise ManifestError(f"dataset_id must be {DATASET_ID_SIZE} bytes")
        check_int("version", self.version, 0, MAX_VERSION)
        check_int("plaintext_size", self.plaintext_size, 0, 2**63 - 1)
        check_int("chunk_size", self.chunk_size, 1, MAX_CHUNK_SIZE)
        check_parameters(self.k, self.n)
        expected = chunk_count(self.plaintext_size, self.chunk_size)
        if len(self.chunks) != expected:
            raise ManifestError(
                f"{self.plaintext_size} bytes in chunks of {self.chunk_size} make "
                f"{expected} chunks, but the manifest lists {len(self.chunks)}"
            )
        index = self._index
        remaining = self.plaintext_size
        for i, chunk in enumerate(self.chunks):
            want = min(self.chunk_size, remaining) + TAG_SIZE
            remaining -= want - TAG_SIZE
            if chunk.ciphertext_size != want:
                raise ManifestError(
                    f"chunk {i}: ciphertext_size is {chunk.ciphertext_size}, expected {want}"
                )
            if len(chunk.shares) != self.n:
                raise ManifestError(f"chunk {i}: lists {len(chunk.shares)} shares, n is {self.n}")
            for j, h in enumerate(chunk.shares):
                if not isinstance(h, bytes) or len(h) != 32:
                    raise ManifestError(f"chunk {i} share {j}: a share hash is 32 bytes")
                if h in index:
                    raise ManifestError(f"share {h.hex()} is listed twice")
                index[h] = (i, j)
        root = MerkleTree([h for c in self.chunks for h in c.shares]).root
        if root != self.merkle_root:
            raise ManifestError("merkle root does not match the share hashes")

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dict (the schema of ``docs/formats.md``)."""
        merkle: dict[str, Any] = {"scheme": MERKLE_SCHEME, "root": self.merkle_root.hex()}
        if self.format_version >= 3:
            merkle["block_size"] = BLOCK_SIZE
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "dataset_id": self.dataset_id.hex(),
            "version": self.version,
            "plaintext_size": self.plaintext_size,
            "chunk_size": self.chunk_size,
            "cipher": {"algorithm": CIPHER, "chunk_format": CHUNK_FORMAT},
            "erasure": {
                "codec": CODEC,
                "k": self.k,
                "n": self.n,
                "share_format": SHARE_FORMATS[self.format_version],
            },
            "merkle": merkle,
            "chunks": [
                {"ciphertext_size": c.ciphertext_size, "shares": [h.hex() for h in c.shares]}
                for c in self.chunks
            ],
            "key_wrap": _wrap_json(self.wrapped_key),
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes; their SHA-256 is the manifest's address."""
        return canonical_json(self.to_json())

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes` (what goes on chain)."""
        return hashlib.sha256(self.to_bytes()).digest()

    def share_position(self, sha256: bytes) -> tuple[int, int] | None:
        """``(chunk_index, share_index)`` of a listed share, or None."""
        return self._index.get(sha256)

    def share_hashes(self) -> Iterator[bytes]:
        """Every share hash, in Merkle leaf order (chunk-major)."""
        for chunk in self.chunks:
            yield from chunk.shares


class VerifiedManifest:
    """A manifest whose bytes matched the expected SHA-256 (e.g. from the ledger).

    Made only by :func:`verify_manifest`. Shares checked through :meth:`verify_share`
    are bound to this manifest's root, dataset, version and positions.
    """

    __slots__ = ("_tree", "digest", "manifest")

    def __init__(self, token: object, manifest: Manifest, digest: bytes) -> None:
        if token is not _TOKEN:
            raise TypeError("VerifiedManifest is made only by verify_manifest")
        self.manifest = manifest
        self.digest = digest
        self._tree: MerkleTree | None = None

    def expected_header(self, chunk_index: int, share_index: int) -> ShareHeader:
        """The header a share at this position must carry."""
        m = self.manifest
        return ShareHeader(
            m.dataset_id,
            m.version,
            chunk_index,
            share_index,
            m.k,
            m.n,
            m.chunks[chunk_index].ciphertext_size,
            m.share_format,
        )

    def verify_share(self, chunk_index: int, share_index: int, data: bytes) -> VerifiedShare:
        """Check ``data`` is share ``share_index`` of chunk ``chunk_index``.

        The manifest's share hashes were checked against its Merkle root when it was
        verified, so a hash match here also proves the share under the root.
        Raises :class:`IntegrityError`.
        """
        m = self.manifest
        if not 0 <= chunk_index < len(m.chunks) or not 0 <= share_index < m.n:
            raise IntegrityError(f"no share {share_index} of chunk {chunk_index} in this manifest")
        expected = m.chunks[chunk_index].shares[share_index]
        header = check_share_bytes(data, expected)
        if header != self.expected_header(chunk_index, share_index):
            raise IntegrityError(f"share {expected.hex()} carries a header for another position")
        return _make_verified(expected, header, data)

    def proof(self, sha256: bytes) -> MerkleProof:
        """The Merkle proof of a listed share (the tree is built once, on first use)."""
        position = self.manifest.share_position(sha256)
        if position is None:
            raise IntegrityError(f"share {sha256.hex()} is not in this manifest")
        if self._tree is None:
            self._tree = MerkleTree(list(self.manifest.share_hashes()))
        return self._tree.proof(position[0] * self.manifest.n + position[1])


_TOKEN: Final = object()


def verify_manifest(data: bytes, expected_sha256: bytes) -> VerifiedManifest:
    """Check ``data`` against its expected SHA-256, then parse it strictly.

    Raises :class:`ManifestError` with the reason on any mismatch or malformation.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    if hashlib.sha256(data).digest() != expected_sha256:
        raise ManifestError(f"manifest does not match the expected hash {expected_sha256.hex()}")
    return VerifiedManifest(_TOKEN, parse_manifest(data), expected_sha256)


def _const(obj: dict[str, Any], key: str, where: str, value: Any) -> None:
    if obj[key] != value or type(obj[key]) is not type(value):
        raise ManifestError(f"{where}.{key} must be {value!r}, got {obj[key]!r}")


def parse_manifest(data: bytes) -> Manifest:
    """Parse manifest bytes strictly, without a hash check (see :func:`verify_manifest`)."""
    try:
        text = data.decode("ascii")
        obj = loads_strict(text)
    except UnicodeDecodeError:
        raise ManifestError("a manifest is ASCII JSON") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc.msg} at offset {exc.pos}") from None
    top = check_fields(
        obj,
        "manifest",
        {
            "format", "format_version", "dataset_id", "version", "plaintext_size",
            "chunk_size", "cipher", "erasure", "merkle", "chunks", "key_wrap",
        },
    )  # fmt: skip
    _const(top, "format", "manifest", FORMAT)
    version = top["format_version"]
    if version not in READ_VERSIONS or type(version) is not int:
        raise ManifestError(
            f"manifest format_version {version!r} is not supported "
            f"(this datagora reads versions {', '.join(map(str, READ_VERSIONS))})"
        )
    cipher = check_fields(top["cipher"], "cipher", {"algorithm", "chunk_format"})
    _const(cipher, "algorithm", "cipher", CIPHER)
    _const(cipher, "chunk_format", "cipher", CHUNK_FORMAT)
    erasure = check_fields(top["erasure"], "erasure", {"codec", "k", "n", "share_format"})
    _const(erasure, "codec", "erasure", CODEC)
    _const(erasure, "share_format", "erasure", SHARE_FORMATS[version])
    if version >= 3:
        merkle = check_fields(top["merkle"], "merkle", {"scheme", "root", "block_size"})
        _const(merkle, "block_size", "merkle", BLOCK_SIZE)
    else:
        merkle = check_fields(top["merkle"], "merkle", {"scheme", "root"})
    _const(merkle, "scheme", "merkle", MERKLE_SCHEME)
    wrap_obj = top["key_wrap"]
    umbral = isinstance(wrap_obj, dict) and wrap_obj.get("scheme") == UMBRAL_WRAP_SCHEME
    if umbral:
        wrap = check_fields(
            wrap_obj, "key_wrap", {"scheme", "delegating_key", "scope", "capsule", "ciphertext"}
        )
    else:
        wrap = check_fields(wrap_obj, "key_wrap", {"scheme", "recipient", "sealed"})
        _const(wrap, "scheme", "key_wrap", WRAP_SCHEME)
    if not isinstance(top["chunks"], list):
        raise ManifestError("chunks must be a JSON array")
    chunks = []
    for i, raw_chunk in enumerate(top["chunks"]):
        c = check_fields(raw_chunk, f"chunks[{i}]", {"ciphertext_size", "shares"})
        if not isinstance(c["shares"], list):
            raise ManifestError(f"chunks[{i}].shares must be a JSON array")
        chunks.append(
            ChunkRecord(
                check_int(f"chunks[{i}].ciphertext_size", c["ciphertext_size"], 0, 2**32 - 1),
                tuple(
                    check_hex(h, f"chunks[{i}].shares[{j}]", 32) for j, h in enumerate(c["shares"])
                ),
            )
        )
    wrapped: AnyWrappedKey
    try:
        if umbral:
            wrapped = pre.WrappedKey(
                check_hex(wrap["delegating_key"], "key_wrap.delegating_key"),
                check_hex(wrap["scope"], "key_wrap.scope"),
                check_hex(wrap["capsule"], "key_wrap.capsule"),
                check_hex(wrap["ciphertext"], "key_wrap.ciphertext"),
            )
        else:
            wrapped = WrappedKey(
                WRAP_SCHEME,
                check_hex(wrap["recipient"], "key_wrap.recipient"),
                check_hex(wrap["sealed"], "key_wrap.sealed"),
            )
    except DatagoraError as exc:
        raise ManifestError(f"key_wrap: {exc}") from None
    manifest = Manifest(
        dataset_id=check_hex(top["dataset_id"], "dataset_id", DATASET_ID_SIZE),
        version=check_int("version", top["version"], 0, MAX_VERSION),
        plaintext_size=check_int("plaintext_size", top["plaintext_size"], 0, 2**63 - 1),
        chunk_size=check_int("chunk_size", top["chunk_size"], 1, MAX_CHUNK_SIZE),
        k=check_int("erasure.k", erasure["k"], 1, 256),
        n=check_int("erasure.n", erasure["n"], 1, 256),
        chunks=tuple(chunks),
        merkle_root=check_hex(merkle["root"], "merkle.root", 32),
        wrapped_key=wrapped,
        format_version=version,
    )
    if manifest.to_bytes() != data:
        # One manifest, one hash: refuse any other spelling of the same content.
        raise ManifestError("manifest is not in canonical form (sorted keys, no whitespace)")
    return manifest


def _wrap_json(wrapped: AnyWrappedKey) -> dict[str, str]:
    if isinstance(wrapped, pre.WrappedKey):
        return {
            "scheme": UMBRAL_WRAP_SCHEME,
            "delegating_key": wrapped.delegating_key.hex(),
            "scope": wrapped.scope.hex(),
            "capsule": wrapped.capsule.hex(),
            "ciphertext": wrapped.ciphertext.hex(),
        }
    return {
        "scheme": wrapped.scheme,
        "recipient": wrapped.recipient.hex(),
        "sealed": wrapped.sealed.hex(),
    }
