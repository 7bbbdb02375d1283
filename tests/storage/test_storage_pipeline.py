"""End-to-end pure pipeline: encode -> verify -> decode, and every way to cheat it."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_helpers import OWNER, Encoded, encode_bytes

from datagora.crypto.aead import ChunkCipher, DataKey
from datagora.crypto.errors import DecryptionError
from datagora.crypto.sealed import unwrap_data_key
from datagora.storage.errors import ErasureError, IntegrityError, StorageError
from datagora.storage.manifest import ChunkRecord, Manifest, verify_manifest
from datagora.storage.merkle import MerkleProof, MerkleTree
from datagora.storage.pipeline import (
    EncodingParams,
    ManifestBuilder,
    decode_stream,
    decrypt_chunk,
    encode_stream,
    rebuild_shares,
)
from datagora.storage.shares import SHARE_HEADER_SIZE, ShareHeader, VerifiedShare, verify_share


def all_chunks(enc: Encoded, numbers: Sequence[int] | None = None) -> Iterator[list[VerifiedShare]]:
    m = enc.manifest
    for c in range(len(m.chunks)):
        picks = numbers if numbers is not None else range(m.k)
        yield [enc.verified.verify_share(c, j, enc.share(c, j)) for j in picks]


def decode(enc: Encoded, numbers: Sequence[int] | None = None) -> bytes:
    out = io.BytesIO()
    decode_stream(enc.verified, enc.key, all_chunks(enc, numbers), out)
    return out.getvalue()


@st.composite
def shapes(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(1, 10))
    return draw(st.integers(1, 300)), draw(st.integers(1, n)), n


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=2000), shape=shapes(), choice=st.data())
def test_any_bytes_any_shape_round_trip(
    data: bytes, shape: tuple[int, int, int], choice: st.DataObject
) -> None:
    chunk_size, k, n = shape
    enc = encode_bytes(data, chunk_size=chunk_size, k=k, n=n)
    assert enc.manifest.plaintext_size == len(data)
    assert len(enc.manifest.chunks) == max(1, -(-len(data) // chunk_size))
    numbers = choice.draw(st.permutations(range(n)))[:k]
    key = unwrap_data_key(enc.manifest.wrapped_key, OWNER, enc.params.dataset_id, 1)
    out = io.BytesIO()
    decode_stream(enc.verified, key, all_chunks(enc, numbers), out)
    assert out.getvalue() == data


@settings(max_examples=80, deadline=None)
@given(data=st.binary(min_size=1, max_size=400), shape=shapes(), choice=st.data())
def test_any_flipped_bit_in_any_share_is_detected(
    data: bytes, shape: tuple[int, int, int], choice: st.DataObject
) -> None:
    chunk_size, k, n = shape
    enc = encode_bytes(data, chunk_size=chunk_size, k=k, n=n)
    m = enc.manifest
    c = choice.draw(st.integers(0, len(m.chunks) - 1))
    j = choice.draw(st.integers(0, n - 1))
    share = bytearray(enc.share(c, j))
    bit = choice.draw(st.integers(0, len(share) * 8 - 1))
    share[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        enc.verified.verify_share(c, j, bytes(share))
    h = m.chunks[c].shares[j]
    with pytest.raises(IntegrityError):
        verify_share(bytes(share), h, enc.verified.proof(h), m.merkle_root, len(m.chunks) * n)


def test_verify_share_with_proof_only(sample: Encoded) -> None:
    m = sample.manifest
    size = len(m.chunks) * m.n
    h = m.chunks[2].shares[4]
    proof = sample.verified.proof(h)
    share = verify_share(sample.store[h], h, proof, m.merkle_root, size)
    assert (share.header.chunk_index, share.header.share_index) == (2, 4)
    with pytest.raises(IntegrityError, match="not proven"):
        verify_share(sample.store[h], h, proof, bytes(32), size)
    with pytest.raises(IntegrityError, match="tree of"):
        verify_share(sample.store[h], h, proof, m.merkle_root, size + 1)
    with pytest.raises(IntegrityError, match="not proven"):
        # A valid share presented at its neighbour's leaf.
        verify_share(sample.store[h], h, MerkleProof(13, size, proof.path), m.merkle_root, size)
    # A dishonest encoder that put a share at a leaf its header does not name.
    lone = MerkleTree([h])
    with pytest.raises(IntegrityError, match="another leaf"):
        verify_share(sample.store[h], h, lone.proof(0), lone.root, 1)


def test_share_at_the_wrong_position_is_refused(sample: Encoded) -> None:
    with pytest.raises(IntegrityError):
        sample.verified.verify_share(0, 1, sample.share(0, 0))
    with pytest.raises(IntegrityError):
        sample.verified.verify_share(1, 0, sample.share(0, 0))
    with pytest.raises(IntegrityError, match="no share"):
        sample.verified.verify_share(99, 0, sample.share(0, 0))


def test_shares_of_another_chunk_are_refused_by_decode(sample: Encoded) -> None:
    wrong = [sample.verified.verify_share(1, j, sample.share(1, j)) for j in range(3)]
    with pytest.raises(IntegrityError, match="does not belong to chunk 0"):
        decrypt_chunk(sample.verified, sample.key, 0, wrong)


def test_decode_needs_k_shares_and_all_chunks(sample: Encoded) -> None:
    v = sample.verified
    with pytest.raises(ErasureError, match="need 3 distinct"):
        decrypt_chunk(v, sample.key, 0, [v.verify_share(0, j, sample.share(0, j)) for j in (0, 1)])
    chunks = list(all_chunks(sample))
    with pytest.raises(IntegrityError, match="got 8 chunks"):
        decode_stream(v, sample.key, chunks[:-1], io.BytesIO())
    with pytest.raises(IntegrityError, match="more chunks"):
        decode_stream(v, sample.key, [*chunks, chunks[0]], io.BytesIO())
    with pytest.raises(TypeError, match="only VerifiedShare"):
        decrypt_chunk(v, sample.key, 0, [sample.share(0, j) for j in range(3)])  # type: ignore[misc]


def test_wrong_key_is_detected(sample: Encoded) -> None:
    with pytest.raises(DecryptionError):
        decrypt_chunk(sample.verified, DataKey.generate(), 0, next(all_chunks(sample)))


def forged(enc: Encoded, chunks: Sequence[ChunkRecord], plaintext_size: int) -> Encoded:
    """A manifest an attacker wrote (and got recorded) with rearranged share lists."""
    m = enc.manifest
    bad = Manifest.create(
        dataset_id=m.dataset_id, version=m.version, plaintext_size=plaintext_size,
        chunk_size=m.chunk_size, k=m.k, n=m.n, chunks=chunks,
        wrapped_key=m.wrapped_key,
    )  # fmt: skip
    verified = verify_manifest(bad.to_bytes(), bad.digest())
    return Encoded(enc.params, enc.key, bad, verified, enc.store)


def test_swapped_chunks_are_rejected() -> None:
    enc = encode_bytes(bytes(range(256)) * 2, chunk_size=128, k=2, n=3)
    chunks = list(enc.manifest.chunks)
    chunks[0], chunks[1] = chunks[1], chunks[0]
    bad = forged(enc, chunks, enc.manifest.plaintext_size)
    # The share headers say where each share belongs ...
    with pytest.raises(IntegrityError, match="header for another position"):
        bad.verified.verify_share(0, 0, bad.share(0, 0))
    # ... and even with headers ignored, the AEAD binds the chunk index.
    cipher = ChunkCipher(enc.key, enc.params.dataset_id, 1)
    moved = enc.verified
    ciphertext_of_1 = b"".join(
        s.block for s in [moved.verify_share(1, j, enc.share(1, j)) for j in range(2)]
    )[: enc.manifest.chunks[1].ciphertext_size]
    with pytest.raises(DecryptionError):
        cipher.decrypt(0, False, ciphertext_of_1)


def test_truncated_and_extended_streams_are_rejected() -> None:
    enc = encode_bytes(b"z" * 300, chunk_size=100, k=2, n=3)
    # Drop the final chunk: the new last chunk was not sealed as final.
    cut = forged(enc, enc.manifest.chunks[:2], 200)
    with pytest.raises(DecryptionError, match="chunk 1"):
        decode(cut)
    # Append a chunk after the final one (taken from a longer stream under the same
    # key, the worst case): the old final chunk was sealed as final, so it fails.
    longer = encode_bytes(b"z" * 400, chunk_size=100, k=2, n=3, key=enc.key)
    extended = forged(enc, (*enc.manifest.chunks, longer.manifest.chunks[3]), 400)
    extended.store.update(longer.store)
    with pytest.raises(DecryptionError, match="chunk 2"):
        decode(extended)


def test_chunks_from_another_version_are_rejected() -> None:
    # Even if a key were reused across versions (it must not be), the version in the
    # associated data stops a chunk of version 1 standing in for version 2.
    key = DataKey.generate()
    v1 = encode_bytes(b"a" * 200, chunk_size=100, k=2, n=3, version=1, key=key)
    v2 = encode_bytes(b"a" * 200, chunk_size=100, k=2, n=3, version=2, key=key)
    with pytest.raises(IntegrityError):
        v2.verified.verify_share(0, 0, v1.share(0, 0))
    ciphertext = ChunkCipher(key, v1.params.dataset_id, 1).encrypt(0, False, b"a" * 100)
    with pytest.raises(DecryptionError):
        ChunkCipher(key, v1.params.dataset_id, 2).decrypt(0, False, ciphertext)


def test_repair_rebuilds_lost_shares_without_the_key(sample: Encoded) -> None:
    v = sample.verified
    for c in range(len(sample.manifest.chunks)):
        survivors = [v.verify_share(c, j, sample.share(c, j)) for j in (4, 2, 3)]
        rebuilt = rebuild_shares(v, c, survivors, [0, 1])
        assert [s.data for s in rebuilt] == [sample.share(c, 0), sample.share(c, 1)]
    survivors = [v.verify_share(0, j, sample.share(0, j)) for j in (0, 1, 2)]
    with pytest.raises(IntegrityError, match="outside"):
        rebuild_shares(v, 0, survivors, [5])


def test_share_header_layout(sample: Encoded) -> None:
    raw = sample.share(3, 2)
    header = ShareHeader.unpack(raw)
    assert header == ShareHeader(sample.params.dataset_id, 1, 3, 2, 3, 5, 116)
    assert raw[:4] == b"DGS2" and SHARE_HEADER_SIZE == 58
    assert len(raw) == SHARE_HEADER_SIZE + -(-116 // 3)
    with pytest.raises(IntegrityError, match="magic"):
        ShareHeader.unpack(b"XXXX" + raw[4:])
    with pytest.raises(IntegrityError, match="shorter"):
        ShareHeader.unpack(raw[:10])


class Trickle(io.RawIOBase):
    """A raw stream returning at most 7 bytes per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(7, len(buffer), len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_short_reads_do_not_change_chunking() -> None:
    data = bytes(range(256)) * 3
    params = EncodingParams(bytes(32), 0, chunk_size=100, k=2, n=4)
    key = DataKey.generate()
    trickled = [c.plaintext_size for c in encode_stream(Trickle(data), params, key)]  # type: ignore[arg-type]
    assert trickled == [100] * 7 + [68]


def test_empty_input_is_one_empty_final_chunk() -> None:
    enc = encode_bytes(b"")
    assert len(enc.manifest.chunks) == 1
    assert enc.manifest.chunks[0].ciphertext_size == 16
    assert decode(enc) == b""


def test_exact_multiple_of_chunk_size_has_no_empty_tail() -> None:
    enc = encode_bytes(b"q" * 300, chunk_size=100)
    assert [c.ciphertext_size for c in enc.manifest.chunks] == [116] * 3
    assert decode(enc) == b"q" * 300


def test_builder_guards() -> None:
    params = EncodingParams(bytes(32), 0, chunk_size=10, k=1, n=2)
    chunks = list(encode_stream(io.BytesIO(b"x" * 25), params, DataKey.generate()))
    builder = ManifestBuilder(params)
    with pytest.raises(StorageError, match="expected chunk 0"):
        builder.add(chunks[1])
    builder.add(chunks[0])
    with pytest.raises(StorageError, match="every chunk"):
        builder.build(encode_bytes(b"").manifest.wrapped_key)
    builder.add(chunks[1])
    builder.add(chunks[2])
    with pytest.raises(StorageError, match="after the final"):
        builder.add(chunks[2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset_id": b"x"}, "dataset id"),
        ({"version": -1}, "version"),
        ({"chunk_size": 0}, "chunk size"),
        ({"k": 5, "n": 4}, "1 <= k <= n"),
    ],
)
def test_bad_params(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"dataset_id": bytes(32), "version": 0, **kwargs}
    with pytest.raises(StorageError, match=message):
        EncodingParams(**args)  # type: ignore[arg-type]
