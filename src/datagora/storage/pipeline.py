"""The streaming storage pipeline: plaintext <-> encrypted, erasure-coded shares.

Encoding reads a binary file object one chunk at a time (plus one chunk of
look-ahead, to know which chunk is final), encrypts it, erasure-codes it and hashes
the shares, and yields one :class:`EncodedChunk` at a time — memory stays bounded
by a couple of chunks whatever the file size. Decoding takes verified shares chunk
by chunk and writes plaintext to a file object.

The per-chunk functions (:func:`encode_chunk`, :func:`decrypt_chunk`,
:func:`rebuild_shares`) are pure; the stream functions only add reading and writing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final

from datagora.crypto.aead import DATASET_ID_SIZE, MAX_VERSION, ChunkCipher, DataKey
from datagora.storage.erasure import check_parameters, decode_blocks, encode_blocks
from datagora.storage.errors import IntegrityError, ManifestError, StorageError
from datagora.storage.manifest import (
    MAX_CHUNK_SIZE,
    AnyWrappedKey,
    ChunkRecord,
    Manifest,
    VerifiedManifest,
)
from datagora.storage.pages import (
    DEFAULT_FANOUT,
    DEFAULT_LEAVES_PER_PAGE,
    TreeWriter,
    check_tree_parameters,
)
from datagora.storage.shares import Share, ShareHeader, VerifiedShare

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_K",
    "DEFAULT_N",
    "EncodedChunk",
    "EncodingParams",
    "ManifestBuilder",
    "decode_stream",
    "decrypt_chunk",
    "encode_chunk",
    "encode_stream",
    "new_dataset_id",
    "rebuild_shares",
]

DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
DEFAULT_K: Final = 4
DEFAULT_N: Final = 6


def new_dataset_id() -> bytes:
    """A fresh random 32-byte storage dataset id (chosen by the publisher, before
    the ledger assigns a token id, and kept across the dataset's versions)."""
    return os.urandom(DATASET_ID_SIZE)


@dataclass(frozen=True, slots=True)
class EncodingParams:
    """What identifies and shapes one encoded version."""

    dataset_id: bytes
    version: int
    chunk_size: int = DEFAULT_CHUNK_SIZE
    k: int = DEFAULT_K
    n: int = DEFAULT_N
    # 2: shares addressed by their block root (manifest format 3); 1 only to
    # reproduce datasets written before (manifest format 2).
    share_format: int = 2
    # Manifest pages (format 4) once a dataset has more share addresses than fit
    # one leaf page; smaller ones keep a single-document manifest (format 3).
    leaves_per_page: int = DEFAULT_LEAVES_PER_PAGE
    fanout: int = DEFAULT_FANOUT

    def __post_init__(self) -> None:
        if self.share_format not in (1, 2):
            raise StorageError("share format must be 1 or 2")
        if not isinstance(self.dataset_id, bytes) or len(self.dataset_id) != DATASET_ID_SIZE:
            raise StorageError(f"dataset id must be {DATASET_ID_SIZE} bytes")
        if type(self.version) is not int or not 0 <= self.version <= MAX_VERSION:
            raise StorageError(f"version must be an integer in 0..{MAX_VERSION}")
        if type(self.chunk_size) is not int or not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise StorageError(f"chunk size must be an integer in 1..{MAX_CHUNK_SIZE}")
        check_parameters(self.k, self.n)
        try:
            check_tree_parameters(self.leaves_per_page, self.fanout)
        except ManifestError as exc:
            raise StorageError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    """One encoded chunk: its ``n`` shares in block order, ready to upload."""

    index: int
    final: bool
    plaintext_size: int
    ciphertext_size: int
    shares: tuple[Share, ...]

    @property
    def record(self) -> ChunkRecord:
        """The small part the manifest keeps."""
        return ChunkRecord(self.ciphertext_size, tuple(s.sha256 for s in self.shares))


def encode_chunk(
    cipher: ChunkCipher, params: EncodingParams, index: int, final: bool, plaintext: bytes
) -> EncodedChunk:
    """Encrypt, erasure-code and hash one chunk."""
    ciphertext = cipher.encrypt(index, final, plaintext)
    blocks = encode_blocks(ciphertext, params.k, params.n)
    shares = tuple(
        Share.build(
            ShareHeader(
                params.dataset_id,
                params.version,
                index,
                number,
                params.k,
                params.n,
                len(ciphertext),
                params.share_format,
            ),
            block,
        )
        for number, block in enumerate(blocks)
    )
    return EncodedChunk(index, final, len(plaintext), len(ciphertext), shares)


def _read_full(src: BinaryIO, size: int) -> bytes:
    # Raw files, pipes and sockets may return short reads before EOF.
    first = src.read(size)
    if first is None:
        raise StorageError("the input is a non-blocking stream with no data ready")
    if len(first) == size or not first:
        return bytes(first)
    parts = [first]
    got = len(first)
    while got < size:
        more = src.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def encode_stream(src: BinaryIO, params: EncodingParams, key: DataKey) -> Iterator[EncodedChunk]:
    """Encode everything readable from ``src`` as one dataset version, chunk by chunk.

    Always yields at least one chunk (an empty input gives one empty final chunk).
    ``key`` must be fresh for this (dataset, version): never encode two different
    inputs under the same key and version.
    """
    cipher = ChunkCipher(key, params.dataset_id, params.version)
    current = _read_full(src, params.chunk_size)
    index = 0
    while True:
        following = _read_full(src, params.chunk_size) if len(current) == params.chunk_size else b""
        final = not following
        yield encode_chunk(cipher, params, index, final, current)
        if final:
            return
        current = following
        index += 1


class ManifestBuilder:
    """Collects the per-chunk records while :func:`encode_stream` runs, then builds
    the :class:`Manifest` — so the encoder never keeps shares around.

    Once the share addresses outgrow one leaf page (``params.leaves_per_page``) the
    builder switches to a paged manifest (format 4): addresses go to a
    :class:`~datagora.storage.pages.TreeWriter` and each finished page is queued in
    :attr:`pages` for the uploader to store (and drain) before the manifest;
    nothing per chunk is kept any more.
    """

    def __init__(self, params: EncodingParams) -> None:
        self.params = params
        self._records: list[ChunkRecord] = []
        self._count = 0
        self._plaintext_size = 0
        self._finished = False
        self._writer: TreeWriter | None = None
        self.pages: list[tuple[bytes, bytes]] = []
        """Pages written and not yet taken by the uploader: ``(address, bytes)``."""

    @property
    def paged(self) -> bool:
        """True once the manifest will be paged (format 4)."""
        return self._writer is not None

    def add(self, chunk: EncodedChunk) -> None:
        """Record one chunk; chunks must come in order, ending with the final one."""
        if self._finished:
            raise StorageError("a chunk was added after the final chunk")
        if chunk.index != self._count:
            raise StorageError(f"expected chunk {self._count}, got chunk {chunk.index}")
        self._count += 1
        self._plaintext_size += chunk.plaintext_size
        self._finished = chunk.final
        p = self.params
        if self._writer is None:
            self._records.append(chunk.record)
            if p.share_format == 2 and self._count * p.n > p.leaves_per_page:
                self._writer = TreeWriter(
                    p.dataset_id, p.version, p.leaves_per_page, p.fanout,
                    lambda address, raw: self.pages.append((address, raw)),
                )  # fmt: skip
                for record in self._records:
                    for address in record.shares:
                        self._writer.add(address)
                self._records = []
        else:
            for share in chunk.shares:
                self._writer.add(share.sha256)

    def build(self, wrapped_key: AnyWrappedKey) -> Manifest:
        """The manifest of everything added (the final chunk must have been added).
        For a paged manifest the last pages are queued in :attr:`pages`."""
        if not self._finished:
            raise StorageError("the manifest needs every chunk up to the final one")
        p = self.params
        if self._writer is not None:
            depth, entries = self._writer.finish()
            return Manifest.create_paged(
                dataset_id=p.dataset_id,
                version=p.version,
                plaintext_size=self._plaintext_size,
                chunk_size=p.chunk_size,
                k=p.k,
                n=p.n,
                leaves_per_page=p.leaves_per_page,
                fanout=p.fanout,
                depth=depth,
                entries=entries,
                wrapped_key=wrapped_key,
            )
        return Manifest.create(
            dataset_id=p.dataset_id,
            version=p.version,
            plaintext_size=self._plaintext_size,
            chunk_size=p.chunk_size,
            k=p.k,
            n=p.n,
            chunks=self._records,
            wrapped_key=wrapped_key,
            format_version=3 if p.share_format == 2 else 2,
        )


def _chunk_ciphertext(
    verified: VerifiedManifest, chunk_index: int, shares: Sequence[VerifiedShare]
) -> bytes:
    m = verified.manifest
    if not 0 <= chunk_index < m.chunk_count:
        raise IntegrityError(f"chunk {chunk_index} is not in this manifest")
    record = verified.chunk(chunk_index)
    blocks = []
    for share in shares:
        if not isinstance(share, VerifiedShare):
            raise TypeError("decoding takes only VerifiedShare values")
        number = share.header.share_index
        # A share verified against another manifest or chunk must not slip in.
        if record.shares[number] != share.sha256 or share.header.chunk_index != chunk_index:
            raise IntegrityError(f"share {share.name} does not belong to chunk {chunk_index}")
        blocks.append((number, share.block))
    return decode_blocks(blocks, m.k, m.n, record.ciphertext_size)


def decrypt_chunk(
    verified: VerifiedManifest,
    key: DataKey,
    chunk_index: int,
    shares: Sequence[VerifiedShare],
    cipher: ChunkCipher | None = None,
) -> bytes:
    """Rebuild and decrypt one chunk from at least ``k`` verified shares.

    Raises :class:`IntegrityError` for shares of another chunk,
    :class:`~datagora.storage.errors.ErasureError` for too few, and
    :class:`~datagora.crypto.errors.DecryptionError` if authentication fails.
    """
    m = verified.manifest
    ciphertext = _chunk_ciphertext(verified, chunk_index, shares)
    cipher = cipher or ChunkCipher(key, m.dataset_id, m.version)
    final = chunk_index == m.chunk_count - 1
    return cipher.decrypt(chunk_index, final, ciphertext)


def decode_stream(
    verified: VerifiedManifest,
    key: DataKey,
    shares_by_chunk: Iterable[Sequence[VerifiedShare]],
    dst: BinaryIO,
) -> int:
    """Decode a whole version: ``shares_by_chunk`` gives, in chunk order, at least
    ``k`` verified shares per chunk. Writes the plaintext to ``dst`` and returns the
    number of bytes written.

    Plaintext is written chunk by chunk as each authenticates; if a later chunk
    fails, ``dst`` holds a prefix, so write to a temporary file and rename it into
    place only on success.
    """
    m = verified.manifest
    cipher = ChunkCipher(key, m.dataset_id, m.version)
    written = 0
    count = 0
    for index, shares in enumerate(shares_by_chunk):
        if index >= m.chunk_count:
            raise IntegrityError(f"more chunks given than the manifest's {m.chunk_count}")
        plaintext = decrypt_chunk(verified, key, index, shares, cipher)
        dst.write(plaintext)
        written += len(plaintext)
        count = index + 1
    if count != m.chunk_count:
        raise IntegrityError(f"got {count} chunks, the manifest has {m.chunk_count}")
    if written != m.plaintext_size:
        raise IntegrityError(f"decoded {written} bytes, the manifest says {m.plaintext_size}")
    return written


def rebuild_shares(
    verified: VerifiedManifest,
    chunk_index: int,
    shares: Sequence[VerifiedShare],
    wanted: Iterable[int],
) -> list[Share]:
    """Recreate shares ``wanted`` of a chunk from any ``k`` verified shares, without
    the data key (repair works on ciphertext). Each rebuilt share is checked against
    the manifest's hash before it is returned."""
    m = verified.manifest
    ciphertext = _chunk_ciphertext(verified, chunk_index, shares)
    blocks = encode_blocks(ciphertext, m.k, m.n)
    rebuilt = []
    for number in wanted:
        if not 0 <= number < m.n:
            raise IntegrityError(f"share number {number} is outside 0..{m.n - 1}")
        share = Share.build(verified.expected_header(chunk_index, number), blocks[number])
        if share.sha256 != verified.chunk(chunk_index).shares[number]:
            raise IntegrityError(f"rebuilt share {number} of chunk {chunk_index} does not match")
        rebuilt.append(share)
    return rebuilt
