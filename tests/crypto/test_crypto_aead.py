"""AES-256-GCM chunk encryption: round trips and tamper detection."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from datagora.crypto.aead import ChunkCipher, DataKey, chunk_associated_data, chunk_nonce
from datagora.crypto.errors import CryptoError, DecryptionError
from datagora.errors import DatagoraError

DATASET = bytes(range(32))
OTHER_DATASET = bytes(31) + b"\x01"
KEY = DataKey(bytes(range(100, 132)))


def test_key_never_shows_in_repr_or_str() -> None:
    key = DataKey.generate()
    assert key.raw().hex() not in repr(key)
    assert key.raw().hex() not in str(key)
    assert "redacted" in repr(key)


def test_keys_are_fresh_and_compare_by_value() -> None:
    a, b = DataKey.generate(), DataKey.generate()
    assert a != b
    assert DataKey(a.raw()) == a


@pytest.mark.parametrize("raw", [b"", bytes(16), bytes(31), bytes(33)])
def test_key_must_be_32_bytes(raw: bytes) -> None:
    with pytest.raises(CryptoError, match="32 bytes"):
        DataKey(raw)


def test_nonce_and_ad_layout() -> None:
    assert chunk_nonce(1, False) == bytes(11) + b"\x01"
    assert chunk_nonce(2**64 - 1, True) == b"\x00\x00\x00\x01" + b"\xff" * 8
    ad = chunk_associated_data(DATASET, 7, 3, True)
    assert ad == b"datagora.chunk.v1" + DATASET + bytes(3) + b"\x07" + bytes(7) + b"\x03\x01"
    assert len(ad) == 62


def test_bad_positions_are_refused() -> None:
    with pytest.raises(CryptoError, match="dataset id"):
        ChunkCipher(KEY, b"short", 1)
    with pytest.raises(CryptoError, match="version"):
        ChunkCipher(KEY, DATASET, 2**32)
    with pytest.raises(CryptoError, match="chunk index"):
        ChunkCipher(KEY, DATASET, 1).encrypt(-1, False, b"x")


@settings(max_examples=60, deadline=None)
@given(
    plaintext=st.binary(max_size=2048),
    version=st.integers(0, 2**32 - 1),
    index=st.integers(0, 2**64 - 1),
    final=st.booleans(),
)
def test_round_trip(plaintext: bytes, version: int, index: int, final: bool) -> None:
    cipher = ChunkCipher(KEY, DATASET, version)
    ct = cipher.encrypt(index, final, plaintext)
    assert len(ct) == len(plaintext) + 16
    assert cipher.decrypt(index, final, ct) == plaintext


@settings(max_examples=80, deadline=None)
@given(plaintext=st.binary(max_size=512), data=st.data())
def test_any_flipped_ciphertext_bit_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    cipher = ChunkCipher(KEY, DATASET, 3)
    ct = bytearray(cipher.encrypt(5, False, plaintext))
    bit = data.draw(st.integers(0, len(ct) * 8 - 1))
    ct[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionError):
        cipher.decrypt(5, False, bytes(ct))


@settings(max_examples=80, deadline=None)
@given(plaintext=st.binary(max_size=256), data=st.data())
def test_any_flipped_bit_of_ad_or_nonce_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    # Each AD/nonce field is a different way of flipping a bit of what is authenticated:
    # dataset id, version, chunk index, final flag.
    version, index, final = 9, 4, False
    ct = ChunkCipher(KEY, DATASET, version).encrypt(index, final, plaintext)
    field = data.draw(st.sampled_from(["dataset", "version", "index", "final"]))
    if field == "dataset":
        bit = data.draw(st.integers(0, 255))
        flipped = bytearray(DATASET)
        flipped[bit // 8] ^= 1 << (bit % 8)
        cipher, index2, final2 = ChunkCipher(KEY, bytes(flipped), version), index, final
    elif field == "version":
        bit = data.draw(st.integers(0, 31))
        cipher, index2, final2 = ChunkCipher(KEY, DATASET, version ^ (1 << bit)), index, final
    elif field == "index":
        bit = data.draw(st.integers(0, 63))
        cipher, index2, final2 = ChunkCipher(KEY, DATASET, version), index ^ (1 << bit), final
    else:
        cipher, index2, final2 = ChunkCipher(KEY, DATASET, version), index, not final
    with pytest.raises(DecryptionError):
        cipher.decrypt(index2, final2, ct)


def test_wrong_key_dataset_and_short_input_are_detected() -> None:
    ct = ChunkCipher(KEY, DATASET, 1).encrypt(0, True, b"secret rows")
    with pytest.raises(DecryptionError):
        ChunkCipher(DataKey.generate(), DATASET, 1).decrypt(0, True, ct)
    with pytest.raises(DecryptionError):
        ChunkCipher(KEY, OTHER_DATASET, 1).decrypt(0, True, ct)
    with pytest.raises(DecryptionError, match="shorter"):
        ChunkCipher(KEY, DATASET, 1).decrypt(0, True, ct[:15])


def test_error_messages_carry_no_secret() -> None:
    plaintext = b"PLAINTEXT-MARKER-123"
    ct = bytearray(ChunkCipher(KEY, DATASET, 1).encrypt(0, True, plaintext))
    ct[0] ^= 1
    with pytest.raises(DatagoraError) as info:
        ChunkCipher(KEY, DATASET, 1).decrypt(0, True, bytes(ct))
    message = str(info.value)
    assert KEY.raw().hex() not in message
    assert "PLAINTEXT" not in message


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=256), data=st.data())
def test_any_flipped_bit_of_the_raw_nonce_or_ad_bytes_is_detected(
    plaintext: bytes, data: st.DataObject
) -> None:
    # Byte-level check of the documented layout: every one of the 12 nonce bytes and
    # 62 AD bytes is authenticated, including the zero padding of the nonce.
    nonce = chunk_nonce(3, True)
    ad = chunk_associated_data(DATASET, 2, 3, True)
    ct = ChunkCipher(KEY, DATASET, 2).encrypt(3, True, plaintext)
    aead = AESGCM(KEY.raw())
    assert aead.decrypt(nonce, ct, ad) == plaintext
    target = data.draw(st.sampled_from(["nonce", "ad"]))
    raw = bytearray(nonce if target == "nonce" else ad)
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidTag):
        if target == "nonce":
            aead.decrypt(bytes(raw), ct, ad)
        else:
            aead.decrypt(nonce, ct, bytes(raw))
