"""The dataset-version manifest (``datagora.manifest``, format versions 3 and 4; 2 still read).

Version 4 is version 3 for large datasets: the share list is not inline but in a
hash tree of manifest pages (:mod:`datagora.storage.pages`), the manifest holding
the top level's page addresses and subtree roots. Its chunk records are known only
as its verified pages are fed, in order, to a :class:`ChunkAssembler`, so a reader
holds a window of them rather than all.

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
from collections.abc import Callable, Iterator, Sequence
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
from datagora.storage.merkle import MerkleProof, MerkleTree, verify_inclusion
from datagora.storage.pages import (
    PageRef,
    PageTree,
    VerifiedPage,
    leaf_proof_sync,
    verify_page,
    walk_leaf_pages_sync,
)
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
    "ChunkAssembler",
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
PAGED_FORMAT_VERSION: Final = 4
READ_VERSIONS: Final = (2, 3, 4)
CIPHER: Final = "AES-256-GCM"
CHUNK_FORMAT: Final = "datagora.chunk.v1"
CODEC: Final = "zfec"
SHARE_FORMAT: Final = "datagora.share.v2"
SHARE_FORMATS: Final = {2: "datagora.share.v1", 3: "datagora.share.v2", 4: "datagora.share.v2"}
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
    tree: PageTree | None = None
    """The page tree of a format-4 manifest (``chunks`` is then empty)."""
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

    @classmethod
    def create_paged(
        cls,
        *,
        dataset_id: bytes,
        version: int,
        plaintext_size: int,
        chunk_size: int,
        k: int,
        n: int,
        leaves_per_page: int,
        fanout: int,
        depth: int,
        entries: Sequence[PageRef],
        wrapped_key: AnyWrappedKey,
    ) -> Manifest:
        """Make a format-4 manifest over pages already written; the Merkle root is
        computed from the entries' subtree roots."""
        from datagora.storage.merkle import root_of_hashes

        tree = PageTree(
            dataset_id,
            version,
            chunk_count(plaintext_size, chunk_size) * n,
            leaves_per_page,
            fanout,
            depth,
            tuple(entries),
        )
        return cls(
            dataset_id=dataset_id,
            version=version,
            plaintext_size=plaintext_size,
            chunk_size=chunk_size,
            k=k,
            n=n,
            chunks=(),
            merkle_root=root_of_hashes([e.root for e in entries]),
            wrapped_key=wrapped_key,
            format_version=PAGED_FORMAT_VERSION,
            tree=tree,
        )

    @property
    def share_format(self) -> int:
        """The share format this manifest lists: 2 (block roots) or 1 (SHA-256)."""
        return 1 if self.format_version == 2 else 2

    @property
    def chunk_count(self) -> int:
        """The number of chunks (whether listed inline or in pages)."""
        return chunk_count(self.plaintext_size, self.chunk_size)

    def ciphertext_size(self, chunk_index: int) -> int:
        """The encrypted size of chunk ``chunk_index`` (every chunk but the last is full)."""
        if not 0 <= chunk_index < self.chunk_count:
            raise IntegrityError(f"chunk {chunk_index} is not in this manifest")
        return min(self.chunk_size, self.plaintext_size - chunk_index * self.chunk_size) + TAG_SIZE

    def _inline(self, what: str) -> None:
        if self.tree is not None:
            raise ManifestError(
                f"{what} needs the whole share list, which a format-4 manifest keeps in "
                "pages: read them with the page walk (datagora.storage.pages)"
            )

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
        if self.format_version == PAGED_FORMAT_VERSION or self.tree is not None:
            tree = self.tree
            if tree is None or self.format_version != PAGED_FORMAT_VERSION or self.chunks:
                raise ManifestError(
                    "a manifest lists its chunks inline (format 2, 3) or in pages (4)"
                )
            if (tree.dataset_id, tree.version) != (self.dataset_id, self.version):
                raise ManifestError("the page tree is for another dataset version")
            if tree.leaf_count != expected * self.n:
                raise ManifestError(
                    f"the page tree holds {tree.leaf_count} leaves, {expected * self.n} expected"
                )
            tree.check(self.merkle_root)
            return
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
            **self._listing(),
            "key_wrap": _wrap_json(self.wrapped_key),
        }

    def _listing(self) -> dict[str, Any]:
        if self.tree is not None:
            t = self.tree
            return {
                "pages": {
                    "leaves_per_page": t.leaves_per_page,
                    "fanout": t.fanout,
                    "depth": t.depth,
                    "entries": [
                        {"address": e.address.hex(), "root": e.root.hex()} for e in t.entries
                    ],
                }
            }
        return {
            "chunks": [
                {"ciphertext_size": c.ciphertext_size, "shares": [h.hex() for h in c.shares]}
                for c in self.chunks
            ]
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes; their SHA-256 is the manifest's address."""
        return canonical_json(self.to_json())

    def digest(self) -> bytes:
        """SHA-256 of :meth:`to_bytes` (what goes on chain)."""
        return hashlib.sha256(self.to_bytes()).digest()

    def share_position(self, sha256: bytes) -> tuple[int, int] | None:
        """``(chunk_index, share_index)`` of a listed share, or None (format 2, 3)."""
        self._inline("looking a share up")
        return self._index.get(sha256)

    def share_hashes(self) -> Iterator[bytes]:
        """Every share hash, in Merkle leaf order (chunk-major) (format 2, 3)."""
        self._inline("listing every share")
        for chunk in self.chunks:
            yield from chunk.shares


class VerifiedManifest:
    """A manifest whose bytes matched the expected SHA-256 (e.g. from the ledger).

    Made only by :func:`verify_manifest`. Shares checked through :meth:`verify_share`
    are bound to this manifest's root, dataset, version and positions.
    """

    __slots__ = ("_held", "_tree", "digest", "manifest")

    def __init__(self, token: object, manifest: Manifest, digest: bytes) -> None:
        if token is not _TOKEN:
            raise TypeError("VerifiedManifest is made only by verify_manifest")
        self.manifest = manifest
        self.digest = digest
        self._tree: MerkleTree | None = None
        # Format 4: the chunk records of the pages fed so far and not yet forgotten.
        self._held: dict[int, ChunkRecord] = {}

    @property
    def paged(self) -> bool:
        """True for a format-4 manifest (chunk records come from its pages)."""
        return self.manifest.tree is not None

    def chunk(self, chunk_index: int) -> ChunkRecord:
        """The record of chunk ``chunk_index``; for a format-4 manifest, its pages
        must have been fed (:class:`ChunkAssembler`) and the chunk not forgotten."""
        m = self.manifest
        if m.tree is None:
            if not 0 <= chunk_index < len(m.chunks):
                raise IntegrityError(f"chunk {chunk_index} is not in this manifest")
            return m.chunks[chunk_index]
        record = self._held.get(chunk_index)
        if record is None:
            raise IntegrityError(f"chunk {chunk_index}: its manifest page was not read")
        return record

    def forget(self, chunk_index: int) -> None:
        """Drop a fed chunk record once it is no longer needed (bounded memory)."""
        self._held.pop(chunk_index, None)

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
            m.ciphertext_size(chunk_index),
            m.share_format,
        )

    def verify_share(self, chunk_index: int, share_index: int, data: bytes) -> VerifiedShare:
        """Check ``data`` is share ``share_index`` of chunk ``chunk_index``.

        The manifest's share hashes were checked against its Merkle root when it was
        verified, so a hash match here also proves the share under the root.
        Raises :class:`IntegrityError`.
        """
        m = self.manifest
        if not 0 <= chunk_index < m.chunk_count or not 0 <= share_index < m.n:
            raise IntegrityError(f"no share {share_index} of chunk {chunk_index} in this manifest")
        expected = self.chunk(chunk_index).shares[share_index]
        header = check_share_bytes(data, expected)
        if header != self.expected_header(chunk_index, share_index):
            raise IntegrityError(f"share {expected.hex()} carries a header for another position")
        return _make_verified(expected, header, data)

    def verify_proven_share(self, address: bytes, proof: MerkleProof, data: bytes) -> VerifiedShare:
        """Check ``data`` is the share at ``proof.leaf_index`` without the chunk's
        record: ``address`` must verify under this manifest's root at that leaf, in a
        tree of ``chunk_count · n`` leaves (so it is the address the pages list), and
        ``data`` must have that address and the header of that position. How a
        reader of a paged manifest checks one share picked at random (an audit).
        Raises :class:`IntegrityError`."""
        m = self.manifest
        if proof.tree_size != m.chunk_count * m.n or not verify_inclusion(
            address, proof, m.merkle_root
        ):
            raise IntegrityError(f"share {address.hex()} is not proven under the manifest's root")
        chunk_index, share_index = divmod(proof.leaf_index, m.n)
        header = check_share_bytes(data, address)
        if header != self.expected_header(chunk_index, share_index):
            raise IntegrityError(f"share {address.hex()} carries a header for another position")
        return _make_verified(address, header, data)

    def proof(self, sha256: bytes) -> MerkleProof:
        """The Merkle proof of a listed share (the tree is built once, on first use)."""
        self.manifest._inline("a share's proof")
        position = self.manifest.share_position(sha256)
        if position is None:
            raise IntegrityError(f"share {sha256.hex()} is not in this manifest")
        if self._tree is None:
            self._tree = MerkleTree(list(self.manifest.share_hashes()))
        return self._tree.proof(position[0] * self.manifest.n + position[1])


_TOKEN: Final = object()


class ChunkAssembler:
    """Turns the verified leaf pages of a paged (format-4) manifest, fed in leaf
    order, into chunk records (a chunk's ``n`` addresses may span two pages).
    With ``hold``, the records are also kept by the manifest for
    :meth:`VerifiedManifest.chunk` until :meth:`VerifiedManifest.forget`."""

    def __init__(self, verified: VerifiedManifest, hold: bool = True) -> None:
        if verified.manifest.tree is None:
            raise TypeError("only a paged (format-4) manifest has pages")
        self.verified = verified
        self.hold = hold
        self._next_leaf = 0
        self._tail = b""

    def feed(self, page: VerifiedPage) -> list[tuple[int, ChunkRecord]]:
        """The chunks completed by the next leaf page."""
        m = self.verified.manifest
        if not isinstance(page, VerifiedPage) or page.level != 0:
            raise TypeError("feed takes verified leaf pages")
        if page.tree != m.tree:
            raise IntegrityError("a manifest page of another manifest was fed")
        if page.first_leaf != self._next_leaf:
            raise IntegrityError(
                f"manifest page for leaf {page.first_leaf} fed, leaf {self._next_leaf} expected"
            )
        data = self._tail + bytes(page.leaves())
        self._next_leaf += page.count
        step = 32 * m.n
        whole = len(data) // step
        first = (self._next_leaf - len(data) // 32) // m.n
        out = []
        for j in range(whole):
            i = first + j
            row = data[j * step : (j + 1) * step]
            record = ChunkRecord(
                m.ciphertext_size(i), tuple(row[s : s + 32] for s in range(0, step, 32))
            )
            out.append((i, record))
            if self.hold:
                self.verified._held[i] = record
        self._tail = data[whole * step :]
        return out


def local_chunk_records(
    verified: VerifiedManifest, read: Callable[[bytes], bytes | None]
) -> Iterator[tuple[int, ChunkRecord]]:
    """A paged manifest's chunk records, its pages read with ``read(address)`` (a
    node's own store), one page at a time. Raises :class:`IntegrityError` for a
    missing or corrupt page."""
    tree = verified.manifest.tree
    if tree is None:
        yield from enumerate(verified.manifest.chunks)
        return
    assembler = ChunkAssembler(verified, hold=False)

    def fetch(ref: PageRef, level: int, first: int, count: int) -> VerifiedPage:
        raw = read(ref.address)
        if raw is None:
            raise IntegrityError(f"manifest page {ref.address.hex()} is not held here")
        return verify_page(raw, ref, tree, level, first, count)

    for page in walk_leaf_pages_sync(tree, fetch):
        yield from assembler.feed(page)


def local_leaf_proof(
    verified: VerifiedManifest, leaf: int, read: Callable[[bytes], bytes | None]
) -> tuple[bytes, MerkleProof]:
    """A paged manifest's share address at ``leaf`` and its proof to the root, its
    pages read with ``read(address)``. Raises :class:`IntegrityError`."""
    tree = verified.manifest.tree
    if tree is None:
        raise TypeError("only a paged (format-4) manifest has pages")

    def fetch(ref: PageRef, level: int, first: int, count: int) -> VerifiedPage:
        raw = read(ref.address)
        if raw is None:
            raise IntegrityError(f"manifest page {ref.address.hex()} is not held here")
        return verify_page(raw, ref, tree, level, first, count)

    return leaf_proof_sync(tree, leaf, fetch)


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
    version = obj.get("format_version") if isinstance(obj, dict) else None
    listing = "pages" if version == PAGED_FORMAT_VERSION else "chunks"
    top = check_fields(
        obj,
        "manifest",
        {
            "format", "format_version", "dataset_id", "version", "plaintext_size",
            "chunk_size", "cipher", "erasure", "merkle", listing, "key_wrap",
        },
    )  # fmt: skip
    _const(top, "format", "manifest", FORMAT)
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
    dataset_id = check_hex(top["dataset_id"], "dataset_id", DATASET_ID_SIZE)
    dataset_version = check_int("version", top["version"], 0, MAX_VERSION)
    tree = None
    if version == PAGED_FORMAT_VERSION:
        tree = _parse_pages(top, dataset_id, dataset_version)
    elif not isinstance(top["chunks"], list):
        raise ManifestError("chunks must be a JSON array")
    chunks = []
    for i, raw_chunk in enumerate(top.get("chunks", ())):
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
        dataset_id=dataset_id,
        version=dataset_version,
        plaintext_size=check_int("plaintext_size", top["plaintext_size"], 0, 2**63 - 1),
        chunk_size=check_int("chunk_size", top["chunk_size"], 1, MAX_CHUNK_SIZE),
        k=check_int("erasure.k", erasure["k"], 1, 256),
        n=check_int("erasure.n", erasure["n"], 1, 256),
        chunks=tuple(chunks),
        merkle_root=check_hex(merkle["root"], "merkle.root", 32),
        wrapped_key=wrapped,
        format_version=version,
        tree=tree,
    )
    if manifest.to_bytes() != data:
        # One manifest, one hash: refuse any other spelling of the same content.
        raise ManifestError("manifest is not in canonical form (sorted keys, no whitespace)")
    return manifest


def _parse_pages(top: dict[str, Any], dataset_id: bytes, version: int) -> PageTree:
    pages = check_fields(top["pages"], "pages", {"leaves_per_page", "fanout", "depth", "entries"})
    if not isinstance(pages["entries"], list) or not pages["entries"]:
        raise ManifestError("pages.entries must be a non-empty JSON array")
    entries = []
    for i, raw in enumerate(pages["entries"]):
        e = check_fields(raw, f"pages.entries[{i}]", {"address", "root"})
        entries.append(
            PageRef(
                check_hex(e["address"], f"pages.entries[{i}].address", 32),
                check_hex(e["root"], f"pages.entries[{i}].root", 32),
            )
        )
    k_n = top["erasure"]
    plaintext = check_int("plaintext_size", top["plaintext_size"], 0, 2**63 - 1)
    size = check_int("chunk_size", top["chunk_size"], 1, MAX_CHUNK_SIZE)
    n = check_int("erasure.n", k_n["n"], 1, 256)
    return PageTree(
        dataset_id,
        version,
        chunk_count(plaintext, size) * n,
        check_int("pages.leaves_per_page", pages["leaves_per_page"], 1, 2**16),
        check_int("pages.fanout", pages["fanout"], 1, 2**16),
        check_int("pages.depth", pages["depth"], 1, 2**8),
        tuple(entries),
    )


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
